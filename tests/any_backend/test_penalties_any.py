"""The penalties and their layers on the current backend (issue 24): EL2, FL2 and the KL against
NumPy float64 and the KL's gradient against its closed form (docs/references.md §1.2-1.4); the
layers' loss in `fit`, their logged values in History and the progress lines, `evaluate`."""
import re

import keras
import numpy as np
import pytest

from bnreg_tf.nn import PenalizedModel, layers, penalties, regularize
from tests.any_backend.helpers import (backend, np_cross_entropy, np_kl, np_kl_gradient,
                                       np_mean_sq_norm, rel_err, value_and_gradient)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (32, 640), (5, 1, 1, 48)])
def test_embedding_and_functional_l2_match_numpy(rng, shape):
    x = (rng.normal(size=shape) * rng.uniform(0.1, 10)).astype(np.float32)
    assert rel_err(penalties.embedding_l2(x), np_mean_sq_norm(x)) < 1e-5
    assert rel_err(penalties.functional_l2(x), np_mean_sq_norm(x)) < 1e-5


@pytest.mark.parametrize("shape", [(16, 5), (4, 6, 7, 3), (2, 3, 3, 64), (8, 4, 4, 2, 3)])
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_standardization_kl_matches_numpy(rng, shape, eps):
    scale = rng.uniform(0.2, 3.0, size=shape[-1])
    x = (rng.normal(size=shape) * scale + rng.normal(size=shape[-1])).astype(np.float32)
    assert rel_err(penalties.standardization_kl(x, epsilon=eps), np_kl(x, eps)) < 1e-5


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("offset", [1.0, 200.0], ids=["centred", "mean_dwarfs_spread"])
def test_standardization_kl_value_and_gradient_are_the_closed_form(rng, jit, offset):
    # With channel means of 50-300 and spreads of 0.05-1, E[x^2] - mean^2 in float32 would lose
    # the variance, and with it the gradient (which has 1 / var): two-pass moments keep it.
    eps = 1e-5
    spread = rng.uniform(0.05, 1.0, 6) if offset > 1 else rng.uniform(0.2, 3.0, 6)
    x = (rng.normal(size=(8, 3, 5, 6)) * spread + offset * rng.uniform(0.25, 1.5, 6))
    x = x.astype(np.float32)
    value, gradient = value_and_gradient(
        lambda t: penalties.standardization_kl(t, epsilon=eps), x, jit=jit)
    assert rel_err(value, np_kl(x, eps)) < 1e-5
    want = np_kl_gradient(x, eps)
    np.testing.assert_allclose(gradient, want, rtol=1e-3, atol=1e-6 * np.abs(want).max())


def test_penalties_reduce_in_float32_and_the_kl_gradient_keeps_the_input_dtype(rng):
    x = rng.normal(size=(4, 3, 3, 8)).astype(np.float32)
    low = keras.ops.cast(x, "bfloat16")
    exact = keras.ops.convert_to_numpy(keras.ops.cast(low, "float32"))
    for function, reference in ((penalties.embedding_l2, np_mean_sq_norm(exact)),
                                (penalties.standardization_kl, np_kl(exact, 1e-5))):
        value = function(low)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert rel_err(value, reference) < 1e-5
    if backend() == "jax":
        import jax

        grad = jax.grad(penalties.standardization_kl)(low)
        assert keras.backend.standardize_dtype(grad.dtype) == "bfloat16"


def test_dropout_penalty_matches_numpy(rng):
    kernel = rng.normal(size=(10, 3)).astype(np.float32)
    e = rng.normal(size=(4, 10)).astype(np.float32)
    expected = np.sum(np.sum(kernel.astype(np.float64) ** 2, 1) * np.mean(e.astype(np.float64) ** 2, 0))
    assert rel_err(penalties.dropout_penalty(kernel, e), expected) < 1e-5


