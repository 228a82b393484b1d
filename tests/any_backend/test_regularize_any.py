"""`regularize` on keras.applications models and a Sequential CNN, on any Keras backend
(issue 24; moved here from tests/test_regularize.py so that `.ci/run` runs it on TensorFlow and
on JAX).

References: the classifier's input and the logits, probed by the layer names keras.applications
gives them (not by regularize's own search), reduced in NumPy float64 (docs/references.md
§1.2-1.4). The applications are built at 32x32 with 10 classes and fitted for one step with a
zero learning rate: on TensorFlow eagerly (a graph trace of DenseNet121 alone takes ~30 s on 2
cores), on JAX compiled (its eager step compiles every op apart; `forward` compiles the probes).
"""
import logging

import keras
import numpy as np
import pytest

from bnreg_tf import regularize
from bnreg_tf.nn import layers
from tests.any_backend.helpers import backend, forward, np_cross_entropy, np_mean_sq_norm, rel_err

A = keras.applications
SMALL = dict(input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None)


def sequential_cnn():
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv1"),
        keras.layers.Conv2D(6, 3, strides=2, name="conv2"),
        keras.layers.BatchNormalization(name="bn2"),
        keras.layers.ReLU(name="relu2"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(10, name="classifier"),
    ], name="cnn")


# name: (builder, the classifier's layer name)
MODELS = {
    "ResNet50V2": (lambda: A.ResNet50V2(**SMALL), "predictions"),
    "DenseNet121": (lambda: A.DenseNet121(**SMALL), "predictions"),
    "MobileNetV3Small": (lambda: A.MobileNetV3Small(**SMALL, dropout_rate=0.0), "logits"),
    "EfficientNetV2B0": (lambda: A.EfficientNetV2B0(**SMALL), "predictions"),
    "ConvNeXtTiny": (lambda: A.ConvNeXtTiny(**SMALL), "convnext_tiny_head_dense"),
    "Sequential": (sequential_cnn, "classifier"),
}


def numpy(tensor):
    return keras.ops.convert_to_numpy(tensor).astype(np.float64)


@pytest.mark.parametrize("name", MODELS)
def test_regularize_finds_the_embedding_and_keeps_the_outputs(name, rng, caplog):
    build, classifier = MODELS[name]
    base = build()
    for layer in base.layers:  # EfficientNetV2's stochastic depth and top dropout: deterministic
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    kl = 1e-3 if name == "Sequential" else 0.0
    with caplog.at_level(logging.INFO):
        model = regularize(base, embedding_l2=0.3, functional_l2=0.2, standardization_kl=kl)
    assert ("LayerNormalization" in caplog.text) == (name == "ConvNeXtTiny")
    assert isinstance(model.output, keras.KerasTensor) and model.output.shape == (None, 10)
    kls = [layer.name for layer in model.layers if isinstance(layer, layers.StandardizationKL)]
    assert kls == (["conv1_kl", "conv2_kl"] if kl else [])

    x = rng.uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)
    y = np.array([1, 3, 5, 7])
    probe = keras.Model(base.inputs, [base.get_layer(classifier).input, base.outputs[0]])
    e, z = (numpy(t).reshape(4, -1) for t in forward(probe, x, training=True))
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(True),
                  metrics=["accuracy"],
                  run_eagerly=backend() == "tensorflow" and name != "Sequential")
    logs = {k: v[0] for k, v in model.fit(x, y, batch_size=4, verbose=0).history.items()}
    assert 0 <= logs["accuracy"] <= 1
    # float32 through ~100-600 layers with multithreaded reductions: the fit's forward and the
    # probe's agree to ~1e-4, run to run; the wrong tensor (e.g. ConvNeXt's pool) is far off.
    assert rel_err(logs["embedding_l2"], np_mean_sq_norm(e)) < 1e-3
    assert rel_err(logs["functional_l2"], np_mean_sq_norm(z)) < 1e-3
    penalties = 0.3 * np_mean_sq_norm(e) + 0.2 * np_mean_sq_norm(z)
    if kl:
        penalties += kl * (logs["conv1_kl"] + logs["conv2_kl"])
    # A missing or doubled penalty (>= 10% of this loss) would be far off.
    assert rel_err(logs["loss"], np_cross_entropy(z, y) + penalties) < 1e-3

    contract = regularize(base, return_embedding=True)
    out = forward(contract, x)
    assert out["embedding"].shape == (4, e.shape[1]) and out["logits"].shape == (4, 10)
    np.testing.assert_allclose(numpy(out["embedding"]), numpy(forward(probe, x)[0]).reshape(4, -1),
                               rtol=1e-5, atol=1e-6)
