"""Issue 17's kernels against what they replace, each measured in the same process.

- KL standardization's moments and gradient: the fused batch-norm kernel
  (`penalties._fused_moments`, `_per_channel_affine`) vs the shifted sums and a broadcast
  multiply-add, graph mode, per activation shape;
- pointwise convolutions, forward plus both gradients: `tf.nn.conv2d` (oneDNN) vs the matmul
  `bnreg_tf.nn.conv.Conv2D` runs, for ResNet-50's pointwise shapes at 64 px, batch 32;
- SGD with momentum: a ResNet-50 training step with `keras.optimizers.SGD` vs the trainer's
  fused `bnreg_tf.run.optimizers.SGD` (alternating rounds, `timing.interleaved_throughput`).
"""
import time

import keras
import tensorflow as tf

from bnreg_tf.run import models
from benchmarks.timing import interleaved_throughput
from bnreg_tf.run import optimizers
from bnreg_tf.nn import penalties

MOMENT_SHAPES = ((32, 16, 16, 64), (32, 16, 16, 256), (32, 8, 8, 512), (32, 4, 4, 2048))
# (map side, C_in, C_out) of ResNet-50's pointwise convolutions at 64 px, stages 2-5.
POINTWISE = ((16, 64, 256), (16, 256, 64), (8, 128, 512), (8, 512, 128), (4, 256, 1024),
             (4, 1024, 256), (2, 512, 2048), (2, 2048, 512))


def _best_ms(function, *args, repeats=30, rounds=3):
    function(*args)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            result = function(*args)
        tf.nest.map_structure(lambda t: t.numpy(), result)
        best = min(best, (time.perf_counter() - start) / repeats * 1e3)
    return best


def moment_rows():
    """Yields `(shape, fused moments ms, shifted sums ms, fused affine ms, multiply-add ms)`."""
    def flat(x):
        return tf.reshape(x, (-1, x.shape[-1]))

    fused = tf.function(lambda x: penalties._fused_moments(flat(x)))
    shifted = tf.function(lambda x: penalties._shifted_moments(flat(x)))
    affine = tf.function(lambda x, a, b: penalties._per_channel_affine(flat(x), a, b))
    multiply_add = tf.function(lambda x, a, b: flat(x) * a + b)
    for shape in MOMENT_SHAPES:
        x = tf.random.normal(shape, seed=0) * 3 + 5
        a, b = tf.random.normal(shape[-1:], seed=1), tf.random.normal(shape[-1:], seed=2)
        yield (shape, _best_ms(fused, x), _best_ms(shifted, x), _best_ms(affine, x, a, b),
               _best_ms(multiply_add, x, a, b))


def pointwise_rows(batch_size=32):
    """Yields `(map side, C_in, C_out, conv GFLOP/s, matmul GFLOP/s)`, forward + both gradients."""
    for side, cin, cout in POINTWISE:
        x = tf.random.normal((batch_size, side, side, cin), seed=0)
        w = tf.Variable(tf.random.normal((1, 1, cin, cout), seed=1) * 0.01)

        def step(x, matmul):
            with tf.GradientTape() as tape:
                tape.watch(x)
                if matmul:
                    y = tf.reshape(tf.matmul(tf.reshape(x, (-1, cin)), w[0, 0]),
                                   (batch_size, side, side, cout))
                else:
                    y = tf.nn.conv2d(x, w, 1, "SAME")
                loss = tf.reduce_sum(y)
            return tape.gradient(loss, [x, w])

        gflop = 3 * 2 * batch_size * side * side * cin * cout / 1e9
        conv = _best_ms(tf.function(lambda x: step(x, False)), x)
        matmul = _best_ms(tf.function(lambda x: step(x, True)), x)
        yield side, cin, cout, gflop / conv * 1e3, gflop / matmul * 1e3


def sgd_rows(image_size=64, batch_size=32, steps=10):
    """Yields `(optimizer, images/s)` of one ResNet-50 (two identical copies) per optimizer."""
    shape = (image_size, image_size, 3)
    models = [models.build("resnet50", num_classes=1000, input_shape=shape, seed=0)
              for _ in range(2)]
    rates = interleaved_throughput(models, batch_size, 1000, steps,
                                   sgds=[keras.optimizers.SGD, optimizers.SGD])
    yield "keras.optimizers.SGD", rates[0]
    yield "bnreg_tf.run.optimizers.SGD (fused)", rates[1]
