"""The study's report: the Selection (paper protocol), the paper's Tables 1-4, every metric,
Caveats from the data, results.csv/json, Figures 2 and 3 (PNG) and Figure 3's data (CSV), and the
signal propagation plots at initialisation (Brock et al. 2021a, Figure 1) with their data (CSV).

Per variant (and coefficient, learning rate): the median over seeds with the [min, max] spread, as
the paper reports medians of seeds (Table 1); top-1 on ImageNet (Tables 2, 4); the test-time
Dropout drop (Table 3); CIFAR-10-C where the data is CIFAR-10 (Table 1); the probe norms
E||Emb||^2 and E||NN||^2 at the end of training. Nothing here ranks variants: the Caveats say
where seed ranges overlap, runs sit at chance, results are single-seed or not converged.
"""
import csv
import io
import json
import os
import warnings

import numpy as np

from bnreg_tf.files import write_atomically
from bnreg_tf.run.models import model_entry

METRICS = (  # (record key, column title, format)
    ("test_accuracy", "test acc", "{:.4f}"),
    ("val_accuracy", "val acc", "{:.4f}"),
    ("cifar10_c", "CIFAR-10-C", "{:.4f}"),
    ("dropout_drop", "drop, test-time dropout p=0.5", "{:+.4f}"),
    ("embedding_norm_sq", "E‖Emb‖² end", "{:.3g}"),
    ("output_norm_sq", "E‖NN‖² end", "{:.3g}"),
)


def reported(records):
    """The runs the results tables report: all but the paper protocol's tuning runs."""
    return [r for r in records if r.get("phase", "holdout") != "tune"]


def _groups(records):
    groups = {}
    for record in records:
        key = (record["variant"], record["coefficient"], record.get("learning_rate"))
        groups.setdefault(key, []).append(record)
    return groups


def _cell(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(float(np.median(values)))} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def summary_rows(records):
    """One row per (variant, coefficient, learning rate) of the reported runs:
    `{"variant", "coefficient", "learning_rate", "seeds", "failed", "pending", key: values}`."""
    rows = []
    for (variant, coefficient, rate), group in _groups(reported(records)).items():
        ok = [r for r in group if r["status"] == "ok"]
        row = {"variant": variant, "coefficient": coefficient, "learning_rate": rate,
               "seeds": len(ok), "seed_ids": [r["seed"] for r in ok],
               "failed": [f"{r['run']}: {r['error']}" for r in group if r["status"] == "failed"],
               "pending": [r["run"] for r in group if r["status"] in ("pending", "busy")]}
        for key, _, _ in METRICS:
            row[key] = [r[key] for r in ok if r.get(key) is not None]
        rows.append(row)
    return rows


def _setting_columns(rows):
    """(header cells, row -> cells) naming each row's variant, coefficient and learning rate."""
    rates = len({row["learning_rate"] for row in rows}) > 1

    def cells(row):
        coefficient = f"{row['coefficient']:g}" if row["coefficient"] else "–"
        seeds = f"{row['seeds']}" + (f" ({len(row['failed'])} failed)" if row["failed"] else "") \
            + (f" ({len(row['pending'])} pending)" if row["pending"] else "")
        return [row["variant"], coefficient] + ([f"{row['learning_rate']:g}"] if rates else []) \
            + [seeds]

    return ["variant", "coef"] + (["lr"] if rates else []) + ["seeds"], cells


def _markdown(header, aligned_left, lines):
    return "\n".join(["| " + " | ".join(header) + " |",
                      "|" + "---|" * aligned_left + "---:|" * (len(header) - aligned_left)]
                     + ["| " + " | ".join(cells) + " |" for cells in lines])


def main_table(records):
    """The markdown table of every reported setting and metric (printed and in report.md)."""
    rows = summary_rows(records)
    keys = [m for m in METRICS if any(row[m[0]] for row in rows)]
    header, setting = _setting_columns(rows)
    return _markdown(header + [title for _, title, _ in keys], 1,
                     [setting(row) + [_cell(row[key], fmt) for key, _, fmt in keys]
                      for row in rows])


