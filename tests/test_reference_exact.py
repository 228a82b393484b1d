"""Issue 25, items 1-8: the normalizer-free models as google-deepmind/deepmind-research's
`nfnets/` computes them, against NumPy float64 ports of its code (tests/nf_reference_port.py)."""
import keras
import numpy as np
import pytest

from bnreg_tf.nn import layers as bl
from bnreg_tf.nn import nf
from bnreg_tf.nn.signal_propagation import SignalPropagation, gaussian_probe
from bnreg_tf.run import models
from bnreg_tf.run.training import agc_exempt, decay_variables
from resnet.resnet_v1 import ResNetSpec, build_resnet_v1
from tests import nf_reference_port as port


def weights_by_path(model):
    return {v.path: v.numpy().astype(np.float64) for v in model.weights}


def perturb(model, seed):
    """Off their initial values, so every weight shows: skip gains, WS gains, biases."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        value = v.numpy()
        if v.path.endswith(("gain", "value")):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif v.path.endswith("bias"):
            value = rng.normal(0.0, 0.1, value.shape)
        v.assign(value.astype(np.float32))


def test_reference_constants():
    assert nf.REFERENCE_RELU_GAMMA == 1.7139588594436646   # nfnets/base.py, literally
    assert nf.activation_gamma("relu") == nf.REFERENCE_RELU_GAMMA
    assert nf.activation_gamma("relu", reference=False) == pytest.approx(
        np.sqrt(2 / (1 - 1 / np.pi)), rel=1e-15)            # the closed form, kept documented
    # bnreg's swish starts as x / 2 (rho = 0): the reference's rule, 1 / std on N(0, 1), is 2.
    z = np.random.default_rng(0).standard_normal(1_000_000)
    assert nf.activation_gamma("swish") == 2.0 == pytest.approx(1 / np.std(z / 2), rel=3e-3)
    x = np.linspace(-3, 3, 13, dtype=np.float32)[None, :, None]
    np.testing.assert_array_equal(nf.ScaledReLU()(x).numpy(),
                                  np.maximum(x, 0) * np.float32(nf.REFERENCE_RELU_GAMMA))
    np.testing.assert_allclose(nf.ScaledSwish()(x).numpy(), x.astype(np.float64), rtol=1e-7)


def test_nf_resnet50_embedding_and_logits_are_the_references():
    """Item 1: the pooled embedding (what EL2 sees) and the logits of bnreg's NF-ResNet-50 equal
    the reference's on the same weights; revision 1's embedding was the reference's (with the
    closed-form gamma) divided by that gamma."""
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3))
    model = models.build("resnet50", num_classes=5, input_shape=(32, 32, 3), norm="nf_resnet",
                         seed=0)
    perturb(model, 2)
    weights = weights_by_path(model)
    pool, logits = port.nf_resnet_forward(weights, x)
    out = model(x.astype(np.float32))
    np.testing.assert_allclose(out["embedding"], pool, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(out["logits"], logits, rtol=2e-4, atol=1e-5)
    legacy = models.build("resnet50", num_classes=5, input_shape=(32, 32, 3), norm="nf_resnet",
                          seed=0, revision=1)
    legacy.set_weights(model.get_weights())
    closed = nf.activation_gamma("relu", reference=False)
    pool_closed, _ = port.nf_resnet_forward(weights, x, gamma=closed)
    np.testing.assert_allclose(legacy(x.astype(np.float32))["embedding"].numpy() * closed,
                               pool_closed, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("revision", [1, 2])
def test_ws_kernels_start_from_the_references_normal(revision):
    """Item 5: Haiku's VarianceScaling(1, fan_in, "normal") is an untruncated N(0, 1/fan_in)."""
    model = models.build("wrn16_8", num_classes=3, input_shape=(8, 8, 3), norm="nf_resnet",
                         seed=0, revision=revision)
    kernel = model.get_layer("group3_block1_conv2").kernel.numpy().astype(np.float64)
    std = 1 / np.sqrt(np.prod(kernel.shape[:-1]))   # 3 * 3 * 512 fan-in, 1.2M draws
    peak = np.abs(kernel).max() / std
    if revision == 2:
        assert np.std(kernel) == pytest.approx(std, rel=0.01) and peak > 4.5
    else:  # Keras' truncated normal: cut at 2 std of the unit normal, rescaled by 1 / 0.8796
        assert peak <= 2 / nf.TRUNCATED_UNIT_STD + 1e-6


