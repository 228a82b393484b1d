"""The model families on the current backend (issue 24): every resnet/ model in every norm mode
and EfficientNet-B0..B8 and L2 have the parameter counts, variable names and penalty layers
they have on the other backend (`census`, run there in a subprocess) and the published counts;
tiny variants of every norm mode build with their weights and train (EfficientNet-B0 trains in
test_cross_backend.py)."""
import keras
import numpy as np
import pytest

import efficientnet
import resnet
from bnreg_tf.nn import PENALTIES, PenalizedModel
from tests.any_backend import census
from tests.any_backend.helpers import finish, loss_gradients, other_backend, start_on

# Trainable parameters (docs/references.md §5.6; tests/test_resnet.py and
# tests/test_efficientnet_model.py assert the same on TensorFlow).
PUBLISHED = {"resnet50/batchnorm": 25_557_032, "wrn28_10/batchnorm": 36_479_194,
             "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184,
             "efficientnet_b2": 9_109_994, "efficientnet_b3": 12_233_232,
             "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
             "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960,
             "efficientnet_b8": 87_413_142}


@pytest.mark.cross_backend
def test_every_model_has_the_other_backends_counts_names_and_penalties(tmp_path):
    process = start_on(other_backend(), "tests.any_backend.census", cwd=tmp_path)
    here = census.census()   # while the other backend takes its census
    there = finish(process)
    assert there["backend"] == other_backend() and set(there["census"]) == set(here)
    expected_models = len(resnet.RESNETS) * len(resnet.NORM_MODES) + len(resnet.NORM_MODES) + 1 \
        + len(efficientnet.SCALING)
    assert len(here) == expected_models
    for key, ours in here.items():
        theirs = there["census"][key]
        for field in ("trainable", "non_trainable", "penalty_layers", "class"):
            assert ours[field] == theirs[field], (key, field)
        assert ours["weights"] == theirs["weights"], key   # [path, shape, trainable], in order
        assert ours["class"] == "PenalizedModel" and ours["penalty_layers"], key
    for key, count in PUBLISHED.items():
        assert here[key]["trainable"] == count, key


TINY = {
    "wrn10_1": lambda **kw: resnet.wide_resnet(10, 1, input_shape=(8, 8, 3), **kw),
    "basic_resnet": lambda **kw: resnet.build_resnet_v1(
        resnet.ResNetSpec(False, (1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=4),
        input_shape=(16, 16, 3), **kw),
}


def penalties_for(norm):
    """Every penalty the norm mode may take (the table's `norms`), with small coefficients."""
    return {name: 1e-3 for name, row in PENALTIES.items() if not row.norms or norm in row.norms}


def fit_steps(model, x, labels, steps):
    """`steps` SGD steps on one fixed batch; returns History's dict. The step is Keras' usual
    one (stateless on JAX) without XLA, which on these tiny networks saves a third of the time
    (test_penalties_any.py and test_cross_backend.py fit compiled)."""
    model.compile(keras.optimizers.SGD(0.1),
                  {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
                  jit_compile=False)
    return model.fit(x, {"logits": labels}, batch_size=len(x), epochs=steps, verbose=0,
                     shuffle=False).history


# Every norm mode on the post-activation ResNet v1; the pre-activation WRN with BatchNorm and
# NF-ResNet's blocks. (The census builds every mode of every model on both backends;
# test_cross_backend.py trains a Fixup WRN and a bottleneck ResNet on both; tests/test_resnet.py
# trains every mode of all three families on TensorFlow.)
TRAINED = [("basic_resnet", norm) for norm in resnet.NORM_MODES] + [
    ("wrn10_1", "batchnorm"), ("wrn10_1", "nf_resnet")]


@pytest.mark.parametrize("family,norm", TRAINED)
def test_norm_modes_build_train_and_give_every_variable_a_gradient(family, norm):
    activation = "swish" if norm in ("fixup_standardize", "nf_resnet") else "relu"
    model = TINY[family](num_classes=3, norm=norm, activation=activation, seed=0,
                         **penalties_for(norm))
    assert isinstance(model, PenalizedModel)
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(6, *model.input_shape[1:])).astype(np.float32), np.arange(6) % 3
    history = fit_steps(model, x, labels, steps=2)
    assert all(np.isfinite(history["loss"]))
    for layer in model.penalty_layers():
        assert np.isfinite(history[layer.name][-1]) and history[layer.name][-1] > 0, layer.name
    # Fixup's zero classifier and last branch layers pass no gradient upstream at init; after
    # two SGD steps every variable gets one (as tests/test_resnet.py checks on TensorFlow).
    grads = loss_gradients(model, x, labels)
    dead = [v.path for v, g in zip(model.trainable_variables, grads) if g is None or not g.any()]
    assert not dead and all(np.isfinite(g).all() for g in grads)
