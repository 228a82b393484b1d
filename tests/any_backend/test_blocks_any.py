"""The other building blocks on the current backend (issue 24), against NumPy float64 and closed
forms: bnreg's BatchNormalization and Conv2D (Keras' own computation off TensorFlow), scaled
weight standardization, AGC, the Fixup/SkipInit/Swish layers, the head, NormMonitor and
SignalPropagation."""
import keras
import numpy as np
import pytest

import resnet
from bnreg_tf import NormMonitor, SignalPropagation
from bnreg_tf.nn import agc, batchnorm, conv, heads, nf
from bnreg_tf.nn import layers as bl
from bnreg_tf.nn.residual_blocks import residual_blocks
from resnet.resnet_v1 import ResNetSpec, build_resnet_v1

to_numpy = keras.ops.convert_to_numpy


@pytest.mark.parametrize("momentum,epsilon", [(0.9, 1e-3), (0.99, 1e-5)])
def test_batchnorm_training_is_the_batch_standardization_and_keras_update(rng, momentum, epsilon):
    x = (rng.normal(size=(6, 5, 4, 3)) * rng.uniform(0.5, 3, 3) + rng.normal(size=3)) \
        .astype(np.float32)
    layer = batchnorm.BatchNormalization(momentum=momentum, epsilon=epsilon)
    layer.build(x.shape)
    gamma, beta = rng.normal(size=3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    out = to_numpy(layer(x, training=True))
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))   # biased, as Keras
    np.testing.assert_allclose(out, gamma * (x64 - mean) / np.sqrt(var + epsilon) + beta,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.moving_mean), mean * (1 - momentum), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.moving_variance),
                               momentum + var * (1 - momentum), rtol=1e-5)
    inference = to_numpy(layer(x, training=False))
    moving_mean, moving_var = to_numpy(layer.moving_mean), to_numpy(layer.moving_variance)
    np.testing.assert_allclose(
        inference, gamma * (x64 - moving_mean) / np.sqrt(moving_var + epsilon) + beta,
        rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size,strides", [(1, 1), (3, 1), (1, 2)])
def test_conv_is_keras_convolution(rng, kernel_size, strides):
    x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    ours = conv.Conv2D(5, kernel_size, strides=strides, padding="same", use_bias=False)
    theirs = keras.layers.Conv2D(5, kernel_size, strides=strides, padding="same", use_bias=False)
    ours.build(x.shape)
    theirs.build(x.shape)
    kernel = rng.normal(size=ours.kernel.shape).astype(np.float32)
    ours.kernel.assign(kernel)
    theirs.kernel.assign(kernel)
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(theirs(x)), rtol=1e-5, atol=1e-5)
    if kernel_size == 1 and strides == 1:   # the pointwise case: x @ W per position, float64
        want = x.astype(np.float64) @ kernel[0, 0].astype(np.float64)
        np.testing.assert_allclose(to_numpy(ours(x)), want, rtol=1e-5, atol=1e-5)


def test_scaled_ws_conv_standardizes_its_kernel_per_output_channel(rng):
    layer = nf.ScaledStdConv2D(6, 3, gamma=nf.RELU_GAMMA, padding="same")
    x = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
    layer.build(x.shape)
    gain = rng.uniform(0.5, 2, 6).astype(np.float32)
    layer.gain.assign(gain)
    kernel = to_numpy(layer.standardized_kernel()).astype(np.float64).reshape(-1, 6)
    fan_in = 3 * 3 * 4
    np.testing.assert_allclose(kernel.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(kernel.var(axis=0), (nf.RELU_GAMMA * gain) ** 2 / fan_in,
                               rtol=1e-4)
    raw = to_numpy(layer.kernel).astype(np.float64).reshape(-1, 6)
    want = nf.RELU_GAMMA * gain * (raw - raw.mean(0)) / np.sqrt(raw.var(0) * fan_in)
    np.testing.assert_allclose(kernel, want, rtol=1e-4, atol=1e-6)


def numpy_agc(g, w, clipping, eps):
    """Unit-wise clipping in float64 (Brock et al. 2021b, section 4; nn/agc.py's docstring)."""
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    axes = tuple(range(g.ndim - 1)) if sum(d > 1 for d in g.shape) > 1 else None
    g_norm = np.sqrt(np.sum(g**2, axis=axes, keepdims=axes is not None))
    w_norm = np.sqrt(np.sum(w**2, axis=axes, keepdims=axes is not None))
    max_norm = clipping * np.maximum(w_norm, eps)
    return np.where(g_norm < max_norm, g, g * max_norm / np.maximum(g_norm, 1e-6))


@pytest.mark.parametrize("shape", [(3, 3, 4, 5), (6, 4), (5,), ()])
def test_agc_matches_numpy(rng, shape):
    w = rng.normal(size=shape).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    if len(shape) >= 2:
        g = g * np.logspace(-4, 1, shape[-1]).astype(np.float32)   # some units over the bound
    else:   # one unit, of norm 10: far over 0.05 * ||w||
        g = (10 * g / np.sqrt(np.sum(g.astype(np.float64) ** 2))).astype(np.float32)
    out = agc.clip_gradients([keras.ops.convert_to_tensor(g)], [keras.Variable(w)], 0.05)[0]
    want = numpy_agc(g, w, 0.05, 1e-3)
    assert not np.allclose(want, g)   # something was clipped
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-5, atol=1e-12)


