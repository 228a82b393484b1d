"""resnet/: parameter counts, every ablation mode on tiny variants, Fixup at init, the explosion."""
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import resnet
from bnreg_tf.run import models
from bnreg_tf.nn import layers as bl
from bnreg_tf.nn.param_groups import param_groups
from resnet.resnet_v1 import ResNetSpec, build_resnet_v1

PENALTIES = dict(dropout=0.1, standardization_kl=1e-3, embedding_l2=0.1, functional_l2=0.1)


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def group_count(model, group):
    return sum(int(np.prod(v.shape)) for v in param_groups(model)[group])


# Fixup scalars: WRN pre-activation block = 4 biases (before 2 activations, 2 convs) + 1 scale;
# bottleneck = 3 biases before convs + 3 at the norm sites + 1 scale (the Fixup reference's
# bias1a..bias3b, scale); plus the stem or final site bias and the bias before the classifier.
# Convolution output channels, from the architecture: WRN-28-10 = stem 16 + 4 blocks x 2 convs
# x (160 + 320 + 640) + one projection per group (160 + 320 + 640) = 10,096; ResNet-50 = stem 64
# + blocks x (w + w + 4w) + one projection per stage (4w) = 26,560, which is also its number of
# BN channels (a BN after every conv). SkipInit adds a bias to every conv but the stem's and a
# gain per block; NF-ResNet a bias and a WS gain per channel of every conv and a gain per block.
@pytest.mark.parametrize(
    "name,num_classes,published,blocks,scalars_per_block,width,conv_channels,stem", [
        ("wrn28_10", 10, 36_479_194, 12, 5, 640, 10_096, 16),  # Zagoruyko & Komodakis, with BN
        ("resnet50", 1000, 25_557_032, 16, 7, 2048, 26_560, 64),  # torchvision/Goyal: no conv
    ])                                                             # bias, BN trainable
def test_parameter_counts_in_every_mode(name, num_classes, published, blocks,
                                        scalars_per_block, width, conv_channels, stem):
    with keras.StatelessScope(initialize_variables=False):   # shapes only: no weight drawn
        counts = {norm: models.build(name, num_classes=num_classes, norm=norm)
                  for norm in resnet.NORM_MODES}
    bn_model = counts["batchnorm"]
    assert trainable_count(bn_model) == published
    without_bn = published - group_count(bn_model, "batchnorm")
    fixup_scalars = blocks * scalars_per_block + 2
    expected = {
        "batchnorm": published,
        "none": without_bn,
        "fixup": without_bn + fixup_scalars,
        "fixup_standardize": without_bn + fixup_scalars,
        "single_bn": without_bn + 2 * width,
        "fixup_single_bn": without_bn + fixup_scalars + 2 * width
        - (1 if name.startswith("wrn") else 0),  # the single BN replaces WRN's final-site bias
        "skipinit": without_bn + (conv_channels - stem) + blocks,
        "nf_resnet": without_bn + 2 * conv_channels + blocks,
    }
    assert set(expected) == set(resnet.NORM_MODES)
    if name == "resnet50":
        assert group_count(bn_model, "batchnorm") == 2 * conv_channels
    for norm, model in counts.items():
        assert trainable_count(model) == expected[norm], norm
        assert model.output["embedding"].shape[-1] == width
    assert group_count(counts["fixup"], "fixup_scalars") == fixup_scalars


TINY = {
    "wrn10_1": lambda **kw: models.build("wrn10_1", input_shape=(8, 8, 3), **kw),
    "basic_resnet": lambda **kw: build_resnet_v1(
        ResNetSpec(False, (1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=4),
        input_shape=(32, 32, 3), **kw),
    "bottleneck_resnet": lambda **kw: build_resnet_v1(
        ResNetSpec(True, (1, 2, 1, 1), widths=(4, 4, 8, 8), stem_width=4),
        input_shape=(32, 32, 3), **kw),
}


def tiny(family, norm, activation="relu", seed=0, **penalties):
    kwargs = dict(num_classes=3, norm=norm, activation=activation, seed=seed)
    kwargs.update({k: 0.0 for k in PENALTIES})
    kwargs.update(penalties)
    return TINY[family](**kwargs)


def images(model, n=6, seed=0):
    shape = model.input_shape[1:]
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def loss_and_grads(model, x, y):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, out["logits"], from_logits=True)) + tf.add_n(model.losses or [0.0])
    return out, loss, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("family,norm,activation", list(itertools.product(
    TINY, resnet.NORM_MODES, ["relu", "swish"])))
