"""Scores an exported SavedModel the way the paper does (section 4, Tables 2-3; docs/references.md §2.2).

- clean accuracy on a split, through the export's own `serve` signature (raw uint8 images);
- accuracy under test-time Dropout: each embedding is multiplied by a Bernoulli(1 - p) mask /
  (1 - p) and classified by the export's `classify_embedding`, averaged over `draws` masks; the
  drop is clean accuracy minus that average (paper Table 3, p = 0.5);
- mean squared norms of the embedding and of the logits (E||Emb||^2, E||NN||^2);
- CIFAR-10-C: accuracy on each of the 15 corruptions x 5 severities and their mean.
"""
import os

import numpy as np
import tensorflow as tf

from bnreg_tf.data import catalog, pipeline
from bnreg_tf.run import export_record, layout
from bnreg_tf.run.config import ConfigError


def load_saved_model(path):
    """The loaded export; ConfigError (one line) if `path` is not a readable bnreg SavedModel."""
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ConfigError(f"--saved_model={path}: not a SavedModel directory (no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # corrupt protobuf, missing variables, ...
        detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ConfigError(f"--saved_model={path}: cannot be loaded ({detail})") from None
    missing = [name for name in ("serve", "classify_embedding") if not hasattr(loaded, name)]
    if missing:
        raise ConfigError(f"--saved_model={path}: lacks the {', '.join(missing)} endpoint(s) of a "
                          "bnreg export (made by bnreg-train)")
    return loaded


def dataset_record(path):
    """The export's `dataset.json` (dataset, data_dir, splits, class names), or {} if absent;
    checked as bnreg-train writes it (`export_record.read`: one line otherwise)."""
    return export_record.read(path)


def input_spec(loaded):
    """The `TensorSpec` of the images the export's `serve` signature takes (uint8
    [B, H, W, C])."""
    signature = loaded.signatures.get("serve") or loaded.signatures.get("serving_default")
    if signature is None:
        return None
    _, inputs = signature.structured_input_signature
    return next(iter(inputs.values()), None)


def check_data_fits(loaded, saved_model, dataset, spec):
    """ConfigError (one line) unless the images of `dataset` (its DatasetSpec `spec`) have the
    rank and channels of the export's `serve` signature; checked before any image is scored."""
    expected = input_spec(loaded)
    if expected is None or expected.shape.rank != 4:
        raise ConfigError(f"--saved_model={saved_model}: its serve signature does not take "
                          "[batch, height, width, channels] images (not a bnreg export)")
    channels = expected.shape[-1]
    if channels is not None and channels != spec.channels:
        kinds = {1: "grey", 3: "RGB"}
        raise ConfigError(f"--dataset={dataset}: its images have {spec.channels} channel"
                          f"{'s' if spec.channels != 1 else ''} ({kinds.get(spec.channels, '?')})"
                          f", the SavedModel takes {channels} ({kinds.get(channels, '?')}: "
                          f"uint8 [batch, height, width, {channels}]); score it on data like "
                          "the data it was trained on")


def split_to_score(dataset, data_dir, record, holdout=False):
    """The split bnreg-eval scores: the run's own test (or holdout) split when `dataset` is the
    one it trained on (checked against the dataset's splits), else that dataset's test split
    (holdout) as bnreg-train plans it."""
    role = "validation" if holdout else "test"
    if record.get("dataset") == dataset and record.get("splits", {}).get(role):
        export_record.check_split(catalog.spec(dataset, data_dir), record["splits"][role],
                                  f"{layout.DATASET_RECORD} of the export")
        return record["splits"][role]
    spec = catalog.spec(dataset, data_dir)
    splits = catalog.plan_splits(spec, True)
    split = splits.validation if holdout else splits.test
    if split is None:
        raise ConfigError(f"--holdout: {dataset} has no holdout split")
    return split


def score(loaded, batches, dropout_rate=0.5, draws=5, seed=0):
    """Accuracy, test-time-dropout accuracy and norms of `loaded` over `(images, labels)` batches."""
    keep = 1.0 - dropout_rate
    correct, dropout_correct, count = 0, np.zeros(draws), 0
    embedding_sq, output_sq = 0.0, 0.0
    for index, (images, labels) in enumerate(batches):
        outputs = loaded.serve(images)
        logits = outputs["logits"].numpy().astype(np.float64)
        embedding = outputs["embedding"]
        labels = labels.numpy().reshape(-1)
        correct += int(np.sum(np.argmax(logits, axis=1) == labels))
        count += len(labels)
        embedding_sq += float(np.sum(np.square(embedding.numpy().astype(np.float64))))
        output_sq += float(np.sum(np.square(logits)))
        for draw in range(draws):
            mask = tf.cast(tf.random.stateless_uniform(tf.shape(embedding), [seed, index * draws + draw])
                           < keep, tf.float32)
            dropped = loaded.classify_embedding(embedding * mask / keep)["logits"].numpy()
            dropout_correct[draw] += int(np.sum(np.argmax(dropped, axis=1) == labels))
    if count == 0:
        raise ConfigError("the evaluation split is empty")
    accuracy = correct / count
    dropout_accuracy = float(np.mean(dropout_correct / count)) if draws else float("nan")
    return {"examples": count, "accuracy": accuracy,
            "dropout_rate": dropout_rate, "dropout_draws": draws,
            "dropout_accuracy": dropout_accuracy, "dropout_drop": accuracy - dropout_accuracy,
            "embedding_norm_sq": embedding_sq / count, "output_norm_sq": output_sq / count}


def cifar10_c(loaded, data_dir="", batch_size=256, limit=None, download=False):
    """`{"mean": ..., "table": {corruption: {severity: accuracy}}}` over CIFAR-10-C."""
    table = {}
    for corruption in catalog.CIFAR10_CORRUPTIONS:
        table[corruption] = {}
        for severity in catalog.SEVERITIES:
            batches = pipeline.raw_dataset(f"cifar10_corrupted/{corruption}_{severity}", "test",
                                           data_dir, download, batch_size, limit)
            correct = count = 0
            for images, labels in batches:
                predicted = np.argmax(loaded.serve(images)["logits"].numpy(), axis=1)
                correct += int(np.sum(predicted == labels.numpy()))
                count += int(labels.shape[0])
            table[corruption][severity] = correct / max(count, 1)
    values = [v for row in table.values() for v in row.values()]
    return {"mean": float(np.mean(values)), "table": table}


def format_report(results):
    """Markdown tables of `results` as bnreg-eval prints them."""
    lines = ["| split | examples | accuracy | dropout acc (p=%.1f) | drop | E‖Emb‖² | E‖NN‖² |"
             % results["dropout_rate"], "|---|---:|---:|---:|---:|---:|---:|",
             f"| {results['split']} | {results['examples']} | {results['accuracy']:.4f} | "
             f"{results['dropout_accuracy']:.4f} | {results['dropout_drop']:+.4f} | "
             f"{results['embedding_norm_sq']:.4g} | {results['output_norm_sq']:.4g} |"]
    corrupted = results.get("cifar10_c")
    if corrupted:
        lines += ["", f"CIFAR-10-C mean accuracy: {corrupted['mean']:.4f}", "",
                  "| corruption | " + " | ".join(f"s{s}" for s in catalog.SEVERITIES) + " |",
                  "|---|" + "---:|" * len(catalog.SEVERITIES)]
        for corruption, row in corrupted["table"].items():
            lines.append(f"| {corruption} | " + " | ".join(
                f"{row[s]:.4f}" for s in catalog.SEVERITIES) + " |")
    return "\n".join(lines)
