"""tf.data pipelines: deterministic per-epoch order, per-replica batches, the eval batches, the
raw batches a SavedModel's serving signature takes, and per-channel pixel statistics.

Training order is a function of (seed, epoch, step) only: epoch e shuffles with seed (seed, e) and
every example's augmentation seed is (seed, e, index), so a run restarted at step s rebuilds the
exact stream from s (`start_step`) instead of replaying it.
"""
import tensorflow as tf

from bnreg_tf.data import catalog
from bnreg_tf.data.spec import DataError

SHUFFLE_BUFFER = 16_384


def pixel_statistics(examples, channels, max_examples=50_000):
    """Per-channel `(mean, std, images)` of the pixels of the first `max_examples` images of
    `examples` (unbatched `{"image", "label"}`), on the 0..255 scale, in float64; a constant
    channel gets std 1 (never a division by zero). DataError when there is no image."""

    def moments(example):
        pixels = tf.reshape(tf.cast(example["image"], tf.float64), [-1, channels])
        return (tf.reduce_sum(pixels, 0), tf.reduce_sum(tf.square(pixels), 0),
                tf.cast(tf.shape(pixels)[0], tf.float64), tf.constant(1, tf.int64))

    zeros = tf.zeros([channels], tf.float64)
    total, squares, count, images = examples.take(max_examples).map(
        moments, num_parallel_calls=tf.data.AUTOTUNE).reduce(
        (zeros, zeros, tf.constant(0.0, tf.float64), tf.constant(0, tf.int64)),
        lambda state, item: tuple(a + b for a, b in zip(state, item)))
    if float(count) == 0:
        raise DataError("the training split is empty")
    mean = (total / count).numpy()
    std = (tf.sqrt(tf.maximum(squares / count - mean**2, 0.0))).numpy()
    return ([float(m) for m in mean], [max(float(s), 1.0) for s in std], int(images))


def train_dataset(examples, preprocessing, seed, epochs, steps_per_epoch, batch_size,
                  start_step=0, context=None):
    """`(images, labels)` batches of `batch_size` (per replica) of the training `examples`
    (unbatched `{"image", "label"}`, `catalog.load`) for a run of `epochs` from `start_step`.

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
    epochs = range(start_epoch, max(start_epoch + 1, epochs))
    base = examples.enumerate()

    def epoch(e):
        examples = base.shuffle(min(SHUFFLE_BUFFER, per_epoch), seed=seed * 1_000_003 + e,
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
    seed_tensor = tf.constant(seed, tf.int64)

    def augment(e, index, example):
        example_seed = tf.stack([seed_tensor, e * 2**32 + index])
        return preprocessing.train(example["image"], example_seed), example["label"]

    stream = stream.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return stream.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(examples, preprocessing, batch_size, limit=None):
    """`(images, labels)` batches of `examples` (unbatched, `catalog.load`) in file order, eval
    transform, last batch kept."""
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