def small_model(model_class=PenalizedModel):
    """conv -> KL -> relu -> conv -> pool -> EL2 -> dense -> FL2 (no BN: inference = training)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU()(layers.StandardizationKL(0.01, name="kl_conv1")(x))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv2")(x)
    embedding = layers.EmbeddingL2(0.5, name="embedding_l2")(
        keras.layers.GlobalAveragePooling2D(name="pool")(x))
    logits = layers.FunctionalL2(0.2, name="functional_l2")(
        keras.layers.Dense(5, name="classifier")(embedding))
    return model_class(inputs, {"logits": logits, "embedding": embedding})


COEFFICIENTS = {"kl_conv1": 0.01, "embedding_l2": 0.5, "functional_l2": 0.2}


def by_hand(model, x, labels):
    """The data loss and each raw penalty, from the model's activations in NumPy float64."""
    probe = keras.Model(model.inputs, [model.get_layer("conv1").output, model.output])
    conv1, out = probe(x, training=False)
    logits = keras.ops.convert_to_numpy(out["logits"])
    values = {"kl_conv1": np_kl(keras.ops.convert_to_numpy(conv1), 1e-5),
              "embedding_l2": np_mean_sq_norm(keras.ops.convert_to_numpy(out["embedding"])),
              "functional_l2": np_mean_sq_norm(logits)}
    return np_cross_entropy(logits, labels), values


@pytest.fixture
def batch(rng):
    return (rng.normal(size=(8, 8, 8, 3)) * 3).astype(np.float32), rng.integers(0, 5, 8)


def compile_sgd0(model):
    model.compile(keras.optimizers.SGD(0.0),
                  {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})


def test_fit_logs_every_penalty_in_history_and_the_progress_line(batch, capsys):
    x, labels = batch
    model = small_model()
    compile_sgd0(model)
    data, values = by_hand(model, x, labels)
    history = model.fit(x, {"logits": labels}, batch_size=8, epochs=2, verbose=2,
                        shuffle=False).history
    line = capsys.readouterr().out.strip().splitlines()[-1]
    expected_loss = data + sum(COEFFICIENTS[name] * value for name, value in values.items())
    assert rel_err(history["loss"][-1], expected_loss) < 1e-5
    for name, value in values.items():
        assert len(history[name]) == 2 and rel_err(history[name][-1], value) < 1e-5, name
        printed = re.search(rf"\b{name}: ([0-9.e+-]+)", line)
        assert printed and rel_err(float(printed.group(1)), value) < 1e-3, (name, line)
    logs = model.train_on_batch(x, {"logits": labels}, return_dict=True)
    assert rel_err(logs["embedding_l2"], values["embedding_l2"]) < 1e-5
    evaluated = model.evaluate(x, {"logits": labels}, verbose=0, return_dict=True)
    assert rel_err(evaluated["loss"], data) < 1e-5   # penalties are training terms only
    assert np.isnan(evaluated["embedding_l2"])       # not measured at inference


def test_penalty_layer_adds_one_loss_in_training_and_none_at_inference(rng):
    x = rng.normal(size=(4, 10)).astype(np.float32)
    layer = layers.EmbeddingL2(0.3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    assert layer.losses == []
    layer(x, training=True)
    assert len(layer.losses) == 1 and rel_err(layer.losses[0], 0.3 * np_mean_sq_norm(x)) < 1e-5
    assert rel_err(layer.value_metric.result(), np_mean_sq_norm(x)) < 1e-5


def test_a_plain_keras_model_trains_with_the_penalties_and_logs_them_off_jax(batch):
    """A plain keras.Model gets the penalties in its loss on every backend; on JAX only a
    PenalizedModel (what regularize returns) can log them (bnreg_tf.nn.penalized)."""
    x, labels = batch
    model = small_model(keras.Model)
    compile_sgd0(model)
    data, values = by_hand(model, x, labels)
    logs = model.train_on_batch(x, {"logits": labels}, return_dict=True)
    expected_loss = data + sum(COEFFICIENTS[name] * value for name, value in values.items())
    assert rel_err(logs["loss"], expected_loss) < 1e-5
    if backend() == "jax":
        assert np.isnan(logs["embedding_l2"])
    else:
        assert rel_err(logs["embedding_l2"], values["embedding_l2"]) < 1e-5


def test_regularize_gives_a_penalized_model_that_a_keras_file_keeps(batch, tmp_path):
    x, labels = batch
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    plain = keras.Model(inputs, keras.layers.Dense(5)(pooled))
    assert regularize(plain) is plain
    model = regularize(plain, embedding_l2=0.5, functional_l2=0.2, standardization_kl=0.01)
    assert isinstance(model, PenalizedModel) and isinstance(model.output, keras.KerasTensor)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded) is PenalizedModel
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-6, atol=1e-6)
    loaded.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logs = loaded.fit(x, labels, verbose=0).history
    assert {"embedding_l2", "functional_l2"} <= set(logs) and np.isfinite(logs["embedding_l2"][0])
