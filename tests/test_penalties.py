"""Penalties against NumPy float64, their gradient, and the paper's closed-form identities, on
TensorFlow (their values on every backend: tests/any_backend/test_penalties_any.py)."""
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf.nn import layers, penalties
# The references, shared with the any-backend tests (which also compare EL2, FL2 and KL values
# with them on every backend: tests/any_backend/test_penalties_any.py).
from tests.any_backend.helpers import np_kl, np_mean_sq_norm, rel_err  # noqa: F401


def test_standardization_kl_is_zero_for_standard_normal_moments():
    x = np.array([[-1.0, 1.0], [1.0, -1.0]], np.float32)  # mean 0, variance 1 per channel
    assert abs(float(penalties.standardization_kl(x, epsilon=0.0))) < 1e-7


@pytest.mark.parametrize("h,k,b", [(1, 1, 1), (10, 3, 4), (64, 10, 16)])
def test_dropout_penalty_matches_numpy(rng, h, k, b):
    kernel = rng.normal(size=(h, k)).astype(np.float32)
    e = rng.normal(size=(b, h)).astype(np.float32)
    expected = np.trace(
        kernel.T.astype(np.float64) @ np.diag(np.mean(e.astype(np.float64) ** 2, 0)) @ kernel
    )
    assert rel_err(penalties.dropout_penalty(kernel, e), expected) < 1e-5


