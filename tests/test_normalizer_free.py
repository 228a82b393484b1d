"""The normalizer-free lineage (issue 18): AGC, scaled weight standardization, SkipInit and
NF-ResNet blocks, against NumPy float64 and closed forms."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf.run import models
from bnreg_tf.nn import agc, nf
from bnreg_tf.nn import layers as bl
from bnreg_tf.run.config import ConfigError, validate
from bnreg_tf.run.presets import PRESETS
from bnreg_tf.run.training import Classifier
from resnet.resnet_v1 import ResNetSpec, build_resnet_v1


def numpy_agc(g, w, clipping, eps):
    """The NFNets reference's unit-wise clipping (agc_optax.py), in float64."""
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    if sum(d > 1 for d in g.shape) <= 1:
        g_norm, w_norm = np.sqrt(np.sum(g**2)), np.sqrt(np.sum(w**2))
    else:
        axes = tuple(range(g.ndim - 1))
        g_norm = np.sqrt(np.sum(g**2, axis=axes, keepdims=True))
        w_norm = np.sqrt(np.sum(w**2, axis=axes, keepdims=True))
    max_norm = clipping * np.maximum(w_norm, eps)
    return np.where(g_norm < max_norm, g, g * max_norm / np.maximum(g_norm, 1e-6))


def unit_norms(x):
    x = np.asarray(x, np.float64)
    if sum(d > 1 for d in x.shape) <= 1:
        return np.sqrt(np.sum(x**2)).reshape(1)
    return np.sqrt(np.sum(x.reshape(-1, x.shape[-1]) ** 2, axis=0))


# Gradient scales per output unit: some units far above the bound, some below.
@pytest.mark.parametrize("shape", [(3, 3, 4, 5), (6, 4), (5,), (), (1, 7)],
                         ids=["conv", "dense", "bias", "scalar", "row"])
@pytest.mark.parametrize("weight_scale", [1.0, 1e-7], ids=["weights", "eps_floor"])
def test_agc_matches_numpy(rng, shape, weight_scale):
    clipping, eps = 0.05, 1e-3
    w = (rng.normal(size=shape) * weight_scale).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    if len(shape) >= 2 and shape[0] > 1:
        g = g * np.logspace(-4, 1, shape[-1]).astype(np.float32)  # unit-dependent gradient size
    else:  # one unit, of norm 1: over the bound (the weights' norm is far below 1 / clipping)
        g = (g / np.sqrt(np.sum(g.astype(np.float64) ** 2))).astype(np.float32)
    out = agc.clip_gradients([tf.constant(g)], [tf.Variable(w)], clipping, eps)[0].numpy()
    np.testing.assert_allclose(out, numpy_agc(g, w, clipping, eps), rtol=1e-5, atol=1e-12)
    # Closed form: a clipped unit's norm is exactly clipping * max(||w||, eps), direction kept.
    bound = clipping * np.maximum(unit_norms(w), eps)
    g_norm, out_norm = unit_norms(g), unit_norms(out)
    over = g_norm >= bound
    assert over.any()
    np.testing.assert_allclose(out_norm[over], bound[over], rtol=1e-5)
    np.testing.assert_allclose(out_norm[~over], g_norm[~over], rtol=1e-6)
    if weight_scale < 1:  # the eps floor: tiny weights may still move by clipping * eps
        np.testing.assert_allclose(out_norm[over], clipping * eps, rtol=1e-5)


def test_agc_leaves_gradients_under_the_bound_unchanged(rng):
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    g = (1e-4 * rng.normal(size=w.shape)).astype(np.float32)
    out = agc.clip_gradients([tf.constant(g), None], [tf.Variable(w), tf.Variable(w)], 0.01)
    np.testing.assert_array_equal(out[0].numpy(), g)
    assert out[1] is None
    with pytest.raises(ValueError, match="clipping"):
        agc.clip_gradients([tf.constant(g)], [tf.Variable(w)], 0.0)


def cross_entropy_gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = model.cross_entropy(y, model(x, training=True)["logits"])
    return tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("weight_decay,revision", [(0.0, 2), (0.05, 2), (0.05, 1)])
