"""`regularize` on contract and hand-built models, its arguments and its Keras files (on
TensorFlow). keras.applications models and a Sequential CNN are in
tests/any_backend/test_regularize_any.py, which runs on every backend.
"""
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
from tests.any_backend.test_regularize_any import sequential_cnn
from tests.test_penalties import np_mean_sq_norm, rel_err

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
