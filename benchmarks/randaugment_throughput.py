"""RandAugment images/s in a tf.data pipeline: ours (both variants) vs keras.layers.RandAugment.

Issue 4's benchmark, rerun for issue 16. Each pipeline runs per image inside `Dataset.map`
(AUTOTUNE parallelism) on the same uint8 images, then batch 32; images/s over `count` images
after one warm-up batch. The three pipelines are measured in alternating rounds and each keeps
its best round, so a slow phase of the shared machine does not land on one of them only.
Keras' layer has 11 ops and a factor in [0, 1] instead of M; it gets `factor = M / 30` (its
maximum at M = 30), so the comparison is at a comparable distortion strength, not the same
algorithm.
"""
import keras
import numpy as np
import tensorflow as tf

from benchmarks.timing import map_images_per_second
from efficientnet.augment_ops import randaugment


def rows(image_sizes=(224, 32), magnitudes=(10, 28), count=640, rounds=3, seed=0):
    """Yields `(image size, M, keras, reference, corrected images/s, reference / keras)` rows."""
    rng = np.random.default_rng(seed)
    for size in image_sizes:
        images = rng.integers(0, 256, size=(64, size, size, 3), dtype=np.uint8)
        for magnitude in magnitudes:
            layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2,
                                             factor=magnitude / 30, seed=seed)
            augments = [lambda i, im: tf.cast(layer(im), tf.uint8)] + [
                lambda i, im, v=variant: randaugment(
                    im, 2, magnitude, tf.stack([i, tf.constant(seed, tf.int64)]), v)
                for variant in ("reference", "corrected")]
            best = [0.0] * len(augments)
            for _ in range(rounds):
                for k, augment in enumerate(augments):
                    best[k] = max(best[k], map_images_per_second(images, augment, count))
            yield size, magnitude, *best, best[1] / best[0]
