"""A run's data: its plan (dataset spec and splits), its preprocessing, and its tf.data streams,
from the RunConfig to the data floor's explicit arguments (`bnreg_tf.data`).

The preprocessing follows the model and the data: EfficientNet on colour data, and
`--augment=randaugment`, use the reference pipeline with ImageNet's statistics
(docs/references.md §5.11); everything else, EfficientNet on grey images included, the
dataset's own augmentation and statistics: the paper's datasets' published values, any other
dataset's computed once from its training split and kept in `<model_dir>/normalization.json`.
From revision 2, ImageNet is read as JPEG bytes and each crop decodes its window alone, as the
reference (`reads_jpeg_bytes`; `bnreg_tf.data.preprocessing`); other data is read decoded.
"""
import json
import os

from bnreg_tf.data import catalog, pipeline
from bnreg_tf.data.preprocessing import Preprocessing
from bnreg_tf.data.spec import IMAGENET_NORMALIZATION
from bnreg_tf.files import write_atomically
from bnreg_tf.run import layout
from bnreg_tf.run.models import model_entry

STATS_EXAMPLES = 50_000   # at most this many training images are read for the statistics


def plan(config):
    """`(DatasetSpec, Splits)` of the run (`catalog.plan`, the one data planner)."""
    return catalog.plan(config.dataset, config.data_dir, config.download, config.holdout,
                        config.holdout_examples, config.holdout_fraction)


def reads_jpeg_bytes(config):
    """Whether the run reads its images as JPEG bytes: data stored as JPEG files (ImageNet,
    `DatasetSpec.encoded_jpeg`), from revision 2 (`bnreg_tf.nn.revisions`)."""
    if config.model_revision < 2 or config.dataset not in catalog.DATASETS:
        return False
    return catalog.DATASETS[config.dataset].encoded_jpeg


def load(config, split):
    """The unbatched `{"image", "label"}` examples of `split` of the run's dataset (the images as
    JPEG bytes where `reads_jpeg_bytes`)."""
    return catalog.load(config.dataset, split, config.data_dir, config.download,
                        encoded=reads_jpeg_bytes(config))


def preprocessing_for(config, image_size, spec=None, splits=None):
    """The resolved `Preprocessing` of a run (module docstring)."""
    if spec is None or splits is None:
        spec, splits = plan(config)
    augment = config.augment
    reference = model_entry(config.model).family == "efficientnet" and spec.channels == 3
    if augment == "auto":
        augment = "randaugment" if reference else spec.augment
    if reference or augment == "randaugment":
        eval_kind = "efficientnet"
        mean, std = IMAGENET_NORMALIZATION
    else:
        eval_kind = "goyal" if augment == "goyal" else "plain"
        mean, std = spec.normalization or normalization_stats(config, spec, splits.train)
    return Preprocessing(augment, eval_kind, image_size, tuple(mean), tuple(std),
                         (config.randaugment_layers, config.randaugment_magnitude,
                          config.randaugment_variant), config.eval_crop)


def normalization_stats(config, spec, train_split):
    """Per-channel `(mean, std)` of the training split's pixels (0..255), computed once per run.

    Kept in `<model_dir>/normalization.json` with the dataset and split it was computed on, and
    read back from there (resumes and exports use the same numbers, even if the data changes);
    at most the first `STATS_EXAMPLES` images are read.
    """
    key = {"dataset": config.dataset, "data_dir": os.path.abspath(config.data_dir or ""),
           "split": train_split}
    path = os.path.join(config.model_dir, layout.NORMALIZATION) if config.model_dir else ""
    if path and os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if {k: stored.get(k) for k in key} == key:
            return tuple(stored["mean"]), tuple(stored["std"])
    mean, std, images = pipeline.pixel_statistics(load(config, train_split), spec.channels,
                                                  STATS_EXAMPLES)
    if path:
        write_atomically(path, json.dumps({**key, "mean": mean, "std": std, "examples": images},
                                          indent=2) + "\n")
    return tuple(mean), tuple(std)


def train_dataset(config, preprocessing, split, steps_per_epoch, batch_size, start_step=0,
                  context=None):
    """The run's training batches (`pipeline.train_dataset`) from `start_step`."""
    return pipeline.train_dataset(load(config, split), preprocessing, config.seed, config.epochs,
                                  steps_per_epoch, batch_size, start_step, context)


def eval_dataset(config, preprocessing, split, batch_size, limit=None):
    """Batches of `split` with the eval transform (`pipeline.eval_dataset`)."""
    return pipeline.eval_dataset(load(config, split), preprocessing, batch_size, limit)
