"""`bnreg-study`: runs the paper's BatchNorm ablation grid and writes a report.

    bnreg-study                                    # offline digits default, about 6 minutes
    bnreg-study --preset=paper_cifar10 --data_dir=$TFDS --output_dir=reports/cifar10 --shard=0/8
    bnreg-study --preset=paper_cifar10 --data_dir=$TFDS --output_dir=reports/cifar10 --report_only
    bnreg-study --variants=fixup_el2,fixup_fl2 --coefficients=0.01,0.1,1 --seeds=0,1,2
    bnreg-study --protocol=paper --variants=batchnorm,fixup_el2 --coefficients=0.1,1 --seeds=0,1

Every bnreg-train flag (except --preset and --model_dir) is passed through to each run.
"""
import sys

from absl import flags

from bnreg_tf.cli import initialize_devices
from bnreg_tf.cli.errors import run_main

FLAGS = flags.FLAGS


def define_flags():
    from bnreg_tf.run.flags import define_run_flags, set_group
    from bnreg_tf.run.presets import STUDY_PRESETS
    from bnreg_tf.study.variants import PROTOCOLS, VARIANTS

    flags.DEFINE_string("preset", "default", f"Study [name]: {', '.join(STUDY_PRESETS)}")
    flags.DEFINE_list("variants", None, f"Variants to run [names]: a subset of "
                      f"{', '.join(VARIANTS)} (default: the preset's)")
    flags.DEFINE_list("seeds", None, "Seeds [integers], e.g. 0,1,2 (default: the preset's)")
    flags.DEFINE_list("coefficients", None, "Coefficient grid of the penalty/dropout/AGC variants "
                      "[loss weights or rates] (Figure 3; default: the preset's)")
    flags.DEFINE_enum("protocol", None, list(PROTOCOLS),
                      "Protocol [choice]: paper: tune each variant's grid on the holdout, then "
                      "retrain the chosen setting on the full training split with every seed "
                      "(the paper presets' default); holdout: every setting on the holdout split "
                      "only, scored on test (the default study's)")
    flags.DEFINE_list("learning_rates", None, "Learning-rate grid [per step] (default: the "
                      "preset's; paper_cifar10: 0.1,0.2)")
    flags.DEFINE_integer("tuning_seeds", None, "Seeds per setting in phase 1 of the paper "
                         "protocol [runs] (default 1)")
    flags.DEFINE_string("output_dir", "reports/study", "Where runs/ and the report go [path] "
                        "(default reports/study)")
    flags.DEFINE_string("shard", "0/1", "This process's share of the grid [I/N]: every N-th run "
                        "from the I-th (N processes, e.g. one per GPU; merge with --report_only; "
                        "default 0/1)")
    flags.DEFINE_bool("report_only", False, "Write the report from the finished runs in "
                      "--output_dir without training [bool] (default false)")
    flags.DEFINE_bool("rerun_changed", False, "Retrain runs whose dir holds another config "
                      "[bool] (their old files move to <output_dir>/replaced/; default false)")
    set_group("study", "preset", "variants", "seeds", "coefficients", "protocol",
              "learning_rates", "tuning_seeds", "rerun_changed")
    set_group("execution", "shard")
    set_group("output", "output_dir", "report_only")
    define_run_flags(FLAGS, with_preset=False)


def main():
    from bnreg_tf.run.flags import given_run_fields
    from bnreg_tf.study import command

    request = command.Request(
        FLAGS.preset, given_run_fields(FLAGS), FLAGS.variants, FLAGS.seeds, FLAGS.coefficients,
        FLAGS.output_dir, FLAGS.protocol, FLAGS.learning_rates, FLAGS.tuning_seeds, FLAGS.shard,
        FLAGS.report_only, FLAGS.rerun_changed, " ".join(["bnreg-study", *sys.argv[1:]]))
    return command.run(request, initialize_devices)


def run(argv=None):
    define_flags()
    run_main(main, argv, "bnreg-study")


if __name__ == "__main__":
    run()
