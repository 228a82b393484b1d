"""TensorFlow-only fast paths of the building blocks (issue 17), imported only on the TensorFlow
backend and only when first used: every other module of `bnreg_tf.nn` imports Keras and NumPy
alone (the import contract `.importlinter` checks it).

- `fused_batch_norm`: a training-mode BatchNormalization as one `FusedBatchNormV3`
  (`bnreg_tf.nn.batchnorm`);
- `pointwise_convolution`: a 1x1 stride-1 convolution as one matmul (`bnreg_tf.nn.conv`);
- `standardization_kl`: the KL standardization loss with its closed-form gradient, its moments
  and its affine backward pass on the fused batch-norm kernel where that is exact and measured
  to pay (`bnreg_tf.nn.penalties`).
"""
import tensorflow as tf


def fused_batch_norm(layer, inputs):
    """`layer` (a Keras BatchNormalization) in training mode on 4-D channels-last `inputs`, as
    one FusedBatchNormV3; updates the moving statistics with Keras' arithmetic.

    Keras averages the BIASED batch variance (`tf.nn.moments`), whereas FusedBatchNormV3 in
    training returns the Bessel-corrected one, `n / (n - 1)` times it (n = batch x height x
    width); it is multiplied back by `(n - 1) / n`. The epsilon is passed unchanged (cuDNN 7.5+
    accepts any epsilon > 0).
    """
    channels = inputs.shape[-1]
    scale = layer.gamma if layer.scale else tf.ones((channels,), tf.float32)
    offset = layer.beta if layer.center else tf.zeros((channels,), tf.float32)
    outputs, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=tf.cast(scale, tf.float32), offset=tf.cast(offset, tf.float32),
        mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
        epsilon=layer.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
        is_training=True)
    shape = tf.shape(inputs)
    count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
    # The kernel's Bessel factor is n / max(n - 1, 1); undo it to get Keras' variance.
    variance = unbiased_variance * (tf.maximum(count - 1.0, 1.0) / count)
    # Keras' update, term for term: `moving * momentum + batch * (1 - momentum)`.
    moving_mean = tf.cast(layer.moving_mean, tf.float32)
    moving_variance = tf.cast(layer.moving_variance, tf.float32)
    layer.moving_mean.assign(moving_mean * layer.momentum + mean * (1.0 - layer.momentum))
    layer.moving_variance.assign(
        moving_variance * layer.momentum + variance * (1.0 - layer.momentum))
    return tf.cast(outputs, layer.compute_dtype)


def pointwise_convolution(inputs, kernel, filters):
    """A 1x1 stride-1 channels-last convolution as `[B*H*W, C_in] @ [C_in, C_out]`."""
    inputs = tf.convert_to_tensor(inputs)
    flat = tf.reshape(inputs, (-1, inputs.shape[-1]))
    outputs = tf.matmul(flat, tf.reshape(kernel, kernel.shape[2:]))
    return tf.reshape(outputs, tf.concat([tf.shape(inputs)[:-1], [filters]], 0))


def _use_fused_kernel():
    """Whether the KL's passes run as the fused batch-norm kernel: on CPU-only processes, outside
    XLA (decided when the function is traced).

    That is where it was measured to pay (issue 17). Under XLA the kernel is lowered to
    `E[x^2] - E[x]^2` in one pass (XLA's batch-norm expander), the cancellation the shifted sums
    avoid; on GPUs the float32 NHWC kernel is unmeasured here. Elsewhere the KL uses the shifted
    sums and a plain multiply-add (XLA fuses them).
    """
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return False
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:   # cannot tell whether XLA compiles this: take the path precise there
        return False
    return not control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _shifted_moments(flat):
    """Per-channel mean and biased variance of `flat` [N, C] in two independent sums, `sum(x)`
    and `sum((x - k)^2)`, about a shift `k`: the mean of the first 256 rows, without gradient,
    close enough to the mean that `E[(x-k)^2] - (mean-k)^2` does not cancel catastrophically in
    float32 (shifted-data variance, Chan, Golub & LeVeque 1983). Under XLA both sums fuse into
    one reduction."""
    n = tf.cast(tf.shape(flat)[0], tf.float32)
    shift = tf.stop_gradient(tf.reduce_mean(flat[:256], axis=0))
    mean = tf.reduce_sum(flat, axis=0) / n
    second = tf.reduce_sum(tf.square(flat - shift), axis=0) / n
    return mean, tf.maximum(second - tf.square(mean - shift), 0.0)


