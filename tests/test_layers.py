"""Penalty layers in fit/evaluate/MirroredStrategy, the other layers, and serialization."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf.nn import layers, penalties
from tests.test_penalties import np_kl, np_mean_sq_norm, rel_err


def np_cross_entropy(logits, labels):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(log_probs[np.arange(len(labels)), labels])


def small_model(sync_bn=False, penalty_layers=True, bn=True):
    """conv -> KL -> [BN] -> relu -> conv -> [BN] -> pool -> EL2 -> dense -> FL2."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    if penalty_layers:
        x = layers.StandardizationKL(0.01, name="kl_conv1")(x)
    if bn:
        x = keras.layers.BatchNormalization(synchronized=sync_bn)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv2")(x)
    if bn:
        x = keras.layers.BatchNormalization(synchronized=sync_bn)(x)
    embedding = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if penalty_layers:
        embedding = layers.EmbeddingL2(0.5, name="embedding_l2")(embedding)
    logits = keras.layers.Dense(5, name="classifier")(embedding)
    if penalty_layers:
        logits = layers.FunctionalL2(0.2, name="functional_l2")(logits)
    return keras.Model(inputs, {"logits": logits, "embedding": embedding})


def compile_for_logits(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )


@pytest.fixture
def batch(rng):
    x = (rng.normal(size=(8, 8, 8, 3)) * 3).astype(np.float32)
    return x, {"logits": rng.integers(0, 5, 8)}


def by_hand(model, x, labels):
    """Data loss and each penalty, from the model's activations and NumPy float64."""
    probe = keras.Model(model.inputs, [model.get_layer("conv1").output, model.output])
    conv1, out = probe(tf.constant(x), training=False)  # no BN: inference equals training
    logits, embedding = out["logits"].numpy(), out["embedding"].numpy()
    data = np_cross_entropy(logits, labels)
    return data, {
        "kl_conv1": np_kl(conv1.numpy(), 1e-5),
        "embedding_l2": np_mean_sq_norm(embedding),
        "functional_l2": np_mean_sq_norm(logits),
    }


def test_penalty_layer_adds_one_loss_in_training_and_none_at_inference(rng):
    x = rng.normal(size=(4, 10)).astype(np.float32)
    layer = layers.EmbeddingL2(0.3)
    np.testing.assert_array_equal(layer(x, training=False), x)
    assert layer.losses == []
    np.testing.assert_array_equal(layer(x, training=True), x)
    assert len(layer.losses) == 1
    assert rel_err(layer.losses[0], 0.3 * np_mean_sq_norm(x)) < 1e-5
    layer(x)  # a call with no `training` is inference
    assert layer.losses == []


def test_fit_loss_is_data_loss_plus_penalties(batch):
    x, y = batch
    model = small_model(bn=False)
    compile_for_logits(model)
    data, values = by_hand(model, x, y["logits"])
    coefficients = {"kl_conv1": 0.01, "embedding_l2": 0.5, "functional_l2": 0.2}
    expected = data + sum(coefficients[name] * values[name] for name in values)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert rel_err(logs["loss"], expected) < 1e-5
    for name, value in values.items():  # the raw penalty, logged as a metric
        assert rel_err(logs[name], value) < 1e-5
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert rel_err(history.history["loss"][0], expected) < 1e-5


def test_evaluate_excludes_penalties(batch):
    x, y = batch
    model = small_model(bn=False)
    compile_for_logits(model)
    data, _ = by_hand(model, x, y["logits"])
    logs = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert rel_err(logs["loss"], data) < 1e-5
    assert np.isnan(logs["embedding_l2"])  # penalties are not measured at inference


class NaiveEmbeddingL2(keras.layers.Layer):
    """What a user would write first: Keras's shared add_loss list, no per-replica storage."""

    def call(self, x, training=None):
        if training:
            self.add_loss(penalties.embedding_l2(x))
        return x


def naive_model(sync_bn):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(synchronized=sync_bn)(x)
    embedding = NaiveEmbeddingL2()(keras.layers.GlobalAveragePooling2D()(x))
    x = keras.layers.BatchNormalization(synchronized=sync_bn)(keras.layers.Dense(5)(embedding))
    return keras.Model(inputs, {"logits": x, "embedding": embedding})


def train_loss(build, mirrored, strategy_name, x, y):
    keras.utils.set_random_seed(7)
    weights = build().get_weights()
    strategy = mirrored if strategy_name == "mirrored" else tf.distribute.get_strategy()
    with strategy.scope():
        model = build()
        model.set_weights(weights)
        compile_for_logits(model)
    return model.train_on_batch(x, y, return_dict=True)


@pytest.mark.parametrize("sync_bn", [False, True])
def test_mirrored_two_replicas_report_the_single_device_loss(mirrored, batch, sync_bn):
    x, y = batch
    build = lambda: small_model(sync_bn=sync_bn)  # noqa: E731
    one = train_loss(build, mirrored, "default", x, y)
    two = train_loss(build, mirrored, "mirrored", x, y)
    for key in ("loss", "kl_conv1", "embedding_l2", "functional_l2"):
        assert rel_err(two[key], one[key]) < 1e-5, key


