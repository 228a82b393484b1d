"""The worker of the cross-backend tests (issue 24): saves, loads and trains the same bnreg
models on whatever Keras backend it runs on, so that `test_cross_backend.py` can run it in its
own process and, as `python -m tests.any_backend.cross exchange <ours> <theirs>`, on the other
backend, and compare the numbers written to those folders.

- `save(folder)`: builds each model of `MODELS`, moves every weight off its initial value (NumPy
  draws, the same on every backend), writes `<name>.weights.h5`, `<name>.keras` and, in
  `<name>.expected.npy`, its inference-mode logits on `inputs()`.
- `load(folder)`: loads both files into a fresh build (`.weights.h5`) and through
  `keras.saving.load_model` (`.keras`); writes their logits as `<name>.h5.<backend>.npy` and
  `<name>.keras.<backend>.npy`.
- `fit(folder)`: loads `<name>.weights.h5` of each of `FIT_MODELS` and trains one SGD step on
  `batch()`; writes the step's History (loss and every penalty) and the logits after it as
  `<name>.fit.<backend>.json`.
- `exchange(ours, theirs)`: `load(ours)`, `fit(ours)`, `save(theirs)`: what the other backend
  does with one process's files, and the files it gives back.
The models have no Dropout or stochastic depth, whose random masks differ between backends.
"""
import json
import os
import sys

import keras
import numpy as np

import bnreg_tf  # noqa: F401  (registers bnreg's classes for .keras files)
import efficientnet
import resnet

MODELS = {
    # Fixup with the KL at every norm site, EL2 and FL2, swish: every penalty and scalar layer.
    "wrn_fixup_kl": lambda: resnet.wide_resnet(
        10, 1, num_classes=5, input_shape=(8, 8, 3), norm="fixup_standardize",
        activation="swish", seed=1, embedding_l2=0.1, functional_l2=0.1,
        standardization_kl=0.01),
    # BatchNorm in training (TensorFlow's fused kernel against Keras' own) and bottlenecks.
    "resnet_batchnorm": lambda: resnet.build_resnet_v1(
        resnet.ResNetSpec(True, (1, 1, 1, 1), widths=(4, 4, 8, 8), stem_width=4),
        num_classes=5, input_shape=(16, 16, 3), norm="batchnorm", seed=1, embedding_l2=0.1,
        functional_l2=0.1),
    # Scaled weight standardization (its gain saved after kernel and bias) and SkipInit gains.
    "resnet_nf": lambda: resnet.build_resnet_v1(
        resnet.ResNetSpec(False, (1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=4),
        num_classes=5, input_shape=(16, 16, 3), norm="nf_resnet", seed=1, embedding_l2=0.1),
    # Depthwise convolutions, squeeze-excitation, BatchNorm, swish.
    "efficientnet_b0": lambda: efficientnet.build_model(
        "b0", num_classes=5, input_shape=(32, 32, 3), seed=1, dropout=0.0, survival_prob=1.0,
        embedding_l2=0.1, functional_l2=0.1),
}
FIT_MODELS = ("wrn_fixup_kl", "resnet_batchnorm")


def inputs(model, n=4, seed=5):
    return np.random.default_rng(seed).normal(size=(n, *model.input_shape[1:])).astype(np.float32)


def batch(model):
    return inputs(model, n=8, seed=6), np.arange(8) % 5


def logits(model, x):
    """Inference-mode logits; compiled on JAX, where an eager call compiles every op apart."""
    if keras.backend.backend() == "jax":
        return model.predict(x, batch_size=len(x), verbose=0)["logits"].astype(np.float64)
    return keras.ops.convert_to_numpy(model(x, training=False)["logits"]).astype(np.float64)


def move_off_init(model, seed=3):
    """Every weight drawn from N(0, 0.3^2) by NumPy (variances |.| + 0.5), so that Fixup's zero
    layers and classifiers carry signal and the comparison sees every weight."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(0.0, 0.3, weight.shape)
        if weight.path.endswith("moving_variance"):
            value = np.abs(value) + 0.5
        weight.assign(value.astype(np.float32))


def save(directory):
    for name, build in MODELS.items():
        model = build()
        move_off_init(model)
        model.save_weights(os.path.join(directory, f"{name}.weights.h5"))
        model.save(os.path.join(directory, f"{name}.keras"))
        np.save(os.path.join(directory, f"{name}.expected.npy"), logits(model, inputs(model)))


def load(directory):
    backend = keras.backend.backend()
    for name, build in MODELS.items():
        model = build()
        model.load_weights(os.path.join(directory, f"{name}.weights.h5"))
        np.save(os.path.join(directory, f"{name}.h5.{backend}.npy"), logits(model, inputs(model)))
        loaded = keras.saving.load_model(os.path.join(directory, f"{name}.keras"), compile=False)
        np.save(os.path.join(directory, f"{name}.keras.{backend}.npy"),
                logits(loaded, inputs(loaded)))


def fit(directory):
    for name in FIT_MODELS:
        model = MODELS[name]()
        model.load_weights(os.path.join(directory, f"{name}.weights.h5"))
        # Compiled on JAX (its eager step compiles every op apart), graph without XLA on
        # TensorFlow (its fused kernels, as the trainer runs them).
        model.compile(keras.optimizers.SGD(0.05),
                      {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
                      jit_compile=keras.backend.backend() == "jax")
        x, y = batch(model)
        history = model.fit(x, {"logits": y}, batch_size=len(x), epochs=1, verbose=0,
                            shuffle=False).history
        result = {"history": {k: float(v[0]) for k, v in history.items()},
                  "logits_after": logits(model, x).tolist()}
        path = os.path.join(directory, f"{name}.fit.{keras.backend.backend()}.json")
        with open(path, "w") as f:
            json.dump(result, f)


def exchange(ours, theirs):
    load(ours)
    fit(ours)
    save(theirs)


if __name__ == "__main__":
    command, *folders = sys.argv[1:]
    {"save": save, "load": load, "fit": fit, "exchange": exchange}[command](*folders)
    print(json.dumps({"backend": keras.backend.backend(), "done": command}))
