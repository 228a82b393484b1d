"""`bnreg-eval`: scores a SavedModel from bnreg-train (accuracy, test-time dropout, norms, CIFAR-10-C).

    bnreg-eval --saved_model=runs/wrn/export      # the run's own test split (its dataset.json)
    bnreg-eval --saved_model=runs/wrn/export --dataset=cifar10 --data_dir=$TFDS
Writes JSON (default: eval_<dataset>.json beside the SavedModel) and prints the tables.
"""
import json
import os

from absl import flags

from bnreg_tf.cli import initialize_devices
from bnreg_tf.cli.errors import run_main
from bnreg_tf.files import write_atomically
from bnreg_tf.run.config import ConfigError

FLAGS = flags.FLAGS
MAX_DROPOUT_DRAWS = 1000


def define_flags():
    from bnreg_tf.run.flags import set_group

    flags.DEFINE_string("saved_model", None, "SavedModel directory written by bnreg-train [path] "
                        "(required; e.g. runs/wrn/export)")
    flags.DEFINE_string("dataset", None, "Dataset to score [name] (default: the one the export "
                        "was trained on, from its dataset.json; same names as bnreg-train)")
    flags.DEFINE_string("data_dir", None, "TFDS data dir or image folder [path] (default: the "
                        "training run's)")
    flags.DEFINE_bool("holdout", False, "Score the run's validation holdout instead of its test "
                      "split [bool]")
    flags.DEFINE_integer("batch_size", 256, "Evaluation batch [images]")
    flags.DEFINE_integer("max_examples", 0, "Score only the first N examples of each split "
                         "[images] (0 = all)")
    flags.DEFINE_float("dropout_rate", 0.5, "Test-time Dropout rate on the embedding "
                       "[probability] (Table 3)")
    flags.DEFINE_integer("dropout_draws", 5, "Dropout masks averaged per example [masks]")
    flags.DEFINE_enum("cifar10_c", "auto", ["auto", "yes", "no"],
                      "Score CIFAR-10-C [choice] (auto: when --dataset=cifar10)")
    flags.DEFINE_integer("seed", 0, "Seed of the dropout masks [integer]")
    flags.DEFINE_string("output", "", "JSON path [path] (default '': eval_<dataset>.json beside "
                        "the SavedModel)")
    flags.DEFINE_bool("skip_bad_images", None, "--dataset=folder: leave out image files that "
                      "cannot be read instead of refusing them [bool] (default: as the training "
                      "run did, from the export's dataset.json)")
    set_group("model", "saved_model")
    set_group("data", "dataset", "data_dir", "holdout", "max_examples", "skip_bad_images")
    set_group("evaluation", "dropout_rate", "dropout_draws", "cifar10_c", "seed")
    set_group("execution", "batch_size")
    set_group("output", "output")


def main():
    from bnreg_tf.run import evaluate, rundir
    from bnreg_tf.data import pipeline

    if not FLAGS.saved_model:
        raise ConfigError("--saved_model: expected the SavedModel directory to score")
    if not 0 <= FLAGS.dropout_rate < 1:
        raise ConfigError(f"--dropout_rate: expected a rate in [0, 1), got {FLAGS.dropout_rate}")
    for name in ("batch_size", "dropout_draws"):
        if FLAGS[name].value < 1:
            raise ConfigError(f"--{name}: expected an integer >= 1, got {FLAGS[name].value}")
    _check_ranges()
    record = evaluate.dataset_record(FLAGS.saved_model)
    dataset = FLAGS.dataset or record.get("dataset")
    if not dataset:
        raise ConfigError(f"--dataset: {FLAGS.saved_model} has no dataset.json; name the "
                          "dataset to score")
    data_dir = FLAGS.data_dir if FLAGS.data_dir is not None else (
        record.get("data_dir", "") if dataset == record.get("dataset") else "")
    name = dataset.replace("/", "_")
    output = FLAGS.output or os.path.join(os.path.dirname(os.path.abspath(FLAGS.saved_model)),
                                          f"eval_{name}.json")
    rundir.check_output_file(output, "--output")   # before the evaluation, not after it
    initialize_devices()
    loaded = evaluate.load_saved_model(FLAGS.saved_model)
    split = evaluate.split_to_score(dataset, data_dir, record, FLAGS.holdout)
    _check_data(loaded, dataset, data_dir, record)
    limit = FLAGS.max_examples or None
    batches = pipeline.raw_dataset(dataset, split, data_dir, False, FLAGS.batch_size, limit)
    results = {"saved_model": os.path.abspath(FLAGS.saved_model), "dataset": dataset,
               "split": split, **evaluate.score(loaded, batches, FLAGS.dropout_rate,
                                                 FLAGS.dropout_draws, FLAGS.seed)}
    if FLAGS.cifar10_c == "yes" or (FLAGS.cifar10_c == "auto" and dataset == "cifar10"):
        results["cifar10_c"] = evaluate.cifar10_c(loaded, data_dir, FLAGS.batch_size, limit)
    write_atomically(output, json.dumps(results, indent=2))
    print(evaluate.format_report(results))
    print(f"bnreg-eval: wrote {output}")
    return 0


def _check_ranges():
    """What the other flags must hold (one line each), before anything is loaded."""
    if FLAGS.dropout_draws > MAX_DROPOUT_DRAWS:
        raise ConfigError(f"--dropout_draws: expected 1..{MAX_DROPOUT_DRAWS} masks (each is one "
                          f"more pass of the classifier over the split), got "
                          f"{FLAGS.dropout_draws}")
    if FLAGS.max_examples < 0:
        raise ConfigError(f"--max_examples: expected an integer >= 0 (0 = all), got "
                          f"{FLAGS.max_examples}")
    if not 0 <= FLAGS.seed < 2 ** 32:
        raise ConfigError(f"--seed: expected an integer in [0, 2^32), got {FLAGS.seed}")
    if FLAGS.dataset == "digits" and FLAGS.data_dir:
        raise ConfigError("--data_dir: expected no --data_dir with --dataset=digits (scikit-learn "
                          f"bundles it; nothing is read from a data dir), got {FLAGS.data_dir!r}")
    if FLAGS.skip_bad_images is not None and (FLAGS.dataset or "folder") != "folder":
        raise ConfigError("--skip_bad_images: expected --dataset=folder (it applies to image "
                          "folders only)")


def _check_data(loaded, dataset, data_dir, record):
    """The data fits the export (channels), then, for a folder, its bad files and empty classes
    are allowed (as the training run allowed them, unless --skip_bad_images says otherwise)."""
    from bnreg_tf.data import catalog, folder
    from bnreg_tf.run import evaluate

    evaluate.check_data_fits(loaded, FLAGS.saved_model, dataset, catalog.spec(dataset, data_dir))
    if dataset == "folder":
        own = record.get("dataset") == "folder"
        skip = FLAGS.skip_bad_images if FLAGS.skip_bad_images is not None else \
            own and bool(record.get("skip_bad_images"))
        folder.check(data_dir, skip, own and bool(record.get("drop_empty_classes")))


def run(argv=None):
    define_flags()
    run_main(main, argv, "bnreg-eval")


if __name__ == "__main__":
    run()