def test_training_step_clips_every_variable_but_the_classifier(rng, weight_decay, revision):
    """The applied gradient is AGC(cross-entropy gradient) + wd * w: the decay is not clipped
    (the NFNets reference's SGD_AGC). The classifier's kernel is not clipped, its bias is
    (the reference; revision 1 left both alone)."""
    network = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 3), norm="none",
                                 seed=0)
    model = Classifier(network, 3, agc=0.01, weight_decay=weight_decay, revision=revision)
    model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=False)
    x, y = rng.normal(size=(8, 8, 8, 3)).astype(np.float32), np.arange(8) % 3
    grads = cross_entropy_gradients(model, x, y)
    before = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    model.train_on_batch(x, y)
    layer = network.get_layer("classifier")
    classifier = {id(v) for v in ([layer.kernel, layer.bias] if revision == 1 else [layer.kernel])}
    clipped_units = 0
    for v, g, b in zip(model.trainable_variables, grads, before):
        step = b - v.numpy().astype(np.float64)  # lr 1, no momentum: the applied gradient
        raw = g.numpy().astype(np.float64)
        if id(v) in classifier:
            np.testing.assert_allclose(step, raw + weight_decay * b, rtol=1e-4, atol=2e-7)
            assert np.any(numpy_agc(raw, b, 0.01, 1e-3) != raw)  # clipping would have acted
        else:
            want = numpy_agc(raw, b, 0.01, 1e-3)
            np.testing.assert_allclose(step, want + weight_decay * b, rtol=1e-4, atol=2e-7)
            clipped_units += int(np.sum(unit_norms(want) < 0.999 * unit_norms(raw)))
    assert len(classifier) == (2 if revision == 1 else 1) and clipped_units > 10
    index = [id(v) for v in model.trainable_variables].index(id(layer.bias))
    bias_gradient = grads[index].numpy().astype(np.float64)   # AGC acts on it (revision 2)
    assert np.any(numpy_agc(bias_gradient, before[index], 0.01, 1e-3) != bias_gradient)


def test_a_step_with_an_optimizer_that_all_reduces_again_is_refused(rng):
    network = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 3), norm="none",
                                 seed=0)
    model = Classifier(network, 3, agc=0.01)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    model.optimizer = keras.optimizers.SGD(0.1)   # swapped outside compile: not taken over
    x, y = rng.normal(size=(4, 8, 8, 3)).astype(np.float32), np.arange(4) % 3
    with pytest.raises(RuntimeError, match="all-reduces gradients itself again"):
        model.train_on_batch(x, y)


def test_agc_step_under_mirrored_strategy_matches_one_device(mirrored, rng):
    """AGC acts on the all-reduced gradient of the global batch, and is applied once."""
    x, y = rng.normal(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 3

    def trained(strategy, clipping):
        with strategy.scope():
            network = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 3),
                                         norm="nf_resnet", seed=4)
            model = Classifier(network, 3, agc=clipping)
            model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9), jit_compile=False)
        for _ in range(3):  # the zero-initialised skip gains move at step 1, the rest after
            model.train_on_batch(x, y)
        return [v.numpy() for v in model.trainable_variables]

    default = tf.distribute.get_strategy()
    single, multi = trained(default, 0.01), trained(mirrored, 0.01)
    for a, b in zip(single, multi):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    unclipped = trained(default, 0.0)
    assert max(np.max(np.abs(a - b)) for a, b in zip(single, unclipped)) > 1e-3


def test_agc_clips_the_unscaled_gradient_under_loss_scaling(rng):
    """Under LossScaleOptimizer (mixed_float16's) the clip sees the true gradient: same step."""
    x, y = rng.normal(size=(8, 8, 8, 3)).astype(np.float32), np.arange(8) % 3

    def trained(optimizer):
        network = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 3),
                                     norm="none", seed=6)
        model = Classifier(network, 3, agc=0.01)
        model.compile(optimizer=optimizer, jit_compile=False)
        for _ in range(2):
            model.train_on_batch(x, y)
        return [v.numpy() for v in model.trainable_variables]

    plain = trained(keras.optimizers.SGD(0.5))
    scaled = trained(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5)))
    for a, b in zip(plain, scaled):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_agc_flag_is_validated():
    config = PRESETS["digits"].replace(model_dir="/tmp/unused")
    assert validate(config.replace(agc=0.01)).agc == 0.01
    for bad in (-0.01, math.nan, math.inf):
        with pytest.raises(ConfigError) as error:
            validate(config.replace(agc=bad))
        assert str(error.value).startswith("--agc") and "\n" not in str(error.value)


def numpy_standardize(w, gain, gamma):
    w = np.asarray(w, np.float64)
    flat = w.reshape(-1, w.shape[-1])
    fan_in = flat.shape[0]
    standardized = (flat - flat.mean(0)) / (flat.std(0) * np.sqrt(fan_in))
    return (standardized * gamma * np.asarray(gain, np.float64)).reshape(w.shape)


def test_activation_gammas_against_numerical_integration():
    z = np.linspace(-40.0, 40.0, 800001)
    density = np.exp(-z**2 / 2) / np.sqrt(2 * np.pi)
    for gamma, f in ((nf.RELU_GAMMA, np.maximum(z, 0.0)),
                     (nf.SWISH_GAMMA, bl.Swish()(z[:, None]).numpy()[:, 0].astype(np.float64))):
        mean = np.trapezoid(f * density, z)
        variance = np.trapezoid(f**2 * density, z) - mean**2
        assert gamma == pytest.approx(1 / np.sqrt(variance), rel=1e-6)
    assert nf.RELU_GAMMA == pytest.approx(1.7139588594436646, rel=1e-3)  # the reference's


