"""`regularize` on a contract model and on a keras.applications model."""
import keras
import numpy as np
import pytest

from bnreg_tf import layers, regularize
from tests.test_penalties import np_mean_sq_norm, rel_err


def contract_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    embedding = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(5, name="classifier")(embedding)
    return keras.Model(inputs, {"logits": logits, "embedding": embedding})


def penalty_layers(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_regularize_contract_model_adds_the_expected_losses(rng):
    base = contract_model()
    model = regularize(base, embedding_l2=0.3, functional_l2=0.2, standardization_kl=1e-3)
    assert [layer.name for layer in penalty_layers(model, layers.StandardizationKL)] == [
        "kl_conv1", "kl_conv2"]
    assert model.get_layer("classifier") is base.get_layer("classifier")  # weights shared
    x = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
    out = model(x, training=True)
    losses = {loss_layer.name: loss_layer.losses for loss_layer in model.layers
              if isinstance(loss_layer, layers.PenaltyLayer)}
    assert all(len(value) == 1 for value in losses.values()) and len(model.losses) == 4
    assert rel_err(losses["embedding_l2"][0], 0.3 * np_mean_sq_norm(out["embedding"].numpy())) < 1e-5
    assert rel_err(losses["functional_l2"][0], 0.2 * np_mean_sq_norm(out["logits"].numpy())) < 1e-5
    model(x, training=False)
    assert model.losses == []
    np.testing.assert_allclose(out["logits"], base(x)["logits"], rtol=1e-6)


def test_regularize_dropout_sits_between_embedding_and_classifier(rng):
    base = contract_model()
    model = regularize(base, dropout=0.5, seed=0)
    x = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    train, infer = model(x, training=True), model(x, training=False)
    np.testing.assert_allclose(train["embedding"], infer["embedding"], rtol=1e-6)  # pre-dropout
    assert not np.allclose(train["logits"], infer["logits"])
    np.testing.assert_allclose(infer["logits"], base(x)["logits"], rtol=1e-6)


def test_regularize_keras_applications_model(rng):
    base = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None,
        include_preprocessing=False)
    pool = [layer for layer in base.layers  # the last one; the others are squeeze-excite pools
            if isinstance(layer, keras.layers.GlobalAveragePooling2D)][-1]
    convs = [layer for layer in base.layers if isinstance(
        layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense))]
    model = regularize(base, embedding_l2=0.1, functional_l2=0.4, standardization_kl=1e-6,
                       embedding_layer=pool.name)
    assert len(penalty_layers(model, layers.StandardizationKL)) == len(convs)
    x = rng.uniform(0, 255, size=(3, 32, 32, 3)).astype(np.float32)
    out = model(x, training=True)
    assert out["embedding"].shape == (3, 1, 1, 576) and out["logits"].shape == (3, 10)
    assert len(model.losses) == len(convs) + 2
    el2 = model.get_layer("embedding_l2").losses[0]
    assert rel_err(el2, 0.1 * np_mean_sq_norm(out["embedding"].numpy())) < 1e-5
    fl2 = model.get_layer("functional_l2").losses[0]
    assert rel_err(fl2, 0.4 * np_mean_sq_norm(out["logits"].numpy())) < 1e-5


def test_regularize_rejects_what_it_cannot_do():
    probs = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10, include_preprocessing=False)
    pool = [layer.name for layer in probs.layers
            if isinstance(layer, keras.layers.GlobalAveragePooling2D)][-1]
    with pytest.raises(ValueError, match="classifier_activation=None"):
        regularize(probs, embedding_l2=0.1, embedding_layer=pool)
    with pytest.raises(ValueError, match="embedding_layer"):
        regularize(probs, embedding_l2=0.1)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        regularize(contract_model(), embedding_layer="nope")
    with pytest.raises(ValueError, match="embedding_l2"):
        regularize(contract_model(), embedding_l2=-1)
    with pytest.raises(ValueError, match="dropout"):
        regularize(contract_model(), dropout=1.0)
