"""`regularize` on keras.applications, Sequential, contract and hand-built models.

References: the classifier's input and the logits probed by the layer names keras.applications
gives them (not by regularize's own search), reduced in NumPy float64. The applications are built
at 32x32 with 10 classes and fitted for one eager step (a graph trace of DenseNet121 alone
takes ~30 s on 2 cores; the Sequential CNN is fitted as compiled by default).
"""
import logging
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import bnreg_tf
from bnreg_tf.nn import layers
from bnreg_tf import regularize
from bnreg_tf.nn.penalties import standardization_kl
from resnet.resnet_v1 import ResNetSpec, build_resnet_v1
from tests.test_penalties import np_mean_sq_norm, rel_err

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


# name: (builder, the classifier's layer name, kwargs of regularize)
MODELS = {
    "ResNet50V2": (lambda: A.ResNet50V2(**SMALL), "predictions"),
    "DenseNet121": (lambda: A.DenseNet121(**SMALL), "predictions"),
    "MobileNetV3Small": (lambda: A.MobileNetV3Small(**SMALL, dropout_rate=0.0), "logits"),
    "EfficientNetV2B0": (lambda: A.EfficientNetV2B0(**SMALL), "predictions"),
    "ConvNeXtTiny": (lambda: A.ConvNeXtTiny(**SMALL), "convnext_tiny_head_dense"),
    "Sequential": (sequential_cnn, "classifier"),
}


def np_cross_entropy(logits, labels):
    z = logits - logits.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -np.mean(log_p[np.arange(len(labels)), labels])


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
    e, z = (np.asarray(t, np.float64).reshape(4, -1) for t in probe(x, training=True))
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(True),
                  metrics=["accuracy"], run_eagerly=name != "Sequential")
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
    out = contract(x)
    assert out["embedding"].shape == (4, e.shape[1]) and out["logits"].shape == (4, 10)
    e_inference = probe(x)[0].numpy().reshape(4, -1)
    np.testing.assert_allclose(out["embedding"], e_inference, rtol=1e-5, atol=1e-6)


def residual_model():
    inputs = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    y = keras.layers.Conv2D(4, 3, padding="same", name="branch1")(x)
    y = keras.layers.BatchNormalization(name="branch1_bn")(y)
    y = keras.layers.Activation("swish", name="branch1_act")(y)
    y = keras.layers.Conv2D(4, 1, name="branch2")(y)
    x = keras.layers.ReLU(name="block_out")(keras.layers.Add(name="add")([x, y]))
    x = keras.layers.Conv2D(6, 1, name="linear_projection")(x)  # feeds no activation
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="classifier")(x), name="residual")


def test_kl_sits_where_batchnorm_would_and_never_on_the_classifier(rng):
    base = residual_model()
    model = regularize(base, standardization_kl=0.1)
    kls = {layer.name: layer for layer in model.layers if isinstance(layer, layers.StandardizationKL)}
    assert sorted(kls) == ["branch1_kl", "branch2_kl", "hidden_kl", "stem_kl"]
    x = rng.normal(size=(6, 8, 8, 3)).astype(np.float32)
    model(x, training=True)
    stem = base.get_layer("stem")  # KL between the conv and its own ReLU: the pre-activation
    pre = tf.nn.conv2d(x, stem.kernel, 1, "SAME") + stem.bias
    assert rel_err(kls["stem_kl"].losses[0], 0.1 * standardization_kl(pre)) < 1e-5
    branch2 = keras.Model(base.input, base.get_layer("branch2").output)(x, training=True)
    assert rel_err(kls["branch2_kl"].losses[0], 0.1 * standardization_kl(branch2)) < 1e-5
    assert model.get_layer("stem") is not stem and model.get_layer("branch1") is base.get_layer("branch1")
    np.testing.assert_allclose(model(x), base(x), rtol=1e-5, atol=1e-6)


def test_builder_and_regularize_attach_the_same_penalties_to_the_same_tensors(rng):
    spec = ResNetSpec(False, (1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=4)
    penalties = dict(standardization_kl=1e-3, embedding_l2=0.1, functional_l2=0.2)
    kwargs = dict(input_shape=(32, 32, 3), num_classes=3, norm="batchnorm", activation="relu",
                  dropout=0.0, seed=1)
    built = build_resnet_v1(spec, **kwargs, **penalties)
    plain = build_resnet_v1(spec, **kwargs, **{k: 0.0 for k in penalties})
    attached = regularize(plain, **penalties)
    plain.set_weights(built.get_weights())
    x = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)

    def losses(model):
        model(x, training=True)
        return {layer.name: float(layer.losses[0]) for layer in model.layers
                if isinstance(layer, layers.PenaltyLayer)}

    ours, theirs = losses(built), losses(attached)
    assert sorted(ours) == sorted(theirs) and len(ours) == 2 + 1 + 4 * 2 + 3  # stem, blocks, shortcuts
    for key, value in ours.items():
        assert rel_err(theirs[key], value) < 1e-5, key
    assert sorted(attached.output) == ["embedding", "logits"]


