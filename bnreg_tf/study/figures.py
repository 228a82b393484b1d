"""The report's figures: accuracy and norms over training (paper Figure 2) and against the
penalty coefficient (Figure 3, with its data in coefficients.csv)."""
import csv
import io
import warnings

import numpy as np

from bnreg_tf.files import write_atomically
from bnreg_tf.study.tables import _groups, reported


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
