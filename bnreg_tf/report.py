"""The study's report: tables in the shape of the paper's, results.csv/json, Figures 2 and 3 (PNG).

Per variant (and coefficient): the median over seeds with the [min, max] spread, as the paper
reports medians of seeds (Tables 1-2); test-time-dropout drop (Table 3); CIFAR-10-C mean where the
data is CIFAR-10 (Table 2); the probe norms E||Emb||^2 and E||NN||^2 at the end of training.
"""
import csv
import io
import json
import os
import warnings

import numpy as np

from bnreg_tf.rundir import write_atomically

METRICS = (  # (record key, column title, format)
    ("test_accuracy", "test acc", "{:.4f}"),
    ("val_accuracy", "val acc", "{:.4f}"),
    ("cifar10_c", "CIFAR-10-C", "{:.4f}"),
    ("dropout_drop", "drop, test-time dropout p=0.5", "{:+.4f}"),
    ("embedding_norm_sq", "E‖Emb‖² end", "{:.3g}"),
    ("output_norm_sq", "E‖NN‖² end", "{:.3g}"),
)


def _groups(records):
    groups = {}
    for record in records:
        groups.setdefault((record["variant"], record["coefficient"]), []).append(record)
    return groups


def _cell(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(float(np.median(values)))} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def summary_rows(records):
    """One row per (variant, coefficient): `{"variant", "coefficient", "seeds", "failed", key: values}`."""
    rows = []
    for (variant, coefficient), group in _groups(records).items():
        ok = [r for r in group if r["status"] == "ok"]
        row = {"variant": variant, "coefficient": coefficient, "seeds": len(ok),
               "failed": [f"{r['run']}: {r['error']}" for r in group if r["status"] == "failed"],
               "pending": [r["run"] for r in group if r["status"] in ("pending", "busy")]}
        for key, _, _ in METRICS:
            row[key] = [r[key] for r in ok if r.get(key) is not None]
        rows.append(row)
    return rows