def test_embedding_l2_gradient_is_2e_over_bh(rng):
    e = tf.constant(rng.normal(size=(6, 9)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(e)
        value = penalties.embedding_l2(e)
    np.testing.assert_allclose(tape.gradient(value, e), 2 * e.numpy() / (6 * 9), rtol=1e-5)


def test_standardization_kl_gradient_matches_the_closed_form(rng):
    # d/dx of 1/2 (mu^2 + s^2 - log(s^2 + eps) - 1) per channel, N values per channel:
    # mu / N + (1 - 1 / (s^2 + eps)) (x - mu) / N
    x = rng.normal(size=(4, 3, 5, 6)) * rng.uniform(0.2, 3.0, size=6) + rng.normal(size=6)
    eps = 1e-5
    tensor = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        value = penalties.standardization_kl(tensor, epsilon=eps)
    got = tape.gradient(value, tensor).numpy()
    n = x.size / x.shape[-1]
    mu = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    want = mu / n + (1 - 1 / (var + eps)) * (x - mu) / n
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_standardization_kl_keeps_precision_when_the_mean_dwarfs_the_spread(rng, mode):
    # Channels with mean 50-300 and std 0.05-1: the raw E[x^2] - mean^2 in float32 loses the
    # variance (error ~6e-8 * mean^2, more than the variance), and with it the gradient, which
    # depends on 1 / var. The fused kernel (eager, graph on CPU) computes it in two passes; XLA
    # lowers that kernel to E[x^2] - mean^2, so under XLA the shifted sums must be used.
    shape = (16, 6, 6, 5)
    x = (rng.normal(size=shape) * rng.uniform(0.05, 1.0, 5) + rng.uniform(50, 300, 5))
    x = x.astype(np.float32)
    eps = 1e-5
    tensor = tf.constant(x)

    def value_and_gradient(tensor):
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            value = penalties.standardization_kl(tensor, epsilon=eps)
        return value, tape.gradient(value, tensor)

    if mode != "eager":
        value_and_gradient = tf.function(value_and_gradient, jit_compile=mode == "xla")
    value, gradient = value_and_gradient(tensor)
    assert rel_err(value, np_kl(x, eps)) < 1e-5
    x = x.astype(np.float64)
    var = x.var(axis=(0, 1, 2))
    n, mu = x.size / x.shape[-1], x.mean(axis=(0, 1, 2))
    want = mu / n + (1 - 1 / (var + eps)) * (x - mu) / n
    np.testing.assert_allclose(gradient, want, rtol=1e-3, atol=1e-6)


def test_standardization_kl_uses_the_fused_kernel_only_on_cpu_outside_xla(rng):
    x = tf.constant(rng.normal(size=(4, 3, 3, 2)), tf.float32)

    def kernels(jit_compile):
        def value_and_gradient(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = penalties.standardization_kl(x)
            return value, tape.gradient(value, x)
        graph = tf.function(value_and_gradient, jit_compile=jit_compile) \
            .get_concrete_function(x).graph
        ops = {op.type for op in graph.get_operations()}
        for function in graph._functions.values():
            ops |= {node.op for node in function.definition.node_def}
        return ops

    assert "FusedBatchNormV3" in kernels(False)        # this test machine is CPU-only
    assert "FusedBatchNormV3" not in kernels(True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_standardization_kl_in_a_graph_gives_the_eager_value_and_gradient(rng, dtype):
    x = tf.cast(rng.normal(size=(8, 4, 4, 3)) * 2 + 1, dtype)

    def value_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = penalties.standardization_kl(x)
        return value, tape.gradient(value, x)

    eager = value_and_gradient(x)
    graph = tf.function(value_and_gradient)(x)
    assert graph[1].dtype == x.dtype
    np.testing.assert_allclose(graph[0], eager[0], rtol=1e-6)
    np.testing.assert_allclose(tf.cast(graph[1], tf.float32), tf.cast(eager[1], tf.float32),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_penalties_reduce_in_float32(rng, dtype):
    x = rng.normal(size=(4, 8)).astype(np.float32)
    value = penalties.embedding_l2(tf.cast(x, dtype))
    assert value.dtype == tf.float32
    assert rel_err(value, np_mean_sq_norm(tf.cast(tf.cast(x, dtype), tf.float32).numpy())) < 1e-5


def test_appendix_a_identity_bn_then_swish0(rng):
    """Appendix A: Emb = Swish_0(gamma * BN(z) + beta) = (.)/2 gives E||Emb||^2 = 1/4 sum(g^2+b^2)."""
    channels, eps = 12, 1e-3
    gamma = rng.normal(size=channels).astype(np.float32)
    beta = rng.normal(size=channels).astype(np.float32)
    z = (rng.normal(size=(256, channels)) * rng.uniform(0.5, 4, channels) + 3).astype(np.float32)
    bn = keras.layers.BatchNormalization(epsilon=eps)
    bn.build(z.shape)
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    emb = layers.Swish(rho_init=0.0)(bn(z, training=True)).numpy().astype(np.float64)
    measured = np.mean(np.sum(emb**2, axis=1))
    closed_form = 0.25 * np.sum(gamma.astype(np.float64) ** 2 + beta.astype(np.float64) ** 2)
    var = z.astype(np.float64).var(axis=0)
    with_bn_epsilon = 0.25 * np.sum(gamma**2 * var / (var + eps) + beta.astype(np.float64) ** 2)
    assert rel_err(measured, with_bn_epsilon) < 1e-5
    assert abs(measured - closed_form) <= 0.25 * np.sum(gamma**2) * eps / var.min()


@pytest.mark.parametrize("h,p", [(6, 0.5), (10, 0.3), (1, 0.9)])
def test_dropout_identity_by_enumerating_every_mask(rng, h, p):
    """E_mask ||W drop(e) - y||^2 = ||W e - y||^2 + p/(1-p) * sum_j (sum_k W_kj^2) e_j^2."""
    k = 3
    w = rng.normal(size=(k, h))
    e = rng.normal(size=h)
    y = rng.normal(size=k)
    expected_loss = 0.0
    for mask in itertools.product([0.0, 1.0], repeat=h):
        mask = np.array(mask)
        prob = np.prod(np.where(mask == 1.0, 1 - p, p))
        expected_loss += prob * np.sum((w @ (e * mask / (1 - p)) - y) ** 2)
    penalty = float(penalties.dropout_penalty(w.T.astype(np.float32), e[None].astype(np.float32)))
    identity = np.sum((w @ e - y) ** 2) + p / (1 - p) * penalty
    assert rel_err(identity, expected_loss) < 1e-5
