"""`bnreg-study`: runs the paper's BatchNorm ablation grid and writes a report.

    bnreg-study                                    # offline digits default, about 4 minutes
    bnreg-study --preset=paper_cifar10 --data_dir=$TFDS --output_dir=reports/cifar10 \
        --strategy=mirrored
    bnreg-study --variants=fixup_el2,fixup_fl2 --coefficients=0.01,0.1,1 --seeds=0,1,2

Every bnreg-train flag (except --preset and --model_dir) is passed through to each run.
"""
import os
import platform
import sys
import time

from absl import flags

from bnreg_tf.cli import initialize_devices
from bnreg_tf.cli.errors import run_main
from bnreg_tf.config import ConfigError

FLAGS = flags.FLAGS


def define_flags():
    from bnreg_tf.flags import define_run_flags
    from bnreg_tf.study import STUDY_PRESETS, VARIANTS

    flags.DEFINE_string("preset", "default", f"Study: {', '.join(STUDY_PRESETS)}")
    flags.DEFINE_list("variants", None, f"Subset of {', '.join(VARIANTS)} (default: the preset's)")
    flags.DEFINE_list("seeds", None, "Seeds, e.g. 0,1,2 (default: the preset's)")
    flags.DEFINE_list("coefficients", None,
                      "Coefficient sweep for the penalty/dropout variants (Figure 3)")
    flags.DEFINE_string("output_dir", "reports/study", "Where runs/ and the report go")
    define_run_flags(FLAGS, with_preset=False)


def _numbers(name, values, kind):
    try:
        parsed = [kind(v) for v in values]
    except ValueError:
        raise ConfigError(f"--{name}: expected comma-separated numbers, got {','.join(values)!r}") \
            from None
    if kind is float and any(not (v >= 0 and v < float("inf")) for v in parsed):
        raise ConfigError(f"--{name}: expected finite numbers >= 0, got {','.join(values)!r}")
    return parsed


def main():
    from bnreg_tf import report, study
    from bnreg_tf.flags import given_run_fields
    from bnreg_tf.presets import preset

    if FLAGS.preset not in study.STUDY_PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(study.STUDY_PRESETS)}, "
                          f"got {FLAGS.preset!r}")
    chosen = study.STUDY_PRESETS[FLAGS.preset]
    given = given_run_fields(FLAGS)
    if "model_dir" in given:
        raise ConfigError("--model_dir: bnreg-study puts each run under --output_dir/runs/")
    base = preset(chosen.training_preset).replace(
        **{**chosen.changes, **given, "holdout": True, "export": True,
           "model_dir": "<per run>"})
    variants = FLAGS.variants or list(chosen.variants)
    seeds = _numbers("seeds", FLAGS.seeds, int) if FLAGS.seeds else list(chosen.seeds)
    sweep = _numbers("coefficients", FLAGS.coefficients, float) if FLAGS.coefficients else None
    output_dir = os.path.abspath(FLAGS.output_dir)
    runs = study.plan(base, chosen, variants, seeds, sweep, output_dir, set(given))
    # Every run's config is checked before the first one starts.
    from bnreg_tf.config import validate

    for spec in runs:
        try:
            validate(spec.config)
        except ConfigError as error:
            raise ConfigError(f"{error} (run {spec.name})") from None
    initialize_devices()
    command = " ".join(["bnreg-study", *sys.argv[1:]])
    print(f"bnreg-study: {len(runs)} runs ({len(variants)} variants x {len(seeds)} seeds"
          f"{f' x {len(sweep)} coefficients' if sweep else ''}) of {chosen.training_preset} "
          f"into {output_dir}", flush=True)
    start = time.time()
    records = []
    for number, spec in enumerate(runs, 1):
        record = study.run_one(spec)
        records.append(record)
        if record["status"] == "ok":
            state = "skipped (finished before)" if record.get("skipped") else \
                f"test acc {record['test_accuracy']:.4f}, {record['seconds']:.0f} s"
        else:
            state = f"FAILED: {record['error']}"
        print(f"[{number}/{len(runs)}] {spec.name}: {state}", flush=True)
    wall = time.time() - start
    import tensorflow as tf

    header = "\n".join([
        f"# bnreg study: {FLAGS.preset}", "",
        f"- command: `{command}`",
        f"- training preset: `{chosen.training_preset}`, dataset `{base.dataset}`, model "
        f"`{base.model}`, {base.epochs} epochs, batch {base.batch_size}",
        "- trained on the training split minus the paper's holdout; val acc = holdout, "
        "test acc = test split through the exported SavedModel",
        f"- seeds: {', '.join(map(str, seeds))}; variants: {', '.join(variants)}"
        + (f"; coefficients: {', '.join(f'{c:g}' for c in sweep)}" if sweep else ""),
        f"- hardware: {platform.machine()}, {os.cpu_count()} cores, "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU; TF {tf.__version__}",
        f"- wall time: {wall / 60:.1f} min for this invocation "
        f"({sum(1 for r in records if r.get('skipped'))} runs skipped as finished)"])
    path = report.write_report(records, output_dir, header)
    print()
    print(report.main_table(records))
    print(f"\nbnreg-study: report in {path}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


def run(argv=None):
    define_flags()
    run_main(main, argv, "bnreg-study")


if __name__ == "__main__":
    run()