def write_tables(records, output_dir):
    """results.csv (one row per run) and results.json (every record, curves included)."""
    fields = ["run", "phase", "variant", "coefficient", "learning_rate", "seed", "status",
              "holdout", "train_examples", "test_accuracy", "val_accuracy", "best_epoch",
              "cifar10_c", "dropout_accuracy", "dropout_drop", "embedding_norm_sq",
              "output_norm_sq", "steps", "seconds", "error"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: record.get(k, "") for k in fields})
    write_atomically(os.path.join(output_dir, "results.csv"), text.getvalue())
    write_atomically(os.path.join(output_dir, "results.json"), json.dumps(
        [{k: v for k, v in r.items() if k not in ("traceback", "skipped")} for r in records],
        indent=2))


def _fmt(value, fmt="{:.4f}"):
    return "–" if value is None else fmt.format(value)


def selection_section(chosen):
    """The paper protocol's phase 1: per variant, each setting's holdout accuracy and the choice
    (`study.selection`'s result)."""
    lines = ["## Selection (phase 1: tuned on the holdout)", "",
             f"{chosen['finished']} of {chosen['total']} tuning runs finished. Per variant the "
             "setting with the best median holdout accuracy over the tuning seeds is chosen; ties "
             "go to the smaller coefficient, then to the smaller learning rate."
             + ("" if chosen["complete"] else " Phase 2 is planned once every tuning run has "
                "finished."), ""]
    for variant, entry in chosen["variants"].items():
        choice = entry["choice"]
        rows = []
        for setting in entry["settings"]:
            key = (setting["coefficient"], setting["learning_rate"])
            status = ", ".join(f"{n} {what}" for n, what in ((setting["failed"], "failed"),
                                                             (setting["pending"], "pending")) if n)
            rows.append([f"{setting['coefficient']:g}" if setting["coefficient"] else "–",
                         f"{setting['learning_rate']:g}", _cell(setting["accuracies"], "{:.4f}"),
                         status or "–", "**chosen**" if key == choice else ""])
        if choice is None:
            what = "none yet (phase 1 incomplete)" if not chosen["complete"] else \
                "none: every setting failed, so phase 2 has no run of it"
        else:
            what = (f"coefficient {choice[0]:g}, " if choice[0] else "") + f"lr {choice[1]:g}"
        lines += [f"**{variant}**: chosen {what}", "",
                  _markdown(["coef", "lr", "holdout acc", "not finished", ""], 0, rows), ""]
    return "\n".join(lines)


# Which of the paper's tables a study fills: Tables 1 (CIFAR-10/SVHN and the offline digits:
# small-image WRNs), 2 (ImageNet ResNet-50) and 4 (ImageNet EfficientNet) by the study's data and
# model; Table 3 (test-time Dropout) for every study, as every run is scored with it.
TABLE_4_ROWS = {"batchnorm": "no Dropout", "dropout": "Dropout", "el2": "EL2", "fl2": "FL2"}


def _protocol_line(context):
    seeds = ", ".join(map(str, context["seeds"]))
    if context["protocol"] == "paper":
        return (f"Protocol: paper (setting chosen on the holdout, see Selection; retrained on the "
                f"{'training split minus the holdout, with early stopping on it' if context['early_stopping'] else 'full training split'}"
                f"), scored on the test split; median [min, max] over seeds {seeds}.")
    return (f"Protocol: holdout (trained on the training split minus the holdout, every setting "
            f"of the grid), scored on the test split; median [min, max] over seeds {seeds}.")


