"""The study's report: report.md with the Selection (paper protocol), the paper's Tables 1-4,
every metric, Caveats from the data, the figures and their data (`tables`, `caveats`,
`figures`, `spp_figure`).

Per variant (and coefficient, learning rate): the median over seeds with the [min, max] spread;
top-1 on ImageNet (Tables 2, 4); the test-time Dropout drop (Table 3); CIFAR-10-C where the data
is CIFAR-10 (Table 1); the probe norms at the end of training.
"""
import os

from bnreg_tf.data import catalog
from bnreg_tf.files import write_atomically
from bnreg_tf.run import layout
from bnreg_tf.run.models import model_entry
from bnreg_tf.study.caveats import caveats
from bnreg_tf.study.selection import selection
from bnreg_tf.study.figures import (coefficient_points, figure_coefficients, figure_curves,
                                    write_coefficient_csv)
from bnreg_tf.study.signal import SIGNAL_PROPAGATION_EXAMPLES, read_signal_propagation
from bnreg_tf.study.spp_figure import (SPP_TITLE, figure_signal_propagation,
                                       write_signal_propagation_csv)
from bnreg_tf.study.tables import (main_table, paper_tables, reported, selection_section,
                                   write_tables)
from bnreg_tf.study.variants import PROTOCOLS


def _signal_propagation_section(study, output_dir):
    """The figure entry (title, file, note) of the study's signal propagation plots, or the
    note that they are missing; None for studies without them (EfficientNet)."""
    if model_entry(study.base.model).family != "resnet":
        return None
    curves = read_signal_propagation(study)
    if curves is None:
        return (SPP_TITLE, None, "Not measured: `signal_propagation.json` is missing (the "
                "study's log says why).")
    figure_signal_propagation(curves, os.path.join(output_dir, layout.SIGNAL_PROPAGATION_PNG))
    write_signal_propagation_csv(curves, os.path.join(output_dir,
                                                      layout.SIGNAL_PROPAGATION_CSV))
    return (SPP_TITLE, layout.SIGNAL_PROPAGATION_PNG,
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
        figure_curves(records, os.path.join(output_dir, layout.NORM_CURVES_PNG))
        figures.append(("Figure 2: accuracy and norms over training", layout.NORM_CURVES_PNG,
                        ""))
    metric, points = coefficient_points(records)
    swept = {p["coefficient"] for p in points if p["variant"] != "batchnorm"}
    if len(swept) > 1:
        figure_coefficients(records, os.path.join(output_dir, layout.COEFFICIENTS_PNG))
        write_coefficient_csv(records, os.path.join(output_dir, layout.COEFFICIENTS_CSV))
        figures.append(("Figure 3: against the coefficient", layout.COEFFICIENTS_PNG,
                        "Data: `coefficients.csv` (the BatchNorm row is the reference line)."))
    section = _signal_propagation_section(study, output_dir) if study is not None else None
    if section is not None:
        figures.append(section)
    lines = [header, ""]
    context = None
    if study is not None:
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
    path = os.path.join(output_dir, layout.REPORT)
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
