"""Adaptive gradient clipping, unit-wise (AGC; Brock, De, Smith & Simonyan 2021b, section 4).

Each output unit's gradient is rescaled so that its norm is at most `clipping` times the norm of
that unit's weights (floored at `eps`, so zero-initialised weights can still move):

    g_i <- g_i                                           if ||g_i|| < clipping * max(||w_i||, eps)
    g_i <- g_i * clipping * max(||w_i||, eps) / max(||g_i||, 1e-6)     otherwise

as the reference (google-deepmind/deepmind-research `nfnets/agc_optax.py`, whose `1e-6` floor
on ||g_i|| only guards the division). A unit is one slice along the last axis of a kernel of
rank >= 2, with the norm taken over all other axes (Keras' Conv [kh, kw, C_in, C_out] and Dense
[in, out] layouts: the reference's HWIO / IO rule; for a rank-3 kernel, Conv1D's [k, C_in,
C_out], the norm is over k and C_in, where the reference's rule takes axis 0 only); a tensor with
at most one axis longer than 1 (a bias, a gain vector, a scalar) is one unit.

The paper does not clip the final linear layer (section 4); its reference
(`nfnets/experiment_nfnets.py`) leaves out that layer's weight only and clips its bias with the
gains and biases. `bnreg_tf.run.training.Classifier(agc=...)` does the same (revision 1 left out
the bias too; docs/references.md §6.8) on the all-reduced gradient of the global batch, since
the clipping is not linear, and adds the weight decay's gradient after clipping, as the
reference's `SGD_AGC` (`nfnets/optim.py`).
"""
from keras import ops

GRADIENT_FLOOR = 1e-6


def unitwise_norm(x):
    """Norms of the output units of `x`, broadcastable against `x` (module docstring)."""
    x = ops.convert_to_tensor(x)
    if sum(int(d) > 1 for d in x.shape) <= 1:
        return ops.sqrt(ops.sum(ops.square(x)))
    return ops.sqrt(ops.sum(ops.square(x), axis=tuple(range(len(x.shape) - 1)), keepdims=True))


def clip_gradient(gradient, weight, clipping=0.01, eps=1e-3):
    """One variable's gradient, clipped unit-wise against `weight` (float32 arithmetic)."""
    dtype = gradient.dtype
    gradient = ops.cast(gradient, "float32")
    weight = ops.cast(weight, "float32")
    max_norm = clipping * ops.maximum(unitwise_norm(weight), eps)
    grad_norm = unitwise_norm(gradient)
    clipped = gradient * (max_norm / ops.maximum(grad_norm, GRADIENT_FLOOR))
    return ops.cast(ops.where(grad_norm < max_norm, gradient, clipped), dtype)


def clip_gradients(gradients, variables, clipping=0.01, eps=1e-3):
    """`gradients` (one per variable, None kept as None) clipped unit-wise against `variables`."""
    if clipping <= 0:
        raise ValueError(f"clipping must be > 0, got {clipping!r}")
    return [None if g is None else clip_gradient(g, v, clipping, eps)
            for g, v in zip(gradients, variables)]
