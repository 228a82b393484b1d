"""bnreg's fused BatchNormalization against keras.layers.BatchNormalization (issue 17).

The same weights and inputs through both layers: outputs, gradients (input, gamma, beta) and
moving statistics after several training steps; inference and frozen mode; mixed precision;
the fallbacks; MirroredStrategy; `.keras`, `model.export` and checkpoints written with Keras' layer.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnet
from bnreg_tf.run import models
from bnreg_tf.nn import batchnorm

Fused = batchnorm.BatchNormalization

SHAPE = (6, 5, 4, 8)


def rel(a, b):
    """Norm-wise relative error of `a` against the reference `b`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def twin_layers(rng, channels, dtype=None, **kwargs):
    """A fused and a Keras layer with the same random gamma, beta and moving statistics."""
    fused = Fused(dtype=dtype, **kwargs)
    plain = keras.layers.BatchNormalization(dtype=dtype, **kwargs)
    for layer in (fused, plain):
        layer.build((None, None, None, channels))
    for weight in plain.weights:
        value = rng.uniform(0.5, 2.0, weight.shape).astype(np.float32)
        weight.assign(value)
    fused.set_weights(plain.get_weights())
    return fused, plain


def step(layer, x, upstream, training=True):
    """Output and gradients w.r.t. input, gamma, beta of `sum(upstream * layer(x))`."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [y] + grads


def batches(rng, count, shape=SHAPE):
    return [tf.constant(rng.normal(size=shape) * rng.uniform(0.5, 3, shape[-1])
                        + rng.normal(size=shape[-1]) * 2, tf.float32) for _ in range(count)]


@pytest.mark.parametrize("momentum,epsilon", [(0.9, 1e-5), (0.99, 1e-3)])
def test_training_matches_keras_over_several_steps(rng, momentum, epsilon):
    fused, plain = twin_layers(rng, SHAPE[-1], momentum=momentum, epsilon=epsilon)
    upstream = tf.constant(rng.normal(size=SHAPE), tf.float32)
    xs = batches(rng, 4)
    mean, var = (w.numpy().astype(np.float64) for w in (plain.moving_mean, plain.moving_variance))
    for x in xs:
        got, want = step(fused, x, upstream), step(plain, x, upstream)
        for name, a, b in zip(("output", "d/dx", "d/dgamma", "d/dbeta"), got, want):
            assert rel(a, b) < 1e-5, name
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-5)
    # And against NumPy float64: Keras' update uses the BIASED batch variance.
    for x in xs:
        x = x.numpy().astype(np.float64)
        mean = momentum * mean + (1 - momentum) * x.mean(axis=(0, 1, 2))
        var = momentum * var + (1 - momentum) * x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(fused.moving_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, var, rtol=1e-5)


def test_training_output_is_the_batch_standardization(rng):
    fused = Fused(epsilon=1e-3, center=False, scale=False)
    x = batches(rng, 1)[0]
    want = x.numpy().astype(np.float64)
    want = (want - want.mean(axis=(0, 1, 2))) / np.sqrt(want.var(axis=(0, 1, 2)) + 1e-3)
    assert rel(fused(x, training=True), want) < 1e-5


@pytest.mark.parametrize("frozen", [False, True], ids=["training=False", "trainable=False"])
def test_inference_and_frozen_layers_use_the_moving_statistics(rng, frozen):
    fused, plain = twin_layers(rng, SHAPE[-1])
    upstream = tf.constant(rng.normal(size=SHAPE), tf.float32)
    x = batches(rng, 1)[0]
    if frozen:  # Keras: a frozen BN layer runs in inference mode even with training=True
        fused.trainable = plain.trainable = False
    before = [w.numpy() for w in fused.weights]
    got, want = step(fused, x, upstream, training=frozen), step(plain, x, upstream, training=frozen)
    for name, a, b in zip(("output", "d/dx", "d/dgamma", "d/dbeta"), got, want):
        assert rel(a, b) < 1e-5, name
    for a, b in zip(before, fused.weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("policy,tolerance", [("mixed_bfloat16", 1e-2), ("mixed_float16", 2e-3)])
def test_mixed_precision_matches_keras(rng, policy, tolerance):
    fused, plain = twin_layers(rng, SHAPE[-1], dtype=policy, momentum=0.9)
    upstream = tf.constant(rng.normal(size=SHAPE), tf.float32)
    for x in batches(rng, 3):
        x = tf.cast(x, keras.DTypePolicy(policy).compute_dtype)
        got, want = step(fused, x, upstream), step(plain, x, upstream)
        assert got[0].dtype == want[0].dtype == x.dtype
        assert fused.gamma.dtype == fused.moving_mean.dtype == "float32"
        for name, a, b in zip(("output", "d/dx", "d/dgamma", "d/dbeta"), got, want):
            assert rel(a, b) < tolerance, name
    # Both compute the statistics of the same low-precision values in float32.
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-5)


def test_channels_last_4d_runs_the_fused_kernel_and_nothing_else(rng):
    fused = Fused()
    fused.build((None, 4, 4, 3))
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(
        tf.TensorSpec((2, 4, 4, 3), tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in ops
    assert not ops & {"Mean", "SquaredDifference", "Rsqrt"}


def test_nan_propagates_through_batchnorm_and_relu_in_an_inference_graph():
    """Keras' BN + ReLU propagate NaN; grappler's oneDNN `_FusedBatchNormEx` rewrite of
    FusedBatchNormV3 -> Relu maps it to 0, so inference (and the export) keeps Keras' path."""
    model = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 1))
    logits = tf.function(lambda images: model(images, training=False)["logits"])(
        np.full((4, 8, 8, 1), np.nan, np.float32))
    assert np.all(np.isnan(logits))