def paper_tables(records, context):
    """Tables 1-4 in the paper's layout, those the study's data and model fill."""
    rows = summary_rows(records)
    if not rows:
        return ""
    header, setting = _setting_columns(rows)
    protocol = _protocol_line(context)
    out = []
    if context["dataset"] == "imagenet2012" and context["family"] == "efficientnet":
        body = [[TABLE_4_ROWS.get(row["variant"], row["variant"])] + setting(row)[1:] +
                [_cell(row["test_accuracy"], "{:.4f}")] for row in rows]
        out += ["### Table 4: EfficientNet-B8 on ImageNet, top-1 test accuracy", "", protocol, "",
                _markdown(header + ["top-1 acc"], 1, body), ""]
    elif context["dataset"] == "imagenet2012":
        body = [setting(row) + [_cell(row["test_accuracy"], "{:.4f}")] for row in rows]
        out += ["### Table 2: ResNet-50 on ImageNet (incl. single BN), top-1 test accuracy", "",
                protocol, "", _markdown(header + ["top-1 acc"], 1, body), ""]
    else:
        cifar = context["dataset"] == "cifar10"
        body = [setting(row) + [_cell(row["test_accuracy"], "{:.4f}")] +
                ([_cell(row["cifar10_c"], "{:.4f}")] if cifar else []) for row in rows]
        title = {"cifar10": "CIFAR-10", "svhn_cropped": "SVHN"}.get(
            context["dataset"], f"{context['dataset']} (the paper's CIFAR-10 layout)")
        out += [f"### Table 1: {title}, test accuracy" + (" and CIFAR-10-C" if cifar else ""), "",
                protocol, "", _markdown(header + ["test acc"] + (["CIFAR-10-C"] if cifar else []),
                                        1, body), ""]
    ok = [r for r in rows if r["dropout_drop"]]
    if ok:
        body = [setting(row) + [_cell(row["test_accuracy"], "{:.4f}"),
                                _cell(row["dropout_drop"], "{:+.4f}")] for row in ok]
        out += ["### Table 3: accuracy drop under 50% Dropout on the embedding at test time", "",
                protocol + " Drop = clean test accuracy minus the accuracy with Dropout p=0.5 "
                "(mean of 5 mask draws).", "",
                _markdown(header + ["test acc", "drop"], 1, body), ""]
    return "\n".join(out)


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


def _name(row):
    coefficient = row.get("coefficient")
    return f"{row['variant']}" + (f" ({coefficient:g})" if coefficient else "")


