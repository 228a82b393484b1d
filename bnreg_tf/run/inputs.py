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
import os

from bnreg_tf.data import catalog, pipeline
from bnreg_tf.data.preprocessing import Preprocessing
from bnreg_tf.data.spec import IMAGENET_NORMALIZATION
from bnreg_tf.run import layout, normalization
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


def preprocessing_for(config, image_size, spec=None, splits=None, log=print):
    """The resolved `Preprocessing` of a run (module docstring); `log` gets the line of a
    normalization.json rebuilt."""
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
        mean, std = spec.normalization or normalization_stats(config, spec, splits.train, log)
    return Preprocessing(augment, eval_kind, image_size, tuple(mean), tuple(std),
                         (config.randaugment_layers, config.randaugment_magnitude,
                          config.randaugment_variant), config.eval_crop)


def normalization_stats(config, spec, train_split, log=print):
    """Per-channel `(mean, std)` of the training split's pixels (0..255), computed once per run.

    Kept in `<model_dir>/normalization.json` with the dataset and split it was computed on, a
    check (the statistics of the first `CHECK_EXAMPLES` images) and a sha256 of the rest, and
    read back from there (resumes and exports use the same numbers); at most the first
    `STATS_EXAMPLES` images are read. Read back, the file is checked (`normalization`): one
    that is not what bnreg wrote (garbage, a list, no std, std below 1, NaN, the wrong length,
    edited values) is recomputed with a line while the run has no checkpoint, and refused (one
    line, ConfigError) once checkpoints were trained with it; the check is recomputed from the
    data and a mismatch (the data changed) is refused too.
    """
    key = {"dataset": config.dataset, "data_dir": os.path.abspath(config.data_dir or ""),
           "split": train_split}
    path = os.path.join(config.model_dir, layout.NORMALIZATION) if config.model_dir else ""

    def statistics(limit):
        return pipeline.pixel_statistics(load(config, train_split), spec.channels, limit)

    stored = normalization.read(path, key, spec.channels, statistics, log) if path else None
    if stored is not None:
        return tuple(stored["mean"]), tuple(stored["std"])
    mean, std, images = statistics(STATS_EXAMPLES)
    if path:
        normalization.write(path, key, mean, std, images, statistics)
    return tuple(mean), tuple(std)


def train_dataset(config, preprocessing, split, steps_per_epoch, batch_size, start_step=0,
                  context=None):
    """The run's training batches (`pipeline.train_dataset`) from `start_step`."""
    return pipeline.train_dataset(load(config, split), preprocessing, config.seed, config.epochs,
                                  steps_per_epoch, batch_size, start_step, context)


def eval_dataset(config, preprocessing, split, batch_size, limit=None):
    """Batches of `split` with the eval transform (`pipeline.eval_dataset`)."""
    return pipeline.eval_dataset(load(config, split), preprocessing, batch_size, limit)
