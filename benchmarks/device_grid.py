"""Issue 17, item 4: precision x compilation on a GPU, and whether `auto` picks the best cell.

    python -m benchmarks.run --only device [--device_families resnet50,efficientnet_b0,wrn28_10]
        [--device_batch_size 128] [--steps 10]

For each family, bnreg's model and `keras.applications`' (ResNet-50 and EfficientNet-B0; there
is none for WRN-28-10) train in every cell of float32 / the device's mixed policy
(mixed_float16 on a GPU) x graph / XLA, all timed in alternating rounds in the same process
(`timing.interleaved_throughput`), at the family's resolution (224 px, CIFAR's 32 px).

A cell is *correct* when its first `check_steps` training losses, from the float32 model's
weights on the same batches with SGD (lr 0.01, momentum 0.9), are finite and within
`tolerance` (relative) of float32 graph mode's. Dropout and stochastic depth draw different
masks in different cells, so the tolerance is a divergence check (a float16 overflow, a
miscompiled step), not an equality test. `--precision=auto --compilation=auto`
(`strategies.precision_policy`, `strategies.choose_jit_compile`) should pick the fastest
correct cell of bnreg's model; `verdict` says whether it does.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

import efficientnet
import resnet
from benchmarks.timing import dtype_policy, interleaved_throughput, targets
from bnreg_tf import optimizers, strategies


ROUNDS, CHECK_STEPS, TOLERANCE = 3, 3, 0.05


@dataclasses.dataclass(frozen=True)
class Family:
    """One benchmarked architecture: bnreg's builder and keras.applications' counterpart."""
    label: str
    image_size: int
    classes: int
    bnreg: object                 # (image_size, classes) -> model
    keras_application: object     # (image_size, classes) -> model, or None


def _shape(size):
    return (size, size, 3)


FAMILIES = {
    "resnet50": Family(
        "ResNet-50", 224, 1000,
        lambda size, classes: resnet.build_model("resnet50", num_classes=classes,
                                                 input_shape=_shape(size), seed=0),
        lambda size, classes: keras.applications.ResNet50(
            weights=None, input_shape=_shape(size), classes=classes, classifier_activation=None)),
    "efficientnet_b0": Family(
        "EfficientNet-B0", 224, 1000,
        lambda size, classes: efficientnet.build_model("b0", num_classes=classes,
                                                       input_shape=_shape(size), seed=0),
        lambda size, classes: keras.applications.EfficientNetB0(
            weights=None, input_shape=_shape(size), classes=classes, classifier_activation=None)),
    "wrn28_10": Family(
        "WRN-28-10", 32, 10,
        lambda size, classes: resnet.build_model("wrn28_10", num_classes=classes,
                                                 input_shape=_shape(size), seed=0),
        None),
}


@dataclasses.dataclass
class Cell:
    """One (model, precision, compilation) measurement."""
    model: str
    precision: str
    jit_compile: bool
    images_per_second: float = 0.0
    losses: tuple = ()
    max_loss_difference: float = 0.0
    correct: bool = False

    @property
    def compilation(self):
        return "xla" if self.jit_compile else "graph"


def mixed_policy():
    """The mixed policy `--precision=auto` would pick here: mixed_float16 on a GPU."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def device_name():
    """The first GPU's name as TensorFlow reports it, or None."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def _loss_curve(model, jit_compile, batches, sgd):
    model.compile(sgd(0.01, momentum=0.9), loss=targets(model, batches[0][1])[1],
                  jit_compile=jit_compile)
    return tuple(float(model.train_on_batch(x, targets(model, labels)[0], return_dict=True)["loss"])
                 for x, labels in batches)


def family_cells(family, batch_size, steps=10, rounds=ROUNDS, check_steps=CHECK_STEPS,
                 tolerance=TOLERANCE, image_size=None, seed=0):
    """The cells of `family` (bnreg's model first, then keras.applications'), measured."""
    size = image_size or family.image_size
    rng = np.random.default_rng(seed)
    batches = [(rng.normal(size=(batch_size, *_shape(size))).astype(np.float32),
                rng.integers(0, family.classes, batch_size)) for _ in range(check_steps)]
    builders = [("bnreg", family.bnreg, optimizers.SGD)]
    if family.keras_application is not None:
        builders.append(("keras.applications", family.keras_application, keras.optimizers.SGD))
    cells, models, sgds = [], [], []
    for label, build, sgd in builders:
        reference = build(size, family.classes).get_weights()
        for policy in ("float32", mixed_policy()):
            for jit in (False, True):
                with dtype_policy(policy):
                    model = build(size, family.classes)
                model.set_weights(reference)
                cell = Cell(f"{label} {family.label}", policy, jit)
                cell.losses = _loss_curve(model, jit, batches, sgd)
                cells.append(cell)
                models.append(model)
                sgds.append(sgd)
    rates = interleaved_throughput(models, batch_size, family.classes, steps, rounds=rounds,
                                   sgds=sgds, jit_compiles=[c.jit_compile for c in cells])
    for cell, rate in zip(cells, rates):
        cell.images_per_second = rate
    for start in range(0, len(cells), 4):
        judge(cells[start:start + 4], tolerance)
    return cells


def judge(cells, tolerance):
    """Marks each of one model's cells correct or not against its float32 graph cell."""
    reference = next(c for c in cells if c.precision == "float32" and not c.jit_compile)
    expected = np.asarray(reference.losses, np.float64)
    for cell in cells:
        losses = np.asarray(cell.losses, np.float64)
        finite = bool(np.all(np.isfinite(losses)))
        cell.max_loss_difference = (float(np.max(np.abs(losses - expected) / np.abs(expected)))
                                    if finite else float("inf"))
        cell.correct = finite and cell.max_loss_difference <= tolerance


def auto_choice(strategy=None):
    """`(precision, jit_compile)` that `--precision=auto --compilation=auto` resolve to here."""
    strategy = strategy or tf.distribute.get_strategy()
    return strategies.precision_policy("auto", strategy), strategies.choose_jit_compile(strategy)


def verdict(cells, auto):
    """`(auto's cell, the fastest correct cell or None, auto's rate / the fastest's)` among one
    model's `cells`; `auto` is `(precision, jit_compile)`."""
    chosen = next(c for c in cells if (c.precision, c.jit_compile) == tuple(auto))
    correct = [c for c in cells if c.correct]
    if not correct:
        return chosen, None, float("nan")
    best = max(correct, key=lambda c: c.images_per_second)
    return chosen, best, chosen.images_per_second / best.images_per_second