def test_a_divergence_the_fused_training_graph_hides_still_logs_a_nan_loss():
    """Training allows the rewrite: NaN activations may give finite logits, but the Classifier
    logs NaN as soon as a gradient is non-finite (so NonFiniteGuard trips)."""
    from bnreg_tf.run.training import Classifier

    network = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 1))
    model = Classifier(network, 3)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x = np.full((4, 8, 8, 1), np.nan, np.float32)
    logs = model.fit(x, np.zeros(4, np.int32), batch_size=4, verbose=0).history
    assert np.isnan(logs["loss"][0])
    clean = Classifier(models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 1)), 3)
    clean.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = clean.fit(np.ones_like(x), np.zeros(4, np.int32), batch_size=4, verbose=0).history
    assert np.isfinite(logs["loss"][0])


@pytest.mark.parametrize("shape,kwargs", [
    ((6, 8), {}),                                   # rank 2
    ((3, 4, 5, 6, 8), {}),                          # rank 5
    ((6, 8, 5, 4), dict(axis=1)),                   # channels first
    (SHAPE, dict(synchronized=True)),               # cross-replica statistics
    (SHAPE, dict(renorm=True)),
])
def test_fallbacks_are_keras_behaviour(rng, shape, kwargs):
    fused = Fused(momentum=0.9, **kwargs)
    plain = keras.layers.BatchNormalization(momentum=0.9, **kwargs)
    x = tf.constant(rng.normal(size=shape) * 2 + 1, tf.float32)
    fused.build(shape)
    plain.build(shape)
    for _ in range(2):
        np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), rtol=1e-6,
                                   atol=1e-6)
    for a, b in zip(fused.weights, plain.weights):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_config_round_trip_keeps_the_class_and_keras_arguments():
    layer = Fused(momentum=0.9, epsilon=1e-5, gamma_initializer="zeros",
                                    name="x_bn")
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == "bnreg>BatchNormalization"
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is Fused and clone.get_config() == layer.get_config()
    assert layer.get_config() == {**keras.layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, gamma_initializer="zeros", name="x_bn").get_config()}


def small_cnn(norm_layer, seed=0):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False,
                            kernel_initializer=keras.initializers.GlorotNormal(seed))(inputs)
    x = keras.layers.ReLU()(norm_layer(momentum=0.9, name="conv_bn")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(
        4, kernel_initializer=keras.initializers.GlorotNormal(seed + 1))(x))


