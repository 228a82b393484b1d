"""The paper's penalties as pure functions on tensors (Dauphin & Cubuk 2021, sections 2-3).

All four reduce in float32 whatever the input dtype (mixed-precision activations included).
EL2, FL2 and the Dropout penalty use only `keras.ops`; the KL standardization loss runs its
moments and closed-form gradient as TensorFlow's fused batch-norm kernel (issue 17).
"""
import tensorflow as tf
from keras import ops


def _flat_float32(x):
    x = ops.cast(x, "float32")
    return ops.reshape(x, (ops.shape(x)[0], -1))


def _mean_squared_norm_per_unit(x):
    x = _flat_float32(x)
    width = ops.cast(ops.shape(x)[1], "float32")
    return ops.mean(ops.sum(ops.square(x), axis=1)) / width


def embedding_l2(embedding):
    """Embedding L2, section 3: `E_batch ||Emb(x)||^2 / H`.

    `embedding` is [B, H] (any trailing shape is flattened into H, e.g. a keepdims pool).
    """
    return _mean_squared_norm_per_unit(embedding)


def functional_l2(logits):
    """Functional L2, section 3: `E_batch ||NN(x)||^2 / K` on the logits [B, K]."""
    return _mean_squared_norm_per_unit(logits)


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
    than `_shifted_moments` (`python -m benchmarks.run --only kernels`) (issue 17; the normalised output it also writes
    is unused).
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


def standardization_kl(x, epsilon=1e-5):
    """KL standardization loss (Collins et al. 2019; paper section 2.2) of one layer.

    `1/2 * sum_c (mu_c^2 + s_c^2 - log(s_c^2 + epsilon) - 1)`: the KL divergence from the
    per-channel N(mu_c, s_c^2) to N(0, 1), with the batch moments BatchNorm would compute
    (over every axis but the last: batch and spatial axes of NHWC, batch of NC).
    Channels are SUMMED, as in the formula; `epsilon` keeps the log finite for dead channels.

    The gradient is the closed form, one affine map per channel over `x`:
    `d/dx = mu / N + (1 - 1 / (s^2 + epsilon)) (x - mu) / N` (N values per channel), instead of
    autodiff's several passes back through the two reductions. On a CPU-only process outside
    XLA, the moments and that affine map run as TensorFlow's fused batch-norm kernel, one pass
    each way (issue 17); elsewhere as shifted sums and a multiply-add (`_use_fused_kernel`).
    """
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


def dropout_penalty(kernel, embedding):
    """The Dropout regulariser of the embedding (Wang & Manning 2013; paper section 3.2).

    `tr(W diag(E[e e^T]) W^T) = sum_j (sum_k W_kj^2) E[e_j^2]`, with `kernel` the Keras Dense
    kernel [H, K] (i.e. W^T). Inverted dropout of rate p on `e` adds exactly `p/(1-p)` times
    this to the expected squared error of the logits.
    """
    kernel = ops.cast(kernel, "float32")
    e = _flat_float32(embedding)
    column_norms = ops.sum(ops.square(kernel), axis=1)
    return ops.sum(column_norms * ops.mean(ops.square(e), axis=0))
