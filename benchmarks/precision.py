"""Training-step throughput in float32 vs `mixed_bfloat16` (issue 17: precision measured).

Each model is built twice, under the `float32` and the `mixed_bfloat16` Keras dtype policy
(what `--precision` sets), and both are timed in alternating rounds in the same run
(`timing.interleaved_throughput`). `loss_curves` trains WRN-16-4 for a few steps from the same
weights on the same batches in both precisions, for the "does the loss agree" half of the
question.
"""
import numpy as np

import efficientnet
from bnreg_tf.run import models
from benchmarks.timing import dtype_policy, interleaved_throughput

POLICIES = ("float32", "mixed_bfloat16")


def _models(image_size):
    return (
        ("resnet50", f"{image_size} px", 1000, lambda: models.build(
            "resnet50", num_classes=1000, input_shape=(image_size, image_size, 3))),
        ("wrn16_4", "32 px", 10, lambda: models.build("wrn16_4", num_classes=10)),
        ("efficientnet b0", f"{image_size} px", 1000, lambda: efficientnet.build_model(
            "b0", num_classes=1000, input_shape=(image_size, image_size, 3))),
    )


def rows(image_size=64, batch_size=32, steps=10):
    """Yields `(model, float32 images/s, mixed_bfloat16 images/s, speed-up)` rows."""
    for name, size, classes, build in _models(image_size):
        models = []
        for policy in POLICIES:
            with dtype_policy(policy):
                models.append(build())
        rates = interleaved_throughput(models, batch_size, classes, steps)
        yield f"{name} ({size})", rates[0], rates[1], rates[1] / rates[0]


def loss_curves(steps=30, batch_size=32, seed=0):
    """WRN-16-4 training losses per step in each policy: same init, batches and SGD recipe."""
    import keras

    rng = np.random.default_rng(seed)
    images = rng.normal(size=(4 * batch_size, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, 4 * batch_size)
    images += labels[:, None, None, None] * 0.1  # a learnable signal
    batches = [slice(i * batch_size, (i + 1) * batch_size) for i in range(4)]
    curves = {}
    for policy in POLICIES:
        with dtype_policy(policy):
            model = models.build("wrn16_4", num_classes=10, seed=seed)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
        curves[policy] = [float(model.train_on_batch(images[batches[i % 4]],
                                                     {"logits": labels[batches[i % 4]]}))
                          for i in range(steps)]
    return curves
