"""Shared measurement helpers: training-step throughput, analytic FLOPs, matmul peak."""
import contextlib
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from bnreg_tf.nn import batchnorm, conv
from bnreg_tf.run.strategies import choose_jit_compile
from bnreg_tf.run import optimizers


def conv_dense_flops(model):
    """Forward multiply-add FLOPs (2 per MAC) of the Conv, DepthwiseConv and Dense layers."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, channels, multiplier = layer.kernel.shape
            out = layer.output.shape
            total += 2 * kh * kw * channels * multiplier * out[1] * out[2]
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            out = layer.output.shape
            total += 2 * kh * kw * cin * cout * out[1] * out[2]
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            spatial = int(np.prod(layer.output.shape[1:-1])) if len(layer.output.shape) > 2 else 1
            total += 2 * cin * cout * spatial
    return total


def matmul_peak_gflops(n=2048, repeats=20):
    """Measured float32 matmul GFLOP/s of this machine (best of `repeats`: a peak)."""
    a = tf.random.normal((n, n))
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).numpy()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / np.min(times) / 1e9


def targets(model, labels):
    """`(y, loss)` for `model.compile`/`fit`: bnreg's models output a dict with `logits`."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(model.output, dict):
        return {"logits": labels}, {"logits": loss}
    return labels, loss


class _StepClock(keras.callbacks.Callback):
    """The wall-clock time at the end of each `model.fit` step.

    Keras converts the step's logs to Python numbers before it calls `on_train_batch_end`
    (this callback is not async-safe), so each time is taken after the step has finished.
    """

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


class FitLoop:
    """`model` compiled with SGD (lr 0.01, momentum 0.9) and trained in `model.fit` on one
    fixed random batch: the loop `bnreg-train` runs, with Keras' default `train_step` on the
    bare network (without the trainer's weight decay and finite-gradient check).

    `jit_compile=None` is bnreg's choice for the device (`choose_jit_compile`). The batch is
    a host tensor, copied to an accelerator in each step as an input pipeline's would be.
    """

    def __init__(self, model, batch_size, num_classes, seed=0, sgd=optimizers.SGD,
                 jit_compile=None):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(batch_size, *model.input_shape[1:])).astype(np.float32)
        y, loss = targets(model, rng.integers(0, num_classes, batch_size))
        model.compile(sgd(0.01, momentum=0.9), loss=loss,
                      jit_compile=choose_jit_compile() if jit_compile is None else jit_compile)
        self.model, self.batch_size = model, batch_size
        self.data = tf.data.Dataset.from_tensors((x, y)).repeat()
        self.clock = _StepClock()

    def losses(self, steps):
        """The loss of each of the next `steps` steps (one per epoch: Keras resets its loss
        metric at each epoch), all on the same batch."""
        history = self.model.fit(self.data, epochs=steps, steps_per_epoch=1, verbose=0,
                                 shuffle=False)
        return tuple(float(value) for value in history.history["loss"])

    def median_step_seconds(self, steps):
        """The median wall time of `steps` steps, from one step's end to the next."""
        self.model.fit(self.data, epochs=1, steps_per_epoch=steps + 1, verbose=0,
                       callbacks=[self.clock], shuffle=False)
        return float(np.median(np.diff(self.clock.ends)))


def interleaved_throughput(models, batch_size, num_classes, steps=10, warmup=3, rounds=3, seed=0,
                           sgds=None):
    """Images/s of each model's training step, measured in alternating rounds.

    Each model trains with SGD with momentum 0.9 in a `FitLoop`: bnreg's fused
    `optimizers.SGD` (what the trainer uses) unless `sgds` gives each model its own class
    (`keras.optimizers.SGD` for a model a user would train with Keras' optimizer).
    """
    sgds = sgds or [optimizers.SGD] * len(models)
    loops = [FitLoop(model, batch_size, num_classes, seed, sgd) for model, sgd in zip(models, sgds)]
    return interleaved_rates(loops, steps, warmup, rounds)


def interleaved_rates(loops, steps=10, warmup=3, rounds=3):
    """Images/s of each `FitLoop`'s training step, measured in alternating rounds.

    Steps run in `model.fit`, timed from one step's end to the next (`_StepClock`). Not
    `train_on_batch`, which resets every metric on each call: 12 ms of Python per step for a
    ResNet-50 with KL standardization's 53 per-layer metrics, which `fit` does once per epoch
    (BUILD_NOTES, "Issue 17, fourth run").

    Each round times `steps` steps of every loop in turn (median step); a loop's result is
    its best round. Alternating keeps a slow phase of a shared machine from landing on one
    model only, which made single back-to-back measurements here swing by +-25%.
    """
    for loop in loops:
        loop.median_step_seconds(max(1, warmup))
    best = [float("inf")] * len(loops)
    for _ in range(rounds):
        for i, loop in enumerate(loops):
            best[i] = min(best[i], loop.median_step_seconds(steps))
    return [loop.batch_size / seconds for loop, seconds in zip(loops, best)]


@contextlib.contextmanager
def keras_layers():
    """Builders inside make `keras.layers.BatchNormalization` and `keras.layers.Conv2D`
    (bnreg's models before issue 17)."""
    fused, pointwise = batchnorm.BatchNormalization, conv.Conv2D
    batchnorm.BatchNormalization, conv.Conv2D = keras.layers.BatchNormalization, keras.layers.Conv2D
    try:
        yield
    finally:
        batchnorm.BatchNormalization, conv.Conv2D = fused, pointwise


@contextlib.contextmanager
def dtype_policy(name):
    """Models built inside use the Keras dtype policy `name` (e.g. `mixed_bfloat16`)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def map_images_per_second(images, augment, count):
    """Images/s of `augment(index, image)` mapped over uint8 `images` in tf.data (AUTOTUNE
    parallelism, batches of 32, one warm-up batch)."""
    dataset = (tf.data.Dataset.from_tensor_slices(images).repeat()
               .enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(32).prefetch(tf.data.AUTOTUNE))
    iterator = iter(dataset)
    next(iterator)
    batches = max(1, count // 32)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * 32 / (time.perf_counter() - start)


def machine():
    """One line describing where the numbers were taken."""
    import os

    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU" if gpus else "CPU only"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, "
            f"TF {tf.__version__}, Keras {keras.__version__}, jit_compile={choose_jit_compile()}")
