"""What a finished run reports: the holdout and the test split scored apart, and its data record.

The validation split (the holdout) is what epochs and hyperparameters may be chosen on; the test
split is scored once, after training, and never looked at before. `results.json` holds
`validation_{split,accuracy,cross_entropy}` (None with --noholdout) and
`test_{split,accuracy,cross_entropy}`; `eval_*` repeats the validation scores (the test scores
with --noholdout) for readers of older results files.
"""
import os

from bnreg_tf.data import catalog
from bnreg_tf.run.inputs import eval_dataset


def evaluate_split(run, split):
    """`{"split", "accuracy", "cross_entropy"}` of the run's network (as it is now) on `split`."""
    dataset = eval_dataset(run.config, run.preprocessing, split, run.config.eval_batch_size)
    metrics = run.trainer.evaluate(dataset, verbose=0, return_dict=True)
    return {"split": split, "accuracy": float(metrics["accuracy"]),
            "cross_entropy": float(metrics["cross_entropy"])}


def split_results(scores):
    """The results.json fields of `{"validation": ..., "test": ...}` scores (see the docstring)."""
    results = {}
    for role in ("validation", "test"):
        score = scores.get(role) or {}
        for key in ("split", "accuracy", "cross_entropy"):
            results[f"{role}_{key}"] = score.get(key)
    main = scores.get("validation") or scores["test"]
    results.update(eval_split=main["split"], eval_accuracy=main["accuracy"],
                   eval_cross_entropy=main["cross_entropy"])
    return results


def dataset_record(run):
    """What the export needs to be scored again and read by people: dataset, splits, classes."""
    config = run.config
    spec = catalog.spec(config.dataset, config.data_dir, config.download)
    names = list(spec.class_names) or [str(i) for i in range(spec.num_classes)]
    record = {"dataset": config.dataset,
              "data_dir": os.path.abspath(config.data_dir) if config.data_dir else "",
              "splits": {"train": run.splits.train, "validation": run.splits.validation,
                         "test": run.splits.test},
              "num_classes": spec.num_classes, "channels": spec.channels,
              "image_size": run.preprocessing.image_size, "class_names": names}
    if spec.source == "folder":   # bnreg-eval reads the folder as the run did
        record.update(skip_bad_images=config.skip_bad_images,
                      drop_empty_classes=config.drop_empty_classes)
    return record


def data_checks(run):
    """What the one pass over an image folder left out, for results.json ({} otherwise):
    `skipped_images` (count) and `skipped` ([file, reason] pairs, --skip_bad_images),
    `dropped_classes` (--drop_empty_classes)."""
    config = run.config
    spec = catalog.spec(config.dataset, config.data_dir, config.download)
    checks = {}
    if spec.skipped:
        checks.update(skipped_images=len(spec.skipped),
                      skipped=[list(entry) for entry in spec.skipped])
    if spec.dropped_classes:
        checks["dropped_classes"] = list(spec.dropped_classes)
    return {"data_checks": checks} if checks else {}