def tiny_skipinit(revision, **kwargs):
    return build_resnet_v1(ResNetSpec(True, (1, 2), widths=(4, 8), stem_width=4), num_classes=3,
                           input_shape=(16, 16, 3), norm="skipinit", seed=3, revision=revision,
                           **kwargs)


def test_skipinit_is_the_references_preactivation_resnet():
    """Item 6: `skipinit_resnet.NFResBlock`: relu first, the projection reads relu(x), out =
    gain * f + shortcut, no relu after the addition or the stem, relu before the pool."""
    model = tiny_skipinit(2)
    perturb(model, 4)
    weights = weights_by_path(model)
    names = ["stage1_block0", "stage2_block0", "stage2_block1"]
    probe = keras.Model(model.input, [model.get_layer("stem_pool").output, model.output,
                                      [model.get_layer(f"{n}_add").output for n in names]])
    x = np.random.default_rng(5).standard_normal((2, 16, 16, 3))
    stem, out, adds = probe(x.astype(np.float32))
    h = port.max_pool_same(port.conv(x, weights["stem_conv/kernel"], 2))
    np.testing.assert_allclose(stem, h, rtol=1e-5, atol=1e-5)
    for name, add, stride, projection in zip(names, adds, (1, 2, 1), (True, True, False)):
        h = port.skipinit_block(weights, name, h, stride, projection)
        np.testing.assert_allclose(add, h, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["embedding"], np.maximum(h, 0).mean(axis=(1, 2)), rtol=1e-4)
    legacy = tiny_skipinit(1)   # revision 1: post-activation, relu after the stem and each add
    assert legacy.get_layer("stage1_block0_out") and legacy.get_layer("stem_act")
    assert "stage1_block0_out" not in [layer.name for layer in model.layers]


def test_skipinit_kernels_start_from_haikus_default():
    """hk.Conv2D's default init: TruncatedNormal(1 / sqrt(fan_in)), cut at 2 std, not
    rescaled: std 0.8796 / sqrt(fan_in), nothing beyond 2 / sqrt(fan_in)."""
    model = models.build("wrn16_8", num_classes=3, input_shape=(8, 8, 3), norm="skipinit", seed=0)
    kernel = model.get_layer("group3_block1_conv2").kernel.numpy().astype(np.float64)
    unit = 1 / np.sqrt(np.prod(kernel.shape[:-1]))
    assert np.std(kernel) == pytest.approx(nf.TRUNCATED_UNIT_STD * unit, rel=0.01)
    assert np.abs(kernel).max() <= 2 * unit * (1 + 1e-6) and np.abs(kernel).max() > 1.99 * unit


def test_stochastic_depth_in_the_resnet_family(rng):
    """Item 7: block i of n drops its branch per example at (1 - survival_prob) * i / n, masked
    and not rescaled (the reference's StochDepth), before the addition; none at inference."""
    model = models.build("wrn16_1", num_classes=3, input_shape=(8, 8, 3), norm="nf_resnet",
                         seed=0, survival_prob=0.7)
    drops = [layer for layer in model.layers if isinstance(layer, bl.StochasticDepth)]
    assert [round(d.drop_rate, 12) for d in drops] == [round(0.3 * i / 6, 12) for i in range(1, 6)]
    assert not any(d.scale_by_keep for d in drops) and drops[0].name == "group1_block1_drop"
    plain = models.build("wrn16_1", num_classes=3, input_shape=(8, 8, 3), norm="nf_resnet", seed=0)
    assert not any(isinstance(layer, bl.StochasticDepth) for layer in plain.layers)
    for a, b in zip(plain.get_weights(), model.get_weights()):   # no seed shifted
        np.testing.assert_array_equal(a, b)
    legacy = models.build("wrn16_1", num_classes=3, input_shape=(8, 8, 3), norm="nf_resnet",
                          seed=0, survival_prob=0.7, revision=1)   # revision 1 ignored it
    assert not any(isinstance(layer, bl.StochasticDepth) for layer in legacy.layers)
    x = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
    layer = bl.StochasticDepth(0.5, seed=1, scale_by_keep=False)
    out = layer(x, training=True).numpy()
    kept = [np.array_equal(o, i) for o, i in zip(out, x)]
    dropped = [not np.any(o) for o in out]
    assert all(k or d for k, d in zip(kept, dropped)) and 16 < sum(kept) < 48
    np.testing.assert_array_equal(layer(x, training=False), x)