def main_table(records):
    """The markdown table printed at the end and written to report.md."""
    rows = summary_rows(records)
    keys = [m for m in METRICS if any(row[m[0]] for row in rows)]
    lines = ["| variant | coef | seeds | " + " | ".join(title for _, title, _ in keys) + " |",
             "|---|---:|---:|" + "---:|" * len(keys)]
    for row in rows:
        coefficient = f"{row['coefficient']:g}" if row["coefficient"] else "–"
        seeds = f"{row['seeds']}" + (f" ({len(row['failed'])} failed)" if row["failed"] else "") \
            + (f" ({len(row['pending'])} pending)" if row["pending"] else "")
        cells = [_cell(row[key], fmt) for key, _, fmt in keys]
        lines.append(f"| {row['variant']} | {coefficient} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(records, output_dir):
    """results.csv (one row per run) and results.json (every record, curves included)."""
    fields = ["run", "variant", "coefficient", "seed", "status", "test_accuracy", "val_accuracy",
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


def _median_curve(group, key):
    ok = [r for r in group if r["status"] == "ok"]
    if not ok:
        return None, None
    curves = [r["curves"][key] for r in ok]
    length = min(len(c) for c in curves)
    values = np.array([[np.nan if v is None else v for v in c[:length]] for c in curves], float)
    if not np.isfinite(values).any():
        return None, None
    with warnings.catch_warnings():  # epoch 0 has no validation accuracy: an all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        return ok[0]["curves"]["epoch"][:length], np.nanmedian(values, axis=0)


def figure_curves(records, path):
    """Figure 2: validation accuracy, E||Emb||^2 and E||NN||^2 against epoch, per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("val_accuracy", "validation accuracy", False),
              ("embedding_norm_sq", "E‖Emb(x)‖² (probe)", True),
              ("output_norm_sq", "E‖NN(x)‖² (probe)", True))
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (variant, coefficient), group in _groups(records).items():
        label = variant if not coefficient else f"{variant} ({coefficient:g})"
        for axis, (key, _, _) in zip(axes, panels):
            epochs, values = _median_curve(group, key)
            if values is not None:
                axis.plot(epochs, values, marker="o", markersize=3, label=label)
    for axis, (_, title, log) in zip(axes, panels):
        axis.set_xlabel("epoch (0 = init)")
        axis.set_title(title)
        if log:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("Median over seeds (paper Figure 2)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def figure_coefficients(records, path):
    """Figure 3: test accuracy and end norms against the coefficient, per penalty variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary_rows(records) if r["coefficient"]]
    variants = sorted({r["variant"] for r in rows})
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for variant in variants:
        points = sorted((r["coefficient"], r) for r in rows if r["variant"] == variant)
        for axis, key in zip(axes, ("test_accuracy", "embedding_norm_sq", "output_norm_sq")):
            xs = [c for c, r in points if r[key]]
            ys = [float(np.median(r[key])) for _, r in points if r[key]]
            axis.plot(xs, ys, marker="o", label=variant)
    for axis, title in zip(axes, ("test accuracy", "E‖Emb‖² end", "E‖NN‖² end")):
        axis.set_xscale("log")
        axis.set_xlabel("coefficient")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    figure.suptitle("Median over seeds against the penalty coefficient (paper Figure 3)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(records, output_dir, header):
    """report.md, results.csv, results.json and the figures; returns the report path."""
    os.makedirs(output_dir, exist_ok=True)
    write_tables(records, output_dir)
    figures = []
    if any(r["status"] == "ok" for r in records):
        figure_curves(records, os.path.join(output_dir, "norm_curves.png"))
        figures.append(("Figure 2: accuracy and norms over training", "norm_curves.png"))
        swept = {r["coefficient"] for r in records if r["coefficient"]}
        if len(swept) > 1:
            figure_coefficients(records, os.path.join(output_dir, "coefficients.png"))
            figures.append(("Figure 3: against the coefficient", "coefficients.png"))
    lines = [header, "", "## Results (median [min, max] over seeds)", "", main_table(records), ""]
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{r['run']}`: {r['error']}" for r in failed] + [""]
    pending = [r for r in records if r["status"] in ("pending", "busy")]
    if pending:
        lines += ["## Pending runs", "", f"{len(pending)} of {len(records)} runs have not "
                  "finished (other shards, or still training): " +
                  ", ".join(f"`{r['run']}`" for r in pending), ""]
    for title, name in figures:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    lines += ["Per-run numbers: `results.csv`, `results.json` (with the curves).", ""]
    path = os.path.join(output_dir, "report.md")
    write_atomically(path, "\n".join(lines))
    return path


def header(study, command, records, wall_seconds, report_only=False):
    """The report's opening: what ran, on which data, model, seeds and hardware, how long."""
    import platform

    import tensorflow as tf

    base = study.base
    skipped = sum(1 for r in records if r.get("skipped"))
    ran = "built from finished runs only (--report_only)" if report_only else \
        f"{wall_seconds / 60:.1f} min for this invocation ({skipped} runs reused as finished)"
    return "\n".join([
        f"# bnreg study: {study.name}", "",
        f"- command: `{command}`",
        f"- training preset: `{study.preset.training_preset}`, dataset `{base.dataset}`, model "
        f"`{base.model}`, {base.epochs} epochs, batch {base.batch_size}",
        "- trained on the training split minus the paper's holdout; val acc = holdout, "
        "test acc = test split through the exported SavedModel",
        f"- seeds: {', '.join(map(str, study.seeds))}; variants: {', '.join(study.variants)}"
        + (f"; coefficients: {', '.join(f'{c:g}' for c in study.sweep)}" if study.sweep else ""),
        f"- hardware: {platform.machine()}, {os.cpu_count()} cores, "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU; TF {tf.__version__}",
        f"- wall time: {ran}"])