def _median_band(group, key):
    """Epochs and the median, min and max over the seeds of a curve (None where no value)."""
    ok = [r for r in group if r["status"] == "ok" and r.get("curves")]
    if not ok:
        return None
    curves = [r["curves"][key] for r in ok]
    length = min(len(c) for c in curves)
    values = np.array([[np.nan if v is None else v for v in c[:length]] for c in curves], float)
    if not np.isfinite(values).any():
        return None
    with warnings.catch_warnings():  # epoch 0 has no validation accuracy: an all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        return (np.array(ok[0]["curves"]["epoch"][:length]), np.nanmedian(values, axis=0),
                np.nanmin(values, axis=0), np.nanmax(values, axis=0))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_curves(records, path):
    """Figure 2: evaluation accuracy, E||Emb||^2 and E||NN||^2 against epoch per setting: the
    median over seeds with a min-max band. On the log axes an exact zero (Fixup's logits at
    init) is drawn as a downward triangle at the axis floor."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    runs = reported(records)
    panels = (("val_accuracy", "holdout accuracy per epoch", False),
              ("embedding_norm_sq", "E‖Emb(x)‖² on the probe batch", True),
              ("output_norm_sq", "E‖NN(x)‖² (logits) on the probe batch", True))
    rates = len({key[2] for key in _groups(runs)}) > 1
    groups = [(key, _label(key, rates), group) for key, group in _groups(runs).items()]
    colors = plt.get_cmap("tab20")
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for axis, (key, title, log) in zip(axes, panels):
        bands = [(label, i, _median_band(group, key)) for i, (_, label, group) in enumerate(groups)]
        bands = [b for b in bands if b[2] is not None]
        positive = [v for *_, (_, median, low, high) in bands for v in np.concatenate([low, high])
                    if np.isfinite(v) and v > 0]
        floor = min(positive) / 3 if log and positive else None
        for label, i, (epochs, median, low, high) in bands:
            color = colors(i % 20)
            if floor is not None:
                zeros = median == 0
                median, low, high = (np.where(a == 0, floor, a) for a in (median, low, high))
                if zeros.any():
                    axis.plot(epochs[zeros], median[zeros], "v", color=color, markersize=7)
            axis.plot(epochs, median, marker="o", markersize=3, color=color, label=label)
            axis.fill_between(epochs, low, high, color=color, alpha=0.15, linewidth=0)
        axis.set_xlabel("epoch (0 = initialisation)")
        axis.set_ylabel(title)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            axis.set_yscale("log")
            if floor is not None:
                axis.set_ylim(bottom=floor * 0.8)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    figure.suptitle("Median over seeds, band = min-max (paper Figure 2); ▼ = exactly 0, drawn "
                    "at the axis floor" + ("" if all(r.get("holdout", True) for r in runs) else
                                           "; runs on the full training split have no holdout"))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _label(key, rates):
    variant, coefficient, rate = key
    return variant + (f" {coefficient:g}" if coefficient else "") + \
        (f" lr {rate:g}" if rates else "")


def coefficient_points(records):
    """Figure 3's data: per penalty setting and for BatchNorm (the reference), the accuracy and
    end norms over seeds. Under the paper protocol the grid lives in phase 1, so the accuracy is
    the holdout's (tuning runs, with BatchNorm's chosen setting as the reference); otherwise the
    test split's. Returns (metric name, rows)."""
    tune = [r for r in records if r.get("phase") == "tune" and r["status"] == "ok"]
    runs, metric = (tune, "val_accuracy") if tune else \
        ([r for r in reported(records) if r["status"] == "ok"], "test_accuracy")
    rows = []
    runs = [r for r in runs if r.get("coefficient_field") != "agc"]   # penalties only
    for (variant, coefficient, rate), group in _groups(runs).items():
        if not coefficient and variant != "batchnorm":
            continue
        values = [r[metric] for r in group if r.get(metric) is not None]
        if not values:
            continue
        ends = {key: [r["curves"][key][-1] for r in group if r.get("curves")
                      and r["curves"][key] and r["curves"][key][-1] is not None]
                for key in ("embedding_norm_sq", "output_norm_sq")}
        rows.append({"variant": variant, "coefficient": coefficient if coefficient else "",
                     "learning_rate": rate, "seeds": len(values),
                     f"{metric}_median": float(np.median(values)), f"{metric}_min": min(values),
                     f"{metric}_max": max(values),
                     **{f"{k}_median": float(np.median(v)) if v else "" for k, v in ends.items()}})
    swept = {}
    for row in rows:
        swept.setdefault(row["variant"], set()).add(row["coefficient"])
    rows = [r for r in rows if r["variant"] == "batchnorm" or len(swept[r["variant"]]) > 1]
    if tune:   # BatchNorm's reference: its best learning rate's holdout accuracy
        bn = [r for r in rows if r["variant"] == "batchnorm"]
        keep = max(bn, key=lambda r: (r[f"{metric}_median"], -r["learning_rate"]), default=None)
        rows = [r for r in rows if r["variant"] != "batchnorm" or r is keep]
    return metric, rows


def write_coefficient_csv(records, path):
    metric, rows = coefficient_points(records)
    fields = ["variant", "coefficient", "learning_rate", "seeds", f"{metric}_median",
              f"{metric}_min", f"{metric}_max", "embedding_norm_sq_median",
              "output_norm_sq_median"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r["variant"] != "batchnorm", r["variant"],
                                           r["coefficient"] or 0, r["learning_rate"] or 0)):
        writer.writerow(row)
    write_atomically(path, text.getvalue())
    return metric, rows