def _fused_batch_norm(flat, scale, offset, epsilon, training, mean=None, variance=None):
    """TensorFlow's fused batch-norm kernel (oneDNN on CPU, cuDNN on GPU) on `flat` [N, C].

    Viewed as NHWC [1, N, 1, C], which is the same memory. Returns the kernel's outputs.
    """
    channels = flat.shape[-1]
    empty = tf.zeros([0], tf.float32)
    return tf.raw_ops.FusedBatchNormV3(
        x=tf.reshape(flat, (1, -1, 1, channels)), scale=scale, offset=offset,
        mean=empty if mean is None else mean, variance=empty if variance is None else variance,
        epsilon=epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=training)


def _fused_moments(flat):
    """Per-channel mean and biased variance of `flat` [N, C] in float32, in one fused kernel.

    `FusedBatchNormV3` in training mode returns the batch mean and the Bessel-corrected batch
    variance (with `exponential_avg_factor=1` its running statistics are the batch's); times
    `(N - 1) / N` that is the biased variance. (Its `reserve_space_2` is not used: it holds the
    variance on CPU but the inverse standard deviation under cuDNN.) The kernel computes mean
    and variance in two passes, as precise as `moments` when a channel's mean dwarfs its
    spread (on CPU; not under XLA: `_use_fused_kernel`), and is 1.1-2x faster on this CPU
    than `_shifted_moments` (`python -m benchmarks.run --only kernels`; issue 17; the
    normalised output it also writes is unused).
    """
    channels = flat.shape[-1]
    _, mean, unbiased, _, _, _ = _fused_batch_norm(
        flat, tf.ones([channels]), tf.zeros([channels]), epsilon=1e-3, training=True)
    n = tf.cast(tf.shape(flat)[0], tf.float32)
    # One value per channel has variance 0 (whatever the kernel's n / (n - 1) made of it).
    return mean, tf.where(n > 1.0, unbiased * ((n - 1.0) / n), tf.zeros_like(unbiased))


def _per_channel_affine(flat, slope, offset):
    """`flat * slope + offset` per channel, as the fused kernel's inference pass (one read and one
    write of `flat`; 0.9-1.4x the broadcast multiply-add on this CPU, `benchmarks/kernels.py`).

    The kernel computes `scale * (x - 0) / sqrt(1 + eps) + offset`; cuDNN floors eps at 1e-5,
    so eps = 1e-3 is passed and the scale premultiplied by sqrt(1 + eps).
    """
    channels = flat.shape[-1]
    epsilon = 1e-3
    outputs = _fused_batch_norm(
        flat, slope * tf.sqrt(1.0 + epsilon), offset, epsilon=epsilon, training=False,
        mean=tf.zeros([channels]), variance=tf.ones([channels]))
    return tf.reshape(outputs[0], tf.shape(flat))


def standardization_kl(x, epsilon):
    """`bnreg_tf.nn.penalties.standardization_kl` on the TensorFlow backend: the same value and
    closed-form gradient; on a CPU-only process outside XLA the moments and the affine backward
    map run as the fused batch-norm kernel, one pass each way (issue 17), elsewhere as shifted
    sums and a multiply-add (`_use_fused_kernel`)."""
    x = tf.cast(x, tf.float32)
    fused = _use_fused_kernel()

    @tf.custom_gradient
    def kl(flat):
        mean, var = _fused_moments(flat) if fused else _shifted_moments(flat)
        n = tf.cast(tf.shape(flat)[0], tf.float32)
        value = 0.5 * tf.reduce_sum(tf.square(mean) + var - tf.math.log(var + epsilon) - 1.0)

        def grad(upstream):
            slope = upstream * (1.0 - 1.0 / (var + epsilon)) / n
            offset = upstream * mean / n - slope * mean
            return _per_channel_affine(flat, slope, offset) if fused else flat * slope + offset

        return value, grad

    return kl(tf.reshape(x, (-1, x.shape[-1])))