def trained(norm_layer, x, y, steps=3):
    model = small_cnn(norm_layer)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    losses = [float(model.train_on_batch(x, y)) for _ in range(steps)]
    return model, losses


def test_fit_matches_keras_and_keras_file_and_export_round_trip(tmp_path, rng):
    x = rng.normal(size=(16, 8, 8, 3)).astype(np.float32) + 1
    y = rng.integers(0, 4, 16)
    model, losses = trained(Fused, x, y)
    reference, reference_losses = trained(keras.layers.BatchNormalization, x, y)
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    for a, b in zip(model.weights, reference.weights):
        assert a.path.split("/")[-1] == b.path.split("/")[-1]
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=a.path)
    expected = model(x, training=False).numpy()
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(reloaded.get_layer("conv_bn")) is Fused
    np.testing.assert_allclose(reloaded(x, training=False), expected, rtol=1e-6)
    model.export(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # keep a reference: it owns the variables
    np.testing.assert_allclose(loaded.serve(tf.constant(x)), expected, rtol=1e-5, atol=1e-6)


def test_mirrored_strategy_matches_one_device_per_replica(mirrored, rng):
    """Keras' semantics with synchronized=False: each replica normalises its half of the batch
    with that half's statistics and updates its own copy of the moving statistics (Keras 3
    creates them with aggregation NONE; the primary copy is the one saved)."""
    x = rng.normal(size=(8, 8, 8, 3)).astype(np.float32) * 2 + 1
    with mirrored.scope():
        layer = Fused(momentum=0.9)
        layer.build((None, 8, 8, 3))
    dataset = mirrored.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(x).batch(8))
    outputs = mirrored.run(tf.function(lambda batch: layer(batch, training=True)),
                           args=(next(iter(dataset)),))
    outputs = mirrored.experimental_local_results(outputs)
    means = mirrored.experimental_local_results(layer.moving_mean.value)
    variances = mirrored.experimental_local_results(layer.moving_variance.value)
    for replica, half in enumerate((x[:4], x[4:])):
        single = Fused(momentum=0.9)
        assert rel(outputs[replica], single(half, training=True)) < 1e-5
        np.testing.assert_allclose(means[replica], single.moving_mean, rtol=1e-5)
        np.testing.assert_allclose(variances[replica], single.moving_variance, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mean, means[0])


BUILDERS = {
    "resnet": lambda: models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 3),
                                         norm="batchnorm"),
    "efficientnet": lambda: efficientnet.build_model("b0", num_classes=3, input_shape=(32, 32, 3)),
}


@pytest.mark.parametrize("family", BUILDERS)
def test_checkpoints_written_with_keras_batchnorm_restore(tmp_path, rng, monkeypatch, family):
    build = BUILDERS[family]
    with monkeypatch.context() as patch:  # the model as built before issue 17
        patch.setattr(batchnorm, "BatchNormalization", keras.layers.BatchNormalization)
        old = build()
    assert not any(isinstance(layer, Fused) for layer in old.layers)
    for weight in old.weights:
        weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32) * 0.1)
    path = tf.train.Checkpoint(network=old).write(str(tmp_path / "ckpt"))
    old.save_weights(tmp_path / "w.weights.h5")
    for restore in ("checkpoint", "weights.h5"):
        new = build()
        assert any(isinstance(layer, Fused) for layer in new.layers)
        assert [w.path for w in new.weights] == [w.path for w in old.weights]
        if restore == "checkpoint":
            tf.train.Checkpoint(network=new).read(path).assert_existing_objects_matched()
        else:
            new.load_weights(tmp_path / "w.weights.h5")
        for a, b in zip(new.weights, old.weights):
            np.testing.assert_array_equal(a, b, err_msg=f"{restore}: {a.path}")
        x = rng.normal(size=(2, *new.input_shape[1:])).astype(np.float32)
        want, got = old(x, training=False)["logits"], new(x, training=False)["logits"]
        assert rel(got, want) < 1e-5