def test_every_variable_learns(family, norm, activation):
    model = tiny(family, norm, activation, **PENALTIES)
    x, y = images(model), np.array([0, 1, 2, 0, 1, 2])
    out, loss, grads = loss_and_grads(model, x, y)
    assert out["logits"].shape == (6, 3) and np.isfinite(loss.numpy())
    assert out["embedding"].shape == (6, model.output["embedding"].shape[-1])
    # Fixup's zero classifier and zero last branch layers pass no gradient upstream at init;
    # two SGD steps move them off zero, after which every variable must get a gradient.
    optimizer = keras.optimizers.SGD(0.1)
    for _ in range(2):
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        out, loss, grads = loss_and_grads(model, x, y)
    dead = [v.path for v, g in zip(model.trainable_variables, grads)
            if g is None or not np.any(g.numpy())]
    assert not dead and np.isfinite(loss.numpy())


@pytest.mark.parametrize("family", list(TINY))
@pytest.mark.parametrize("norm", ["fixup", "fixup_single_bn", "fixup_standardize"])
def test_fixup_at_init(family, norm):
    model = tiny(family, norm)
    branch_ends = [layer.output for layer in model.layers if isinstance(layer, bl.ScalarScale)]
    probe = keras.Model(model.input, [model.output["logits"], branch_ends])
    logits, branches = probe(images(model), training=True)
    assert not np.any(logits.numpy())  # zero classifier kernel and bias
    nonzero = [bool(np.any(b.numpy())) for b in branches]
    assert nonzero == [norm == "fixup_standardize"] * len(branches)


def init_embedding_norm(name, norm, x):
    model = models.build(name, num_classes=10, norm=norm, seed=3)
    embedding = model(x, training=True)["embedding"].numpy().astype(np.float64)
    return np.mean(np.sum(embedding**2, axis=1))


def test_embedding_explodes_with_depth_only_without_normalization():
    """Paper section 2.1: without BN and Fixup the embedding grows with depth at init."""
    x = np.random.default_rng(5).normal(size=(16, 32, 32, 3)).astype(np.float32)
    ratios = {norm: init_embedding_norm("wrn40_1", norm, x) / init_embedding_norm("wrn10_1", norm, x)
              for norm in ("none", "fixup", "batchnorm")}
    print("E||Emb||^2 at init, WRN-40-1 / WRN-10-1:", ratios)
    assert ratios["none"] > 10
    for norm in ("fixup", "batchnorm"):
        assert 0.5 < ratios[norm] < 2, norm


def test_single_bn_tames_an_exploded_resnet50_feature_map():
    """Paper section 2.1: with conventional init the pre-BN ResNet-50 features are huge."""
    model = models.build("resnet50", num_classes=1000, norm="single_bn",
                               input_shape=(64, 64, 3), seed=0)
    bn = model.get_layer("final_bn")
    probe = keras.Model(model.input, [bn.input, bn.output])
    x = np.random.default_rng(0).normal(size=(8, 64, 64, 3)).astype(np.float32)
    before, after = (np.mean(np.sum(np.mean(f.numpy().astype(np.float64), axis=(1, 2)) ** 2, 1))
                     for f in probe(x, training=True))
    print(f"ResNet-50 single_bn at init: pooled E||f||^2 before BN {before:.3g}, after {after:.3g}")
    assert before > 100 * after


@pytest.mark.parametrize("norm", resnet.NORM_MODES)
def test_one_fit_epoch_lowers_the_loss(norm):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    x = rng.normal(size=(96, 8, 8, 3)).astype(np.float32) * 0.5
    x[np.arange(96), :, :, y] += 1.0  # the class is the brightest channel
    model = tiny("wrn10_1", norm, seed=1)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    before = model.evaluate(x, {"logits": y}, batch_size=32, verbose=0)
    model.fit(x, {"logits": y}, batch_size=16, epochs=1, verbose=0, shuffle=False)
    after = model.evaluate(x, {"logits": y}, batch_size=32, verbose=0)
    assert after < before, (before, after)


def test_param_groups_partition_the_trainable_variables():
    model = tiny("bottleneck_resnet", "fixup", activation="swish", **PENALTIES)
    groups = param_groups(model)
    flat = [v for group in groups.values() for v in group]
    assert len(flat) == len(model.trainable_variables) == len({id(v) for v in flat})
    assert all(isinstance(v, keras.Variable) for v in flat)
    assert {v.path.split("/")[-1] for v in groups["activation"]} == {"rho"}
    assert [v.path for v in groups["biases"]] == ["classifier/bias"]
    bn_groups = param_groups(tiny("bottleneck_resnet", "batchnorm"))
    assert {v.path.split("/")[-1] for v in bn_groups["batchnorm"]} == {"gamma", "beta"}
    assert bn_groups["fixup_scalars"] == []


def test_bad_names_and_modes_are_rejected():
    for name in ("wrn27_10", "resnet42", "vgg16"):
        with pytest.raises(ValueError, match="model"):
            models.build(name, num_classes=10)
    with pytest.raises(ValueError, match="norm must be one of"):
        models.build("wrn10_1", num_classes=10, norm="groupnorm")
    with pytest.raises(ValueError, match="activation"):
        models.build("wrn10_1", num_classes=10, activation="gelu")