@pytest.mark.parametrize("kernel", [1, 3])
def test_scaled_ws_conv_standardizes_its_kernel(rng, kernel):
    conv = nf.ScaledStdConv2D(5, kernel, gamma=nf.RELU_GAMMA, padding="same",
                              kernel_initializer=nf.ws_initializer(seed=0))
    x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    conv(x)
    gain = rng.uniform(0.5, 2.0, size=5).astype(np.float32)
    conv.gain.assign(gain)
    conv.bias.assign(rng.normal(size=5).astype(np.float32))
    w_hat = conv.standardized_kernel().numpy().astype(np.float64)
    fan_in = kernel * kernel * 4
    flat = w_hat.reshape(fan_in, 5)
    # float32 arithmetic: entries of size ~0.5 are exact to ~3e-8 each, their mean to ~1e-7
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=3e-7)
    np.testing.assert_allclose(flat.var(0), nf.RELU_GAMMA**2 * gain**2 / fan_in, rtol=1e-4)
    np.testing.assert_allclose(w_hat, numpy_standardize(conv.kernel.numpy(), gain,
                                                        nf.RELU_GAMMA), rtol=1e-4, atol=1e-7)
    reference = keras.layers.Conv2D(5, kernel, padding="same")  # Keras' conv, standardized kernel
    reference.build(x.shape)
    reference.set_weights([w_hat.astype(np.float32), conv.bias.numpy()])
    np.testing.assert_allclose(conv(x), reference(x), rtol=1e-4, atol=1e-5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(conv(x) ** 2)
    grad_gain, grad_kernel = tape.gradient(loss, [conv.gain, conv.kernel])
    assert np.all(np.isfinite(grad_gain)) and np.all(grad_gain.numpy() != 0)
    assert np.all(np.isfinite(grad_kernel)) and np.any(grad_kernel.numpy() != 0)


def test_scaled_ws_of_a_constant_kernel_is_finite_zero():
    kernel = tf.ones((3, 3, 2, 4))
    out = nf.scaled_standardize(kernel, tf.ones(4), nf.RELU_GAMMA).numpy()
    assert np.all(out == 0)


def test_normalizer_free_network_round_trips_through_a_keras_file(tmp_path, rng):
    model = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 3), norm="nf_resnet",
                               seed=1)
    for layer in model.layers:  # off their initial values, so a lost variable shows
        if isinstance(layer, bl.ScalarScale):
            layer.value.assign(0.6)
        if isinstance(layer, nf.ScaledStdConv2D):
            layer.gain.assign(rng.uniform(0.5, 1.5, size=layer.filters).astype(np.float32))
    x = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
    expected = model(x)["embedding"].numpy()
    model.save(tmp_path / "nf.keras")
    reloaded = keras.saving.load_model(tmp_path / "nf.keras")
    np.testing.assert_allclose(reloaded(x)["embedding"], expected, rtol=1e-5, atol=1e-6)
    gains = [layer for layer in reloaded.layers if isinstance(layer, bl.ScalarScale)]
    assert gains and all(g.initial_value == 0.0 for g in gains)
    assert reloaded.get_layer("group2_block0_conv1").gamma == 1.0   # the activations carry it
    assert reloaded.get_layer("group2_block0_act1").gamma == nf.REFERENCE_RELU_GAMMA
    assert reloaded.get_layer("stem_conv").gamma == 1.0


def init_embedding_norm(name, norm, x, gain=None):
    model = models.build(name, num_classes=10, norm=norm, seed=3)
    if gain is not None:
        for layer in model.layers:
            if isinstance(layer, bl.ScalarScale):
                layer.value.assign(gain)
    embedding = model(x, training=True)["embedding"].numpy().astype(np.float64)
    return np.mean(np.sum(embedding**2, axis=1))


@pytest.mark.parametrize("norm,gain", [("skipinit", None), ("nf_resnet", None),
                                       ("nf_resnet", 1.0)])
def test_no_explosion_with_depth_at_init(norm, gain):
    """Like Fixup (tests/test_resnet.py): WRN-40-1 / WRN-10-1 E||Emb||^2 within 2x. NF-ResNet
    also with every skip gain at 1, where alpha and beta alone keep the stream's variance at
    1 + (blocks since the last transition) * alpha^2."""
    x = np.random.default_rng(5).normal(size=(16, 32, 32, 3)).astype(np.float32)
    ratio = (init_embedding_norm("wrn40_1", norm, x, gain)
             / init_embedding_norm("wrn10_1", norm, x, gain))
    print(f"E||Emb||^2 at init, WRN-40-1 / WRN-10-1, {norm}, gain {gain}: {ratio:.3f}")
    assert 0.5 < ratio < 2


