"""The paper's penalties as pure functions on tensors (Dauphin & Cubuk 2021, sections 2-3;
docs/references.md §1), and the check every coefficient passes (`check_coefficient`).

All four reduce in float32 whatever the input dtype (mixed-precision activations included) and
use only `keras.ops`, on every Keras backend. The KL standardization loss has its closed-form
gradient on every backend: through `keras.ops.custom_gradient` off TensorFlow (issue 24), and
on the TensorFlow backend on TensorFlow's fused batch-norm kernel (`bnreg_tf.nn.tf_kernels`,
issue 17).
"""
import math

import keras
from keras import ops


def check_coefficient(value, name):
    """Returns `value` as a float, or raises if it is not a finite number >= 0."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


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


def standardization_kl(x, epsilon=1e-5):
    """KL standardization loss (Collins et al. 2019; paper section 2.2) of one layer.

    `1/2 * sum_c (mu_c^2 + s_c^2 - log(s_c^2 + epsilon) - 1)`: the KL divergence from the
    per-channel N(mu_c, s_c^2) to N(0, 1), with the batch moments BatchNorm would compute
    (over every axis but the last: batch and spatial axes of NHWC, batch of NC).
    Channels are SUMMED, as in the formula; `epsilon` keeps the log finite for dead channels
    (docs/references.md §1.4).

    The gradient is the closed form, one affine map per channel over `x`:
    `d/dx = mu / N + (1 - 1 / (s^2 + epsilon)) (x - mu) / N` (N values per channel), instead of
    autodiff's several passes back through the two reductions: on the TensorFlow backend on
    its fused batch-norm kernel (`bnreg_tf.nn.tf_kernels.standardization_kl`), elsewhere
    through `keras.ops.custom_gradient` (`_standardization_kl_closed_form`).
    """
    if keras.backend.backend() == "tensorflow":
        from bnreg_tf.nn import tf_kernels

        return tf_kernels.standardization_kl(x, epsilon)
    return _standardization_kl_closed_form(
        ops.reshape(ops.cast(x, "float32"), (-1, x.shape[-1])), float(epsilon))


def _standardization_kl_closed_form(flat, epsilon):
    """The KL of `flat` [N, C] (float32) with the closed-form gradient, in `keras.ops` alone.

    The moments are `keras.ops.moments` (two passes on JAX, `jnp.mean` and `jnp.var`, so a
    channel whose mean dwarfs its spread keeps its variance, as the TensorFlow path's fused
    kernel and shifted sums do). The gradient function takes the upstream gradient positionally
    (JAX, TensorFlow) or as `upstream=` (PyTorch), as `keras.ops.custom_gradient` documents.
    """

    @ops.custom_gradient
    def kl(flat):
        n = ops.cast(ops.shape(flat)[0], "float32")
        mean, var = ops.moments(flat, axes=[0])
        value = 0.5 * ops.sum(ops.square(mean) + var - ops.log(var + epsilon) - 1.0)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            slope = upstream * (1.0 - 1.0 / (var + epsilon)) / n
            return flat * slope + (upstream * mean / n - slope * mean)

        return value, grad

    return kl(flat)


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
