"""Input pipeline images/s against the model's consumption rate (training images/s).

Issue 7's benchmark. The pipelines are bnreg's own `Preprocessing.train` maps (the code
`data.pipeline.train_dataset` runs), over in-memory uint8 images in tf.data with AUTOTUNE
parallelism: CIFAR crop+flip at 32 px for WRN-16-4, the EfficientNet reference preprocessing with
RandAugment (N=2, M=10) at 224 px for EfficientNet-B0. A pipeline faster than its model's
consumption keeps the model fed; the ratio says by how much.
"""
import numpy as np
import tensorflow as tf

import efficientnet
from bnreg_tf.run import models
from benchmarks.timing import interleaved_throughput, map_images_per_second
from bnreg_tf.run.presets import PRESETS
from bnreg_tf.run import inputs


def _pipeline_rate(preprocessing, images, count):
    seed = tf.constant(0, tf.int64)
    return map_images_per_second(
        images, lambda i, image: preprocessing.train(image, tf.stack([seed, i])), count)


def rows(batch_size=32, steps=5, count=640, seed=0):
    """Yields `(pipeline, pipeline images/s, model, model images/s, ratio)` rows."""
    rng = np.random.default_rng(seed)
    cifar = PRESETS["wrn28_10_cifar10"].replace(model_dir="-")
    prep = inputs.preprocessing_for(cifar, 32)
    images = rng.integers(0, 256, size=(256, 32, 32, 3), dtype=np.uint8)
    rate = _pipeline_rate(prep, images, count)
    model = models.build("wrn16_4", num_classes=10)
    consumed = interleaved_throughput([model], batch_size, 10, steps, rounds=1)[0]
    yield "CIFAR crop+flip, 32 px", rate, "wrn16_4 train", consumed, rate / consumed
    b0 = PRESETS["efficientnet_b0_imagenet"].replace(model_dir="-")
    prep = inputs.preprocessing_for(b0, 224)
    images = rng.integers(0, 256, size=(32, 280, 320, 3), dtype=np.uint8)
    rate = _pipeline_rate(prep, images, count // 2)
    model = efficientnet.build_model("b0", num_classes=1000, input_shape=(224, 224, 3))
    consumed = interleaved_throughput([model], batch_size // 2, 1000, max(2, steps // 2),
                                      warmup=2, rounds=1)[0]
    yield "EfficientNet reference + RandAugment(2, 10), 224 px", rate, "efficientnet b0 train", \
        consumed, rate / consumed