def numpy_max_pool_same(x, size=3, stride=2):
    n, h, w, c = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + size - h, 0)
    pad_w = max((out_w - 1) * stride + size - w, 0)
    padded = np.full((n, h + pad_h, w + pad_w, c), -np.inf)
    padded[:, pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w] = x
    return np.stack([np.stack([padded[:, i * stride:i * stride + size,
                                      j * stride:j * stride + size].max(axis=(1, 2))
                               for j in range(out_w)], 1) for i in range(out_h)], 1)


NF_NETS = {
    # Stage 1: an identity block (4 -> 4 channels); stage 2: a projection block, then an
    # identity block whose beta shows the reset: sqrt(1 + alpha^2), not sqrt(1 + 2 alpha^2).
    "resnet_v1": (lambda revision: build_resnet_v1(
        ResNetSpec(False, (1, 2), widths=(4, 8), stem_width=4), num_classes=3,
        input_shape=(16, 16, 3), norm="nf_resnet", activation="relu", dropout=0.0,
        standardization_kl=0.0, embedding_l2=0.0, functional_l2=0.0, seed=2, revision=revision),
        ["stage1_block0", "stage2_block0", "stage2_block1"], "act0"),
    "wrn": (lambda revision: models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 3),
                                          norm="nf_resnet", seed=2, revision=revision),
            ["group1_block0", "group2_block0", "group3_block0"], "act1"),
}


@pytest.mark.parametrize("revision", [1, 2])
@pytest.mark.parametrize("family", list(NF_NETS))
def test_nf_block_arithmetic_against_numpy(family, revision, rng):
    """x_out = shortcut + alpha * gain * f(gamma * relu(x) / beta), beta from the variance
    recurrence; the projection shortcut is the standardized 1x1 conv of gamma * relu(x) / beta.
    Revision 2: gamma the reference's, on the activation (the embedding is mean(gamma *
    relu(x))); revision 1: the closed form inside every kernel that reads an activation."""
    build, blocks, act = NF_NETS[family]
    model = build(revision)
    gamma = nf.REFERENCE_RELU_GAMMA if revision == 2 else 1.0
    kernel_gamma = 1.0 if revision == 2 else nf.RELU_GAMMA
    gains = {}
    for block in blocks:
        gains[block] = float(rng.uniform(0.5, 1.5))
        model.get_layer(f"{block}_branch_gain").value.assign(gains[block])
    names = [(f"{b}_{act}", f"{b}_beta", f"{b}_branch_gain", f"{b}_add") for b in blocks]
    probes = {}
    for block, (a, beta, gain, add) in zip(blocks, names):
        probes[block] = [model.get_layer(a).input, model.get_layer(beta).output,
                         model.get_layer(gain).input, model.get_layer(add).output]
    extra = [model.get_layer("stem_conv").output, model.output["embedding"]]
    probe = keras.Model(model.input, [probes, extra])
    x = rng.normal(size=(3, *model.input_shape[1:])).astype(np.float32)
    values, (stem, embedding) = probe(x)
    variance, alpha = 1.0, 0.2
    for block in blocks:
        x_in, scaled, branch, out = (v.numpy().astype(np.float64) for v in values[block])
        conv1 = model.get_layer(f"{block}_conv1")
        projection = x_in.shape[-1] != out.shape[-1] or x_in.shape[1] != out.shape[1]
        beta = np.sqrt(variance)
        variance = (1.0 if projection else variance) + alpha**2
        assert conv1.input is model.get_layer(f"{block}_beta").output
        np.testing.assert_allclose(scaled, gamma * np.maximum(x_in, 0) / beta, rtol=1e-5,
                                   atol=1e-6)
        if projection:
            shortcut_layer = model.get_layer(f"{block}_shortcut")
            w = numpy_standardize(shortcut_layer.kernel.numpy(), shortcut_layer.gain.numpy(),
                                  kernel_gamma)[0, 0]
            stride = x_in.shape[1] // out.shape[1]
            shortcut = scaled[:, ::stride, ::stride] @ w + shortcut_layer.bias.numpy()
        else:
            shortcut = x_in
        np.testing.assert_allclose(out, shortcut + alpha * gains[block] * branch,
                                   rtol=1e-4, atol=1e-5)
    first = values[blocks[0]][0].numpy().astype(np.float64)
    if family == "resnet_v1":  # no activation between the stem and the max pool
        np.testing.assert_allclose(first, numpy_max_pool_same(stem.numpy().astype(np.float64)),
                                   rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(embedding, gamma * np.maximum(out, 0).mean(axis=(1, 2)),
                               rtol=1e-5, atol=1e-6)