def test_swish_and_fixup_scalars(rng):
    x = (rng.normal(size=(3, 5)) * 4).astype(np.float32)
    swish = bl.Swish(rho_init=0.7)
    expected = x * (1 / (1 + np.exp(-0.7 * x.astype(np.float64))))
    np.testing.assert_allclose(to_numpy(swish(x)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(bl.Swish()(x)), x / 2, rtol=1e-6)   # rho = 0: x / 2
    bias, scale = bl.ScalarBias(), bl.ScalarScale()
    np.testing.assert_array_equal(to_numpy(scale(bias(x))), x)
    bias.value.assign(0.25)
    scale.value.assign(-2.0)
    np.testing.assert_allclose(to_numpy(scale(bias(x))), (x + 0.25) * -2.0, rtol=1e-6)


def test_stochastic_depth_drops_whole_examples_and_keeps_the_mean():
    rate, n = 0.3, 4000
    y = to_numpy(bl.StochasticDepth(rate, seed=3)(np.ones((n, 2, 2, 3), np.float32), training=True))
    per_example = y.reshape(n, -1)
    assert np.all(per_example == per_example[:, :1])
    np.testing.assert_allclose(np.unique(per_example), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs(np.mean(per_example[:, 0] == 0) - rate) < 4 * np.sqrt(rate * (1 - rate) / n)


TINY = ResNetSpec(False, (1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=4)


def tiny_resnet(norm, **kwargs):
    return build_resnet_v1(TINY, num_classes=3, input_shape=(16, 16, 3), norm=norm, seed=0,
                           **kwargs)


@pytest.mark.parametrize("norm", ["fixup", "fixup_standardize", "skipinit"])
def test_fixup_and_skipinit_at_init(rng, norm):
    """Fixup: zero classifier, zero last branch layer (not for _standardize); SkipInit: a zero
    gain ends every branch, so every block starts as the identity (resnet.norm)."""
    model = tiny_resnet(norm)
    x = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
    ends = [layer.output for layer in model.layers if isinstance(layer, bl.ScalarScale)]
    probe = keras.Model(model.input, [model.output["logits"], ends])
    logits, branches = probe(x, training=True)
    assert not np.any(to_numpy(logits))   # zero classifier kernel and bias
    live = [bool(np.any(to_numpy(b))) for b in branches]
    assert len(live) == 4 and live == [norm == "fixup_standardize"] * 4


def test_classifier_head_is_the_output_contract(rng):
    inputs = keras.Input((6,))
    out = heads.classifier_head(inputs, 4, pre_classifier=bl.ScalarBias(name="bias"))
    model = keras.Model(inputs, out)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    result = model(x)
    dense = model.get_layer("classifier")
    want = x.astype(np.float64) @ to_numpy(dense.kernel) + to_numpy(dense.bias)
    np.testing.assert_allclose(to_numpy(result["logits"]), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(result["embedding"]), x)


def test_norm_monitor_logs_match_numpy(rng):
    model = tiny_resnet("batchnorm", embedding_l2=0.1)
    model.compile("sgd", loss={"logits": keras.losses.SparseCategoricalCrossentropy(True)})
    x = rng.normal(size=(16, 16, 16, 3)).astype(np.float32)
    monitor = NormMonitor((x[:6], None))
    history = model.fit(x, {"logits": rng.integers(0, 3, 16)}, batch_size=8, epochs=1,
                        verbose=0, callbacks=[monitor]).history
    out = model(x[:6], training=False)
    e = to_numpy(out["embedding"]).astype(np.float64)
    z = to_numpy(out["logits"]).astype(np.float64)
    w = to_numpy(model.get_layer("classifier").kernel).astype(np.float64)
    want = {"probe_embedding_norm_sq": np.mean(np.sum(e**2, 1)),
            "probe_functional_l2": np.mean(np.sum(z**2, 1)) / z.shape[1],
            "probe_dropout_penalty": np.sum(np.sum(w**2, 1) * np.mean(e**2, 0))}
    for key, value in want.items():
        np.testing.assert_allclose(history[key][-1], value, rtol=1e-5)
    assert monitor.initial["probe_embedding_norm_sq"] != history["probe_embedding_norm_sq"][-1]


def test_signal_propagation_matches_numpy_statistics_of_the_blocks(rng):
    model = tiny_resnet("batchnorm")
    for variable in model.trainable_weights:   # off the init, so that every statistic differs
        variable.assign(rng.normal(0.3, 0.5, variable.shape).astype(np.float32))
    x = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
    values = SignalPropagation(model, x).measure()
    blocks = residual_blocks(model)
    tensors = keras.Model(model.input, [t for b in blocks for t in (b.output, b.branch)])(
        x, training=True)   # BatchNorm on the batch's statistics, as measured (biased variance)
    for depth, row in enumerate(values):
        output, branch = (to_numpy(t).astype(np.float64).reshape(-1, t.shape[-1])
                          for t in tensors[2 * depth:2 * depth + 2])
        np.testing.assert_allclose(row["squared_mean"], np.mean(output.mean(0) ** 2), rtol=1e-4)
        np.testing.assert_allclose(row["variance"], np.mean(output.var(0)), rtol=1e-4)
        np.testing.assert_allclose(row["branch_variance"], np.mean(branch.var(0)), rtol=1e-4)
    assert len(values) == 4 and resnet.NORM_MODES[0] == "batchnorm"
