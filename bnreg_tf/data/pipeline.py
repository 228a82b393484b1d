"""tf.data pipelines: per-recipe augmentation, deterministic per-epoch order, per-replica batches.

Augmentations (REFERENCE.md sections 3 and 5):
- `crop_flip` / `crop`: 4-px zero pad and random 32x32 crop (+ horizontal flip) for CIFAR / SVHN;
- `goyal`: random-resized crop (area 0.08..1, aspect 3/4..4/3) + flip; eval resize of the shorter
  side to size * 256/224 then centre crop (Goyal et al.);
- `randaugment` and every EfficientNet run: `efficientnet.preprocess` (reference crop, bicubic
  resize, flip, RandAugment; eval centre crop 0.875);
- `none`: resize only when the resolution differs.
Pixels are then normalised by the dataset's per-channel mean/std (0..255 scale), the same
function the SavedModel export bakes in: the paper's datasets' published values, any other
dataset's computed once from its training split and kept in `<model_dir>/normalization.json`.

Training order is a function of (seed, epoch, step) only: epoch e shuffles with seed (seed, e) and
every example's augmentation seed is (seed, e, index), so a run restarted at step s rebuilds the
exact stream from s (`start_step`) instead of replaying it.
"""
import dataclasses

import tensorflow as tf

from bnreg_tf.data import catalog

