"""`bnreg-eval`: scores a SavedModel from bnreg-train (accuracy, test-time dropout, norms, CIFAR-10-C).

    bnreg-eval --saved_model=runs/wrn/export --dataset=cifar10 --data_dir=$TFDS
Writes JSON (default: eval_<dataset>.json beside the SavedModel) and prints the tables.
"""
import json
import os

from absl import flags

from bnreg_tf.cli import initialize_devices
from bnreg_tf.cli.errors import run_main
from bnreg_tf.config import ConfigError

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("saved_model", None, "SavedModel directory written by bnreg-train")
    flags.DEFINE_string("dataset", None, "digits, cifar10, svhn_cropped or imagenet2012")
    flags.DEFINE_string("data_dir", "", "TFDS data dir")
    flags.DEFINE_bool("holdout", False, "Score the paper's validation holdout instead of test")
    flags.DEFINE_integer("batch_size", 256, "Evaluation batch size")
    flags.DEFINE_integer("max_examples", 0, "Score only the first N examples of each split (0 = all)")
    flags.DEFINE_float("dropout_rate", 0.5, "Test-time Dropout rate on the embedding (Table 3)")
    flags.DEFINE_integer("dropout_draws", 5, "Dropout masks averaged per example")
    flags.DEFINE_enum("cifar10_c", "auto", ["auto", "yes", "no"],
                      "Score CIFAR-10-C (auto: when --dataset=cifar10)")
    flags.DEFINE_integer("seed", 0, "Seed of the dropout masks")
    flags.DEFINE_string("output", "", "JSON path (default: eval_<dataset>.json beside the SavedModel)")


def main():
    from bnreg_tf import evaluate, trainer
    from bnreg_tf.data import catalog, pipeline

    if not FLAGS.saved_model:
        raise ConfigError("--saved_model: expected the SavedModel directory to score")
    if FLAGS.dataset not in catalog.DATASETS:
        raise ConfigError(f"--dataset: expected one of {', '.join(catalog.DATASETS)}, "
                          f"got {FLAGS.dataset!r}")
    if not 0 <= FLAGS.dropout_rate < 1:
        raise ConfigError(f"--dropout_rate: expected a rate in [0, 1), got {FLAGS.dropout_rate}")
    for name in ("batch_size", "dropout_draws"):
        if FLAGS[name].value < 1:
            raise ConfigError(f"--{name}: expected an integer >= 1, got {FLAGS[name].value}")
    initialize_devices()
    loaded = evaluate.load_saved_model(FLAGS.saved_model)
    _, split, _, _ = catalog.split_plan(FLAGS.dataset, FLAGS.holdout)
    limit = FLAGS.max_examples or None
    batches = pipeline.raw_dataset(FLAGS.dataset, split, FLAGS.data_dir, False, FLAGS.batch_size,
                                   limit)
    results = {"saved_model": os.path.abspath(FLAGS.saved_model), "dataset": FLAGS.dataset,
               "split": split, **evaluate.score(loaded, batches, FLAGS.dropout_rate,
                                                 FLAGS.dropout_draws, FLAGS.seed)}
    if FLAGS.cifar10_c == "yes" or (FLAGS.cifar10_c == "auto" and FLAGS.dataset == "cifar10"):
        results["cifar10_c"] = evaluate.cifar10_c(loaded, FLAGS.data_dir, FLAGS.batch_size, limit)
    output = FLAGS.output or os.path.join(os.path.dirname(os.path.abspath(FLAGS.saved_model)),
                                          f"eval_{FLAGS.dataset}.json")
    trainer.write_atomically(output, json.dumps(results, indent=2))
    print(evaluate.format_report(results))
    print(f"bnreg-eval: wrote {output}")
    return 0


def run(argv=None):
    define_flags()
    run_main(main, argv, "bnreg-eval")


if __name__ == "__main__":
    run()
