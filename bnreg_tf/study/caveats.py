"""The report's Caveats, from the data: runs at chance, not converged, single-seed, and where
seed ranges overlap the baseline's (nothing here ranks variants)."""
import numpy as np

from bnreg_tf.study.tables import _groups, _name, summary_rows


def _rising(curve):
    """Holdout accuracy still rising: the last epoch is a new best above every earlier one."""
    values = [v for v in curve if v is not None]
    return len(values) >= 2 and values[-1] > max(values[:-1])


def caveats(records, num_classes, baseline=None):
    """The `## Caveats` lines, from the data: single seeds, accuracy near chance, runs whose
    holdout accuracy was still rising at the end, and for each setting whether its seed range
    of test accuracy overlaps the baseline's (Fixup; BatchNorm where the study has no Fixup)."""
    rows = [r for r in summary_rows(records) if r["test_accuracy"]]
    lines = []
    single = [r for r in rows if len(r["test_accuracy"]) == 1]
    if single and len(single) == len(rows):
        lines.append("Every result is from a single seed: the spread over seeds is unknown, so "
                     "no difference between variants is shown by this data.")
    elif single:
        lines.append("Single-seed results (no spread known): " +
                     ", ".join(_name(r) for r in single) + ".")
    chance = 1.0 / num_classes
    near = [r for r in rows if float(np.median(r["test_accuracy"])) < 2 * chance]
    for row in near:
        lines.append(f"{_name(row)}: median test accuracy {np.median(row['test_accuracy']):.4f} "
                     f"is near chance (1/{num_classes} = {chance:.4f}): it did not learn, and its "
                     "numbers say nothing about the regularizer.")
    for (variant, coefficient, rate), group in _groups(
            [r for r in records if r["status"] == "ok" and r.get("holdout", True)
             and r.get("curves")]).items():
        rising = [r for r in group if _rising(r["curves"].get("val_accuracy") or [])]
        if rising:
            phase = " (tuning)" if group[0].get("phase") == "tune" else ""
            several = len({r.get("learning_rate") for r in records}) > 1
            lines.append(f"{_name(dict(variant=variant, coefficient=coefficient))}{phase}"
                         f"{f' lr {rate:g}' if several else ''}: holdout accuracy still "
                         f"rising at the last epoch in {len(rising)} of {len(group)} runs: not "
                         "converged; more epochs may change the result.")
    variants = {r["variant"] for r in rows}
    baseline = baseline or ("fixup" if "fixup" in variants else "batchnorm")
    base = [r for r in rows if r["variant"] == baseline]
    if base and len(rows) > 1:
        low, high = min(base[0]["test_accuracy"]), max(base[0]["test_accuracy"])
        same, apart = [], []
        for row in rows:
            if row is base[0]:
                continue
            values = row["test_accuracy"]
            if len(values) < 2 or len(base[0]["test_accuracy"]) < 2 or \
                    (min(values) <= high and max(values) >= low):
                same.append(_name(row))
            else:
                side = "above" if min(values) > high else "below"
                apart.append(f"{_name(row)} ({side}: [{min(values):.4f}, {max(values):.4f}])")
        if same:
            lines.append(f"Against {baseline} (test accuracy [{low:.4f}, {high:.4f}] over its "
                         "seeds), the seed ranges overlap (or a single seed leaves the range "
                         "unknown) for: " + ", ".join(same) + ". The difference is not shown by "
                         "this data.")
        if apart:
            lines.append(f"Seed ranges apart from {baseline}'s: " + ", ".join(apart) + ". Disjoint "
                         "ranges over a few seeds are not a significance test.")
    return lines