def figure_coefficients(records, path):
    """Figure 3: accuracy and end norms against the coefficient per penalty (median, min-max
    error bars over seeds), BatchNorm's median as a horizontal reference line; its data is in
    `coefficients.csv` beside it. Returns the metric plotted."""
    plt = _pyplot()
    metric, rows = coefficient_points(records)
    reference = next((r for r in rows if r["variant"] == "batchnorm"), None)
    curves = {}
    for row in rows:
        if row["variant"] != "batchnorm":
            curves.setdefault((row["variant"], row["learning_rate"]), []).append(row)
    rates = len({rate for _, rate in curves}) > 1
    floors = {}
    for key in ("embedding_norm_sq", "output_norm_sq"):
        positive = [r[f"{key}_median"] for r in rows
                    if r[f"{key}_median"] != "" and r[f"{key}_median"] > 0]
        floors[key] = min(positive) / 3 if positive else 1e-12
    split = "holdout accuracy (phase 1)" if metric == "val_accuracy" else "test accuracy"
    panels = ((metric, split, False), ("embedding_norm_sq", "E‖Emb(x)‖² at the end", True),
              ("output_norm_sq", "E‖NN(x)‖² at the end", True))
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for (variant, rate), points in sorted(curves.items()):
        points.sort(key=lambda r: r["coefficient"])
        label = variant + (f" lr {rate:g}" if rates else "")
        xs = [p["coefficient"] for p in points]
        median = np.array([p[f"{metric}_median"] for p in points])
        errors = [median - [p[f"{metric}_min"] for p in points],
                  np.array([p[f"{metric}_max"] for p in points]) - median]
        axes[0].errorbar(xs, median, yerr=errors, marker="o", capsize=3, label=label)
        for axis, key in zip(axes[1:], ("embedding_norm_sq", "output_norm_sq")):
            pairs = [(p["coefficient"], p[f"{key}_median"]) for p in points
                     if p[f"{key}_median"] != ""]
            if pairs:   # an exact zero (a collapsed embedding) is a triangle at the floor
                xs, ys = zip(*pairs)
                ys = np.array([y if y > 0 else floors[key] for y in ys])
                line, = axis.plot(xs, ys, marker="o", label=label)
                zeros = [x for x, (_, y) in zip(xs, pairs) if y == 0]
                if zeros:
                    axis.plot(zeros, [floors[key]] * len(zeros), "v", markersize=9,
                              color=line.get_color())
    if reference is not None:
        for axis, (key, _, _) in zip(axes, panels):
            value = reference[f"{key}_median"]
            if value != "":
                axis.axhline(value, color="black", linestyle="--", linewidth=1,
                             label="BatchNorm")
    for axis, (_, title, log) in zip(axes, panels):
        axis.set_xscale("log")
        axis.set_xlabel("penalty coefficient")
        axis.set_ylabel(title)
        if log:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("Against the penalty coefficient (paper Figure 3): median over seeds, bars = "
                    "min-max; dashed = BatchNorm; ▼ = exactly 0, drawn at the axis floor")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return metric


SPP_COLUMNS = ("mode", "input", "depth", "name", "output", "branch", "squared_mean", "variance",
               "branch_variance")
SPP_INPUTS = {"gaussian": ("N(0, 1) input", "-"), "data": ("data", "--")}   # label, line style
SPP_TITLE = "Signal propagation at initialisation (Brock et al. 2021a, Figure 1)"


def _spp_lines(curves_by_mode):
    """(mode, input, rows) of `{mode: rows}` or `{mode: {input: rows}}`."""
    for mode, curves in curves_by_mode.items():
        if isinstance(curves, dict):
            for name, rows in curves.items():
                yield mode, name, rows
        else:
            yield mode, "", curves


