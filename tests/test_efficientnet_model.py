"""EfficientNet: published parameter counts, gradients, the drop-connect schedule, init rules."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnet
from bnreg_tf.nn.layers import StochasticDepth
from efficientnet.params import round_filters, round_repeats

# Trainable parameters of keras.applications.EfficientNetB0..B7 (Keras 3.15, 1000 classes) and of
# the same architecture at B8's (2.2, 3.6) scaling: docs/references.md §5.6.
PUBLISHED = {"b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232,
             "b4": 19_341_616, "b5": 30_389_784, "b6": 43_040_704, "b7": 66_347_960,
             "b8": 87_413_142}


@pytest.mark.parametrize("variant", list(PUBLISHED))
def test_trainable_parameter_count(variant):
    with keras.StatelessScope(initialize_variables=False):   # shapes only: no weight drawn
        model = efficientnet.build_model(variant, num_classes=1000)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == PUBLISHED[variant]
    resolution = efficientnet.SCALING[variant].resolution
    assert model.input_shape == (None, resolution, resolution, 3)


def test_rounding_rules():
    assert [round_filters(f, 1.1) for f in (32, 16, 24, 1280)] == [32, 16, 24, 1408]
    assert round_filters(16, 2.2) == 32 and round_filters(8, 0.1) == 8
    assert round_filters(320, 4.3) == 1376  # int(1376 + 4) // 8 * 8
    assert [round_repeats(r, 3.6) for r in (1, 2, 3, 4)] == [4, 8, 11, 15]


def test_drop_connect_schedule_is_linear_in_the_global_block_index():
    model = efficientnet.build_model("b0", num_classes=10, input_shape=(32, 32, 3))
    blocks = sorted({layer.name.split("_")[0] for layer in model.layers
                     if layer.name.startswith("block")})
    n = len(blocks)
    assert n == 16
    rates = {layer.name.split("_")[0]: layer.drop_rate for layer in model.layers
             if isinstance(layer, StochasticDepth)}
    for i, block in enumerate(blocks):
        if block in rates:  # blocks with a skip connection
            assert rates[block] == pytest.approx(0.2 * i / n)
    keep = [1 - r for r in efficientnet.drop_rates(n, 0.8)]
    assert keep[0] == 1.0 and keep[-1] == pytest.approx(1 - 0.2 * (n - 1) / n)
    no_sd = efficientnet.build_model("b0", num_classes=10, input_shape=(32, 32, 3),
                                     survival_prob=1.0)
    assert not any(isinstance(layer, StochasticDepth) for layer in no_sd.layers)


def test_dropout_defaults_to_the_variant_rate():
    def rate(**kw):
        with keras.StatelessScope(initialize_variables=False):   # no weight drawn
            model = efficientnet.build_model("b8", num_classes=10, input_shape=(32, 32, 3), **kw)
        layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
        return layers[0].rate if layers else 0.0
    assert rate() == 0.5 and rate(dropout=0.0) == 0.0 and rate(dropout=0.3) == 0.3


def test_reference_initialisation_and_bn_settings():
    model = efficientnet.build_model("b0", num_classes=100, input_shape=(32, 32, 3), seed=0)
    kernel = model.get_layer("head_conv").kernel.numpy()  # 1x1x320x1280: fan_out 1280
    assert abs(kernel.std() / np.sqrt(2 / 1280) - 1) < 0.02
    dense = model.get_layer("classifier").kernel.numpy()
    assert np.abs(dense).max() <= 0.1 and np.abs(dense).max() > 0.099  # uniform +-1/sqrt(100)
    assert abs(dense.std() / (0.1 / np.sqrt(3)) - 1) < 0.02
    bn = model.get_layer("stem_bn")
    assert bn.momentum == 0.99 and bn.epsilon == 1e-3


@pytest.mark.parametrize("penalty", [dict(dropout=0.3), dict(embedding_l2=0.1),
                                     dict(functional_l2=0.1)])
def test_b0_forward_backward(penalty):
    model = efficientnet.build_model("b0", num_classes=5, input_shape=(32, 32, 3), seed=0,
                                     **{"dropout": 0.0, **penalty})
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            np.array([0, 1, 2, 3]), out["logits"], from_logits=True)) + tf.add_n(model.losses or [0.0])
    grads = tape.gradient(loss, model.trainable_variables)
    assert out["embedding"].shape == (4, 1280) and np.isfinite(loss.numpy())
    assert len(model.losses) == (0 if "dropout" in penalty else 1)
    dead = [v.path for v, g in zip(model.trainable_variables, grads) if not np.any(g.numpy())]
    assert not dead


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="variant must be one of"):
        efficientnet.build_model("b9", num_classes=10)