# Per-channel mean and std of the training images, on the 0..255 scale (the paper's datasets;
# any other dataset's are computed from its training split, `normalization_stats`).
NORMALIZATION = {name: spec.normalization for name, spec in catalog.DATASETS.items()}
STATS_FILE = "normalization.json"
STATS_EXAMPLES = 50_000   # at most this many training images are read for the statistics
GOYAL_RESIZE_RATIO = 256 / 224
SHUFFLE_BUFFER = 16_384


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What turns a uint8 image into a network input: the augmentation and the eval transform."""

    augment: str          # none, crop, crop_flip, goyal, randaugment (resolved, never "auto")
    eval_kind: str        # plain, goyal or efficientnet
    image_size: int
    mean: tuple
    std: tuple
    randaugment: tuple = ()   # (num_layers, magnitude, variant) when augment == "randaugment"

    def normalize(self, image):
        image = tf.cast(image, tf.float32)
        return (image - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    def train(self, image, seed):
        """uint8 [H, W, C] -> float32 [S, S, C]; `seed` a [2] int64 tensor."""
        size = self.image_size
        if self.augment == "randaugment" or self.eval_kind == "efficientnet":
            from efficientnet.input_pipeline import preprocess

            augment = ("randaugment", *self.randaugment) if self.augment == "randaugment" else None
            return preprocess(image, True, size, augment, seed)  # normalises with ImageNet's
        seeds = tf.random.experimental.stateless_split(seed, 2)
        if self.augment == "goyal":
            image = _random_resized_crop(image, size, seeds[0])
            image = tf.image.stateless_random_flip_left_right(image, seeds[1])
            return self.normalize(image)
        image = _resize_if_needed(image, size)
        if self.augment in ("crop", "crop_flip"):
            padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
            image = tf.image.stateless_random_crop(padded, tf.shape(image), seeds[0])
            if self.augment == "crop_flip":
                image = tf.image.stateless_random_flip_left_right(image, seeds[1])
        return self.normalize(image)

    def evaluate(self, image):
        """uint8 [H, W, C] -> float32 [S, S, C], deterministic."""
        size = self.image_size
        if self.eval_kind == "efficientnet":
            from efficientnet.input_pipeline import preprocess

            return preprocess(image, False, size)
        if self.eval_kind == "goyal":
            return self.normalize(_resize_and_center_crop(image, size))
        return self.normalize(_resize_if_needed(image, size))

    def evaluate_batch(self, images):
        """uint8 [B, H, W, C] -> float32 [B, S, S, C]; batched where the transform allows."""
        if self.eval_kind == "plain":
            images = tf.cast(images, tf.float32)
            if images.shape[1] != self.image_size or images.shape[2] != self.image_size:
                images = tf.image.resize(images, [self.image_size, self.image_size])
            return self.normalize(images)
        return tf.map_fn(self.evaluate, images,
                         fn_output_signature=tf.TensorSpec([self.image_size, self.image_size,
                                                            images.shape[-1]], tf.float32))


def _resize_if_needed(image, size):
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return tf.image.resize(image, [size, size])


def _random_resized_crop(image, size, seed):
    begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop)
    return tf.image.resize(image, [size, size])


def _resize_and_center_crop(image, size):
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = round(size * GOYAL_RESIZE_RATIO) / tf.reduce_min(shape)
    resized = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
    return tf.image.resize_with_crop_or_pad(resized, size, size)


def preprocessing_for(config, image_size, spec=None, splits=None):
    """The resolved `Preprocessing` of a run.

    EfficientNet runs on colour data, and `--augment=randaugment`, use the reference pipeline
    (ImageNet statistics); everything else, EfficientNet on grey images included, the dataset's
    own augmentation and statistics.
    """
    if spec is None or splits is None:
        spec, splits = catalog.plan_for(config)
    augment = config.augment
    efficientnet = config.family == "efficientnet" and spec.channels == 3
    if augment == "auto":
        augment = "randaugment" if efficientnet else spec.augment
    if efficientnet or augment == "randaugment":
        eval_kind = "efficientnet"
        mean, std = catalog.IMAGENET_NORMALIZATION
    else:
        eval_kind = "goyal" if augment == "goyal" else "plain"
        mean, std = spec.normalization or normalization_stats(config, spec, splits.train)
    return Preprocessing(augment, eval_kind, image_size, tuple(mean), tuple(std),
                         (config.randaugment_layers, config.randaugment_magnitude,
                          config.randaugment_variant))


def normalization_stats(config, spec, train_split):
    """Per-channel `(mean, std)` of the training split's pixels (0..255), computed once per run.

    Kept in `<model_dir>/normalization.json` with the dataset and split it was computed on, and
    read back from there (resumes and exports use the same numbers, even if the data changes);
    at most the first `STATS_EXAMPLES` images are read.
    """
    import json
    import os

    key = {"dataset": config.dataset, "data_dir": os.path.abspath(config.data_dir or ""),
           "split": train_split}
    path = os.path.join(config.model_dir, STATS_FILE) if config.model_dir else ""
    if path and os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if {k: stored.get(k) for k in key} == key:
            return tuple(stored["mean"]), tuple(stored["std"])
    examples = catalog.load(config.dataset, train_split, config.data_dir, config.download)

    def moments(example):
        pixels = tf.reshape(tf.cast(example["image"], tf.float64), [-1, spec.channels])
        return (tf.reduce_sum(pixels, 0), tf.reduce_sum(tf.square(pixels), 0),
                tf.cast(tf.shape(pixels)[0], tf.float64), tf.constant(1, tf.int64))

    zeros = tf.zeros([spec.channels], tf.float64)
    total, squares, count, images = examples.take(STATS_EXAMPLES).map(
        moments, num_parallel_calls=tf.data.AUTOTUNE).reduce(
        (zeros, zeros, tf.constant(0.0, tf.float64), tf.constant(0, tf.int64)),
        lambda state, item: tuple(a + b for a, b in zip(state, item)))
    if float(count) == 0:
        raise catalog.DataError(f"--dataset={config.dataset}: the training split is empty")
    mean = (total / count).numpy()
    std = (tf.sqrt(tf.maximum(squares / count - mean**2, 0.0))).numpy()
    std = [max(float(s), 1.0) for s in std]  # a constant channel must not divide by zero
    mean = [float(m) for m in mean]
    if path:
        from bnreg_tf.trainer import write_atomically

        write_atomically(path, json.dumps({**key, "mean": mean, "std": std,
                                           "examples": int(images)},
                                          indent=2) + "\n")
    return tuple(mean), tuple(std)


def train_dataset(config, preprocessing, split, steps_per_epoch, batch_size, start_step=0,
                  context=None):
    """`(images, labels)` batches of `batch_size` (per replica) for the run's steps from `start_step`.

    One global stream, the same on every worker: epoch e is `steps_per_epoch` global batches of a
    shuffle seeded by (seed, e) (a Python seed per epoch: tf.data takes no tensor seed), and each
    example's augmentation seed is (seed, e * 2^32 + index). Under a multi-worker `context`,
    worker w keeps every W-th example of that stream, so the examples of global step k are
    exactly those a single device would train on at step k, whatever the number of workers
    and replicas (each worker reads and shuffles the whole split; it augments only its own).
    """
    pipelines = context.num_input_pipelines if context else 1
    # This pipeline feeds every replica of its worker: a step takes one batch per replica.
    replicas = context.num_replicas_in_sync // pipelines if context else 1
    global_per_step = int(batch_size) * replicas * pipelines
    per_epoch = int(steps_per_epoch) * global_per_step
    start_epoch, skip_steps = divmod(int(start_step), int(steps_per_epoch))
    epochs = range(start_epoch, max(start_epoch + 1, config.epochs))
    base = catalog.load(config.dataset, split, config.data_dir, config.download).enumerate()

    def epoch(e):
        examples = base.shuffle(min(SHUFFLE_BUFFER, per_epoch), seed=config.seed * 1_000_003 + e,
                                reshuffle_each_iteration=False).repeat().take(per_epoch)
        if e == start_epoch and skip_steps:
            examples = examples.skip(skip_steps * global_per_step)
        return examples.map(lambda index, example: (tf.constant(e, tf.int64), index, example))

    choice = tf.data.Dataset.from_tensor_slices(tf.constant(
        [per_epoch - (skip_steps * global_per_step if e == start_epoch else 0) for e in epochs],
        tf.int64))
    choice = choice.enumerate().flat_map(
        lambda position, count: tf.data.Dataset.from_tensors(position).repeat(count))
    stream = tf.data.Dataset.choose_from_datasets([epoch(e) for e in epochs], choice)
    if pipelines > 1:
        stream = stream.shard(pipelines, context.input_pipeline_id)
    seed = tf.constant(config.seed, tf.int64)

    def augment(e, index, example):
        example_seed = tf.stack([seed, e * 2**32 + index])
        return preprocessing.train(example["image"], example_seed), example["label"]

    stream = stream.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return stream.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(config, preprocessing, split, batch_size, limit=None):
    """`(images, labels)` batches of `split` in file order, eval transform, last batch kept."""
    examples = catalog.load(config.dataset, split, config.data_dir, config.download)
    if limit:
        examples = examples.take(limit)
    examples = examples.map(lambda ex: (preprocessing.evaluate(ex["image"]), ex["label"]),
                            num_parallel_calls=tf.data.AUTOTUNE)
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def raw_dataset(name, split, data_dir="", download=False, batch_size=256, limit=None):
    """uint8 `(images, labels)` batches, as a SavedModel's serving signature takes them.

    Images of varying size (ImageNet, folders, ...) go one per batch (the export crops each).
    """
    examples = catalog.load(name, split, data_dir, download)
    if limit:
        examples = examples.take(limit)
    base = name.split("/")[0]
    if base in catalog.DATASETS and catalog.DATASETS[base].variable_size or \
            base not in catalog.DATASETS and "/" not in name and \
            catalog.spec(name, data_dir, download).variable_size:
        batch_size = 1
    return examples.map(lambda ex: (ex["image"], ex["label"])).batch(batch_size)