def haiku_name(variable):
    """The Haiku (module, name) of a bnreg NF/SkipInit variable, as the references name them."""
    layer, name = variable.path.rsplit("/", 1)
    if layer == "classifier":
        return "linear", {"kernel": "w", "bias": "b"}[name]
    if layer.endswith("_branch_gain"):
        return layer[:-len("_branch_gain")], "skip_gain"
    return layer, {"kernel": "w", "gain": "gain", "bias": "bias"}[name]


@pytest.mark.parametrize("norm", ["nf_resnet", "skipinit"])
def test_weight_decay_and_agc_membership_by_name(norm):
    """Items 3-4: decayed = not (name in scale/offset/b or 'gain' or 'bias' in name)
    (nfnets/experiment.py); clipped = all but the final linear layer's weight
    (nfnets/experiment_nfnets.py). Revision 1 decayed the skip gains and exempted the bias."""
    network = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 3), norm=norm, seed=0)
    decayed = {v.path for v in decay_variables(network, "batchnorm_and_bias")}
    exempt = {v.path for v in agc_exempt(network)}
    for variable in network.trainable_variables:
        want_decay, want_clip = port.decayed_and_clipped(*haiku_name(variable))
        assert (variable.path in decayed) == want_decay, variable.path
        assert (variable.path not in exempt) == want_clip, variable.path
    assert exempt == {"classifier/kernel"}
    legacy_decayed = {v.path for v in decay_variables(network, "batchnorm_and_bias", revision=1)}
    assert legacy_decayed - decayed == {v.path for v in network.trainable_variables
                                        if v.path.endswith("_branch_gain/value")}
    assert {v.path for v in agc_exempt(network, revision=1)} == {"classifier/kernel",
                                                                 "classifier/bias"}


def spp(norm, gain, stem=True):
    model = models.build("wrn28_4", num_classes=3, input_shape=(16, 16, 3), norm=norm, seed=0,
                         skipinit_gain=gain)
    return model, SignalPropagation(model, gaussian_probe((16, 16, 3), 64), stem=stem).measure()


def test_signal_propagation_stem_point_and_alpha_squared_growth():
    """Item 8: the stem is the first point (the first block's input, the stem conv's output
    here); with skip gains 1 an NF-ResNet's variance grows by alpha^2 = 0.04 per block within a
    stage, with the reference's default 0 it stays flat."""
    model, rows = spp("nf_resnet", 1.0)
    assert [r["depth"] for r in rows] == list(range(13)) and rows[0]["name"] == "stem"
    assert rows[0]["output"] == "stem_conv" and np.isnan(rows[0]["branch_variance"])
    stem = keras.Model(model.input, model.get_layer("stem_conv").output)(
        gaussian_probe((16, 16, 3), 64)).numpy().astype(np.float64).reshape(-1, 16)
    assert rows[0]["variance"] == pytest.approx(np.mean(np.var(stem, axis=0)), rel=1e-6)
    assert rows[0]["squared_mean"] == pytest.approx(np.mean(np.mean(stem, axis=0) ** 2), rel=1e-6)
    # Blocks 2-4 of group 1 (identity skips): the variance grows by alpha^2 times the branch's,
    # which is about 1 (scaled WS on a unit-variance input), as skip and branch are uncorrelated.
    growth = np.diff([r["variance"] for r in rows[1:5]])
    branch = np.array([r["branch_variance"] for r in rows[2:5]])
    np.testing.assert_allclose(growth, 0.04 * branch, rtol=0.15)
    assert np.all((0.5 < branch) & (branch < 1.5))
    _, flat = spp("nf_resnet", 0.0)
    np.testing.assert_allclose([r["variance"] for r in flat[2:5]], flat[1]["variance"],
                               rtol=1e-6)   # block 1's output is its projection shortcut
    _, blocks_only = spp("nf_resnet", 0.0, stem=False)
    assert [r["depth"] for r in blocks_only] == list(range(1, 13))
