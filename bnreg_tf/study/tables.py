"""The study report's tables: every metric per setting (median [min, max] over seeds, as the
paper reports medians, Table 1), the paper's Tables 1-4 in its layout, the Selection of the paper
protocol, and results.csv/json.

Which of the paper's tables a study fills: Tables 1 (CIFAR-10/SVHN and the offline digits:
small-image WRNs), 2 (ImageNet ResNet-50) and 4 (ImageNet EfficientNet) by the study's data and
model; Table 3 (test-time Dropout) for every study, as every run is scored with it.
"""
import csv
import io
import json
import os

import numpy as np

from bnreg_tf.files import write_atomically
from bnreg_tf.run import layout
from bnreg_tf.study.variants import TABLE_4_ROWS


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


def _name(row):
    coefficient = row.get("coefficient")
    return f"{row['variant']}" + (f" ({coefficient:g})" if coefficient else "")


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
    write_atomically(os.path.join(output_dir, layout.RESULTS_CSV), text.getvalue())
    write_atomically(os.path.join(output_dir, layout.RESULTS), json.dumps(
        [{k: v for k, v in r.items() if k not in ("traceback", "skipped")} for r in records],
        indent=2))


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