def write_signal_propagation_csv(curves_by_mode, path):
    """`SPP_COLUMNS`: one row per norm mode, probe input and residual block."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SPP_COLUMNS)
    for mode, name, rows in _spp_lines(curves_by_mode):
        for row in rows:
            writer.writerow([mode, name] + [row[key] for key in SPP_COLUMNS[2:]])
    write_atomically(path, text.getvalue())


def figure_signal_propagation(curves_by_mode, path):
    """Signal propagation plots (Brock et al. 2021a, section 2, Figure 1): per residual block at
    initialisation, the block output's average squared channel mean and average channel
    variance and the residual branch's average channel variance, against the block's depth.

    `curves_by_mode`: `{mode: rows}` or `{mode: {input: rows}}` with `SignalPropagation.measure()`
    rows; one colour per norm mode, solid for the N(0, 1) input ("gaussian", the paper's),
    dashed for the data ("data"). Log y on every panel: the modes differ by orders of magnitude
    (an unnormalised residual branch doubles the variance at every block); an exact zero (a
    zero-initialised branch end: Fixup, SkipInit, BatchNorm's zero gamma) is a ▼ at the floor.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    panels = (("squared_mean", "block output: avg. squared channel mean"),
              ("variance", "block output: avg. channel variance"),
              ("branch_variance", "residual branch end: avg. channel variance"))
    lines = list(_spp_lines(curves_by_mode))
    modes = list(dict.fromkeys(mode for mode, _, _ in lines))
    colors, markers = plt.get_cmap("tab10"), "osD^PX*<>h"   # markers tell overlapping modes apart
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for axis, (key, title) in zip(axes, panels):
        positive = [row[key] for *_, rows in lines for row in rows
                    if np.isfinite(row[key]) and row[key] > 0]
        floor = min(positive) / 3 if positive else 1e-12
        for mode, name, rows in lines:
            index = modes.index(mode)
            label, style = SPP_INPUTS.get(name, (name, "-"))
            depth = np.array([row["depth"] for row in rows])
            values = np.array([row[key] for row in rows], float)
            axis.plot(depth, np.where(values == 0, floor, values), style,
                      marker=markers[index % len(markers)], markersize=4,
                      color=colors(index % 10), fillstyle="none" if style == "--" else "full",
                      label=f"{mode}, {label}" if label else mode)
            zeros = values == 0
            if zeros.any():
                axis.plot(depth[zeros], np.full(zeros.sum(), floor), "v", color=colors(index % 10),
                          markersize=7)
        axis.set_yscale("log")
        axis.set_ylim(bottom=floor * 0.8)
        axis.set_xlabel("residual block (depth)")
        axis.set_ylabel(title)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    figure.suptitle("Signal propagation at initialisation (Brock et al. 2021a, Figure 1): "
                    "moments over batch and positions, averaged over channels; ▼ = exactly 0, "
                    "drawn at the axis floor")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _signal_propagation_section(study, output_dir):
    """The figure entry (title, file, note) of the study's signal propagation plots, or the
    note that they are missing; None for studies without them (EfficientNet)."""
    from bnreg_tf.study.runner import SIGNAL_PROPAGATION_EXAMPLES, read_signal_propagation

    if model_entry(study.base.model).family != "resnet":
        return None
    curves = read_signal_propagation(study)
    if curves is None:
        return (SPP_TITLE, None, "Not measured: `signal_propagation.json` is missing (the "
                "study's log says why).")
    figure_signal_propagation(curves, os.path.join(output_dir, "signal_propagation.png"))
    write_signal_propagation_csv(curves, os.path.join(output_dir, "signal_propagation.csv"))
    return (SPP_TITLE, "signal_propagation.png",
            f"Once per norm mode ({', '.join(curves)}), not per run: {study.base.model} as the "
            f"runs build it with seed {study.seeds[0]}, before any training. Solid: an N(0, 1) "
            f"batch (the paper's input); dashed: {SIGNAL_PROPAGATION_EXAMPLES} evaluation images "
            "of the data. BatchNorm normalises with the probe batch's statistics (as in a "
            "training step); every other layer runs in inference mode. Data: "
            "`signal_propagation.csv`; `signal_propagation.json` is reused by later invocations.")


def write_report(records, output_dir, header, study=None):
    """report.md, results.csv, results.json and the figures; returns the report path.

    `study` (a `bnreg_tf.study.runner.Study`) adds the Selection section, the paper's tables and the
    caveats, which depend on its protocol, seeds and data, and the signal
    propagation plots that `study.signal_propagation` stored (ResNet/WRN studies)."""
    os.makedirs(output_dir, exist_ok=True)
    write_tables(records, output_dir)
    figures = []
    if any(r["status"] == "ok" for r in reported(records)):
        figure_curves(records, os.path.join(output_dir, "norm_curves.png"))
        figures.append(("Figure 2: accuracy and norms over training", "norm_curves.png", ""))
    metric, points = coefficient_points(records)
    swept = {p["coefficient"] for p in points if p["variant"] != "batchnorm"}
    if len(swept) > 1:
        figure_coefficients(records, os.path.join(output_dir, "coefficients.png"))
        write_coefficient_csv(records, os.path.join(output_dir, "coefficients.csv"))
        figures.append(("Figure 3: against the coefficient", "coefficients.png",
                        "Data: `coefficients.csv` (the BatchNorm row is the reference line)."))
    section = _signal_propagation_section(study, output_dir) if study is not None else None
    if section is not None:
        figures.append(section)
    lines = [header, ""]
    context = None
    if study is not None:
        from bnreg_tf.data import catalog
        from bnreg_tf.study.runner import selection

        context = dict(protocol=study.protocol, seeds=study.seeds, dataset=study.base.dataset,
                       family=model_entry(study.base.model).family, early_stopping=study.base.early_stopping)
        if study.protocol == "paper":
            chosen = selection(study, records)
            lines += [selection_section(chosen), ""]
            if not chosen["complete"]:
                lines += ["## Phase 2 (final runs)", "", "Pending: planned once phase 1 is "
                          "complete.", ""]
        tables = paper_tables(records, context)
        if tables:
            lines += ["## The paper's tables", "", tables]
    lines += ["## Results (median [min, max] over seeds)", "", main_table(records), ""]
    if study is not None:
        classes = catalog.spec(study.base.dataset, study.base.data_dir).num_classes
        notes = caveats(records, classes)
        lines += ["## Caveats", ""] + [f"- {note}" for note in notes or
                                       ["None found in this data."]] + [""]
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{r['run']}`: {r['error']}" for r in failed] + [""]
    pending = [r for r in records if r["status"] in ("pending", "busy")]
    if pending:
        lines += ["## Pending runs", "", f"{len(pending)} of {len(records)} runs have not "
                  "finished (other shards, or still training): " +
                  ", ".join(f"`{r['run']}`" for r in pending), ""]
    for title, name, note in figures:
        image = [f"![{title}]({name})", ""] if name else []
        lines += [f"## {title}", ""] + image + ([note, ""] if note else [])
    lines += ["Per-run numbers: `results.csv`, `results.json` (with the curves).", ""]
    path = os.path.join(output_dir, "report.md")
    write_atomically(path, "\n".join(lines))
    return path


def header(study, command, records, wall_seconds, report_only=False):
    """The report's opening: what ran, on which data, model, seeds and hardware, how long."""
    import platform

    import tensorflow as tf

    from bnreg_tf.study.runner import PROTOCOLS

    base = study.base
    skipped = sum(1 for r in records if r.get("skipped"))
    ran = "built from finished runs only (--report_only)" if report_only else \
        f"{wall_seconds / 60:.1f} min for this invocation ({skipped} runs reused as finished)"
    rates = ", ".join(f"{r:g}" for r in study.learning_rates) or f"{base.learning_rate:g}"
    tuning = f"; tuning seeds: {', '.join(map(str, study.tuning_seeds))}" \
        if study.protocol == "paper" else ""
    return "\n".join([
        f"# bnreg study: {study.name}", "",
        f"- command: `{command}`",
        f"- training preset: `{study.preset.training_preset}`, dataset `{base.dataset}`, model "
        f"`{base.model}`, {base.epochs} epochs, batch {base.batch_size}, learning rates {rates}"
        + (", early stopping on the holdout" if base.early_stopping else ""),
        f"- protocol `{study.protocol}`: {PROTOCOLS[study.protocol]}; val acc = holdout, test acc "
        "= test split through the exported SavedModel",
        f"- seeds: {', '.join(map(str, study.seeds))}{tuning}; variants: "
        f"{', '.join(study.variants)}"
        + (f"; coefficients: {', '.join(f'{c:g}' for c in study.sweep)}" if study.sweep else ""),
        f"- hardware: {platform.machine()}, {os.cpu_count()} cores, "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU; TF {tf.__version__}",
        f"- wall time: {ran}"])