def test_contract_model_keeps_its_dict_and_dropout_sits_before_the_classifier(rng):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    embedding = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    base = keras.Model(inputs, {"logits": keras.layers.Dense(5, name="classifier")(embedding),
                                "embedding": embedding})
    model = regularize(base, embedding_l2=0.3, dropout=0.5, seed=0)
    x = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    train = model(x, training=True)
    el2 = model.get_layer("embedding_l2").losses
    infer = model(x, training=False)
    np.testing.assert_allclose(train["embedding"], infer["embedding"], rtol=1e-6)  # pre-dropout
    assert not np.allclose(train["logits"], infer["logits"])
    np.testing.assert_allclose(infer["logits"], base(x)["logits"], rtol=1e-6)
    assert rel_err(el2[0], 0.3 * np_mean_sq_norm(train["embedding"].numpy())) < 1e-5
    assert regularize(base) is base


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x)


def one_line_error(call):
    with pytest.raises(ValueError) as info:
        call()
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    return str(info.value)


def test_bad_models_and_arguments_get_one_line():
    model = Subclassed()
    model(np.zeros((1, 4), np.float32))
    assert "keras.Input(shape)" in one_line_error(lambda: regularize(model, embedding_l2=0.1))
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    assert "keras.Input" in one_line_error(lambda: regularize(unbuilt, embedding_l2=0.1))
    candidates = "candidates: 'drop', 'hidden', 'pool'"
    assert candidates in one_line_error(lambda: regularize(residual_model(), embedding="nope"))
    assert candidates in one_line_error(lambda: regularize(residual_model(), embedding="branch1"))
    named = regularize(residual_model(), embedding_l2=0.1, embedding="pool", return_embedding=True)
    assert named.output["embedding"].shape == (None, 6)
    probs = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    assert "classifier_activation=None" in one_line_error(lambda: regularize(probs, embedding_l2=0.1))
    once = regularize(residual_model(), embedding_l2=0.1)
    assert "already has EmbeddingL2" in one_line_error(lambda: regularize(once, embedding_l2=0.1))
    assert "embedding_l2" in one_line_error(lambda: regularize(residual_model(), embedding_l2=-1))
    assert "dropout" in one_line_error(lambda: regularize(residual_model(), dropout=1.0))


def run_python(code, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def registered_in_source():
    """Class names after a `register_keras_serializable` decorator anywhere in the repository."""
    names = set()
    for directory in ("bnreg_tf", "efficientnet", "resnet"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, directory)):
            for file in files:
                if file.endswith(".py"):
                    text = open(os.path.join(dirpath, file)).read()
                    names |= set(re.findall(
                        r"@(?:_register|keras\.saving\.register_keras_serializable\([^)]*\))\s*"
                        r"\nclass (\w+)", text))
    return names


def test_keras_file_loads_in_a_fresh_process_after_only_import_bnreg_tf(tmp_path, rng):
    """Also: every registered class is registered by `import bnreg_tf` alone."""
    model = regularize(sequential_cnn(), embedding_l2=0.1, functional_l2=0.1,
                       standardization_kl=1e-3, dropout=0.2, seed=0)
    x = rng.uniform(0, 255, size=(3, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    model.save(tmp_path / "cnn.keras")
    model.export(str(tmp_path / "export"), verbose=False)
    load = ("import numpy as np\nimport keras\n"
            "loaded = keras.saving.load_model('cnn.keras')  # safe mode\n"
            "np.save('loaded.npy', keras.ops.convert_to_numpy(loaded(np.load('x.npy'))))\n"
            "print(sorted(k.split('>')[1] for k in keras.saving.get_custom_objects()\n"
            "             if k.startswith('bnreg>')))\n")
    out = run_python("import bnreg_tf\n" + load, tmp_path).splitlines()   # before Keras
    assert eval(out[0]) == sorted(registered_in_source()) and len(eval(out[0])) >= 10
    np.testing.assert_allclose(np.load(tmp_path / "loaded.npy"), model(x), rtol=1e-5, atol=1e-6)
    fails_then_loads = ("import keras\ntry:\n    keras.saving.load_model('cnn.keras')\n"
                        "except Exception:\n    print('failed')\nimport bnreg_tf\n" + load)
    assert run_python(fails_then_loads, tmp_path).splitlines()[0] == "failed"
    exported = tf.saved_model.load(str(tmp_path / "export"))  # kept: it owns the variables
    np.testing.assert_allclose(exported.serve(x), model(x), rtol=1e-5, atol=1e-6)


def test_the_package_names_its_public_api():
    public = set(bnreg_tf.__all__)
    assert {"regularize", "NormMonitor", "SignalPropagation", "layers", "penalties", "PENALTIES",
            "param_groups"} <= public
    assert all(hasattr(bnreg_tf, name) for name in public)


@pytest.mark.parametrize("function", [
    bnreg_tf.regularize, bnreg_tf.NormMonitor,
    pytest.param(("resnet", "build_wide_resnet"), id="resnet.build_wide_resnet"),
    pytest.param(("efficientnet", "build_model"), id="efficientnet.build_model")])
def test_help_says_what_it_returns_takes_and_seeds(function):
    if isinstance(function, tuple):
        function = getattr(__import__(function[0]), function[1])
    doc = " ".join(function.__doc__.split())
    for words in (("return",), ("scale",), ("seed",), ("tf.data",), ("array",)):
        assert any(word in doc for word in words), (function.__name__, words)