def test_naive_add_loss_layer_is_wrong_under_synchronized_bn(mirrored, batch):
    """The failure PenaltyLayer guards against; if this starts passing exactly, Keras fixed it."""
    x, y = batch
    build = lambda: naive_model(sync_bn=True)  # noqa: E731
    one = train_loss(build, mirrored, "default", x, y)["loss"]
    two = train_loss(build, mirrored, "mirrored", x, y)["loss"]
    print(f"naive add_loss layer, synchronized BN: one device {one:.4f}, 2 replicas {two:.4f}")
    assert rel_err(two, one) > 1e-4


def test_swish_matches_numpy(rng):
    x = rng.normal(size=(3, 5)).astype(np.float32) * 4
    layer = layers.Swish(rho_init=0.7)
    expected = x * (1 / (1 + np.exp(-0.7 * x.astype(np.float64))))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)
    assert [w.name for w in layer.trainable_weights] == ["rho"]


def test_swish_rho_trainability(rng):
    frozen = layers.Swish(trainable_rho=False)
    frozen.build((None, 3))
    assert frozen.trainable_weights == [] and len(frozen.non_trainable_weights) == 1
    np.testing.assert_allclose(layers.Swish()(np.array([[2.0, -4.0]], np.float32)), [[1.0, -2.0]])


def test_fixup_scalars(rng):
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    bias, scale = layers.ScalarBias(), layers.ScalarScale()
    np.testing.assert_array_equal(scale(bias(x)), x)  # identity at init (b=0, s=1)
    bias.value.assign(0.25)
    scale.value.assign(-2.0)
    np.testing.assert_allclose(scale(bias(x)), (x + 0.25) * -2.0, rtol=1e-6)
    assert bias.count_params() == scale.count_params() == 1


def test_stochastic_depth_is_per_sample_and_preserves_the_mean():
    rate, n = 0.3, 20000
    x = np.ones((n, 2, 2, 3), np.float32)
    layer = layers.StochasticDepth(rate, seed=3)
    np.testing.assert_array_equal(layer(x, training=False), x)
    np.testing.assert_array_equal(layers.StochasticDepth(0.0)(x, training=True), x)
    y = layer(x, training=True).numpy()
    per_sample = y.reshape(n, -1)
    assert np.all(per_sample == per_sample[:, :1])  # one decision per example
    np.testing.assert_allclose(np.unique(per_sample), [0.0, 1 / 0.7], rtol=1e-6)
    dropped = np.mean(per_sample[:, 0] == 0)
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs(dropped - rate) < 4 * sigma
    assert abs(y.mean() - 1.0) < 4 * sigma / 0.7


def test_stochastic_depth_rejects_bad_rates():
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="drop_rate"):
            layers.StochasticDepth(rate)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "x"])
def test_penalty_coefficients_are_validated(bad):
    with pytest.raises(ValueError, match="coefficient"):
        layers.FunctionalL2(bad)


ALL_LAYERS = [
    layers.EmbeddingL2(0.1, name="a"),
    layers.FunctionalL2(0.2, log_metric=False, name="b"),
    layers.StandardizationKL(1e-6, epsilon=1e-3, name="c"),
    layers.Swish(rho_init=0.5, trainable_rho=False, name="d"),
    layers.ScalarBias(name="e"),
    layers.ScalarScale(name="f"),
    layers.StochasticDepth(0.2, seed=5, name="g"),
]


@pytest.mark.parametrize("layer", ALL_LAYERS, ids=lambda layer: type(layer).__name__)
def test_layer_config_round_trip(layer):
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"].startswith("bnreg>")
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()


def all_layers_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = layers.StandardizationKL(0.01)(x)
    x = layers.ScalarScale()(layers.ScalarBias()(x))
    x = layers.Swish(rho_init=0.3)(x)
    x = keras.layers.Add()([x, layers.StochasticDepth(0.5, seed=1)(x)])
    embedding = layers.EmbeddingL2(0.1)(keras.layers.GlobalAveragePooling2D()(x))
    logits = layers.FunctionalL2(0.1)(keras.layers.Dense(3)(embedding))
    return keras.Model(inputs, {"logits": logits, "embedding": embedding})


def test_keras_file_and_savedmodel_round_trip(tmp_path, rng):
    model = all_layers_model()
    for layer in model.layers:  # move the Fixup scalars off their identity init
        if isinstance(layer, (layers.ScalarBias, layers.ScalarScale)):
            layer.value.assign(0.7)
    x = rng.normal(size=(5, 6, 6, 2)).astype(np.float32)
    expected = model(x, training=False)["logits"].numpy()
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded(x, training=False)["logits"], expected, rtol=1e-6)
    model.export(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # keep a reference: it owns the variables
    served = loaded.serve(tf.constant(x))
    np.testing.assert_allclose(served["logits"], expected, rtol=1e-5, atol=1e-6)
