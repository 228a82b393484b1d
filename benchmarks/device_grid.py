"""Issue 17, item 4: precision x compilation on a GPU, and whether `auto` picks the best cell.

    python -m benchmarks.run --only device [--device_families resnet50,efficientnet_b0,wrn28_10]
        [--device_batch_size 128] [--steps 10]

For each family, bnreg's model and `keras.applications`' (ResNet-50 and EfficientNet-B0; there
is none for WRN-28-10) train in every cell of float32 / the device's mixed policy
(mixed_float16 on a GPU) x graph / XLA, all timed in alternating rounds in the same process
(`timing.interleaved_throughput`), at the family's resolution (224 px, CIFAR's 32 px).

A cell is *correct* when its first `CHECK_STEPS` training losses on one batch (the timing
batch, in the same `fit`, from the float32 model's weights, SGD lr 0.01 momentum 0.9) are
finite, within `TOLERANCE` (relative) of float32 graph mode's, and fall by at least
`MIN_DROP` of what float32 graph's fall: a step that does not update (a loss scale that skips
every step, a miscompiled update) fails the last test. Dropout and stochastic depth draw
different masks in different cells, so these are divergence checks, not equality tests.
`--precision=auto --compilation=auto` (`strategies.precision_policy`,
`strategies.choose_jit_compile`) should pick the fastest correct cell of bnreg's model;
`verdict` says whether it does.

The step is Keras' default `train_step` on the bare network (`timing.FitLoop`), the same for
bnreg's and keras.applications' models; each cell is compiled once (the loss check and the
timing share it).
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

import efficientnet
from bnreg_tf.run import models
from benchmarks.timing import FitLoop, dtype_policy, interleaved_rates
from bnreg_tf.run import optimizers, strategies


ROUNDS, CHECK_STEPS, TOLERANCE, MIN_DROP = 3, 5, 0.05, 0.5


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
        lambda size, classes: models.build("resnet50", num_classes=classes,
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
        lambda size, classes: models.build("wrn28_10", num_classes=classes,
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
    drop_ratio: float = 0.0       # (first - last loss) / float32 graph's
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


def family_cells(family, batch_size, steps=10, rounds=ROUNDS, check_steps=CHECK_STEPS,
                 tolerance=TOLERANCE, min_drop=MIN_DROP, image_size=None, seed=0):
    """The cells of `family` (bnreg's model's four, then keras.applications'), measured."""
    size = image_size or family.image_size
    builders = [("bnreg", family.bnreg, optimizers.SGD)]
    if family.keras_application is not None:
        builders.append(("keras.applications", family.keras_application, keras.optimizers.SGD))
    cells, loops = [], []
    for label, build, sgd in builders:
        reference = build(size, family.classes).get_weights()
        for policy in ("float32", mixed_policy()):
            for jit in (False, True):
                with dtype_policy(policy):
                    model = build(size, family.classes)
                model.set_weights(reference)
                loop = FitLoop(model, batch_size, family.classes, seed, sgd, jit)
                cells.append(Cell(f"{label} {family.label}", policy, jit,
                                  losses=loop.losses(check_steps)))
                loops.append(loop)
    rates = interleaved_rates(loops, steps, rounds=rounds)
    for cell, rate in zip(cells, rates):
        cell.images_per_second = rate
    for start in range(0, len(cells), 4):
        judge(cells[start:start + 4], tolerance, min_drop)
    return cells


def judge(cells, tolerance=TOLERANCE, min_drop=MIN_DROP):
    """Marks each of one model's cells correct or not against its float32 graph cell."""
    reference = next(c for c in cells if c.precision == "float32" and not c.jit_compile)
    expected = np.asarray(reference.losses, np.float64)
    expected_drop = expected[0] - expected[-1]
    for cell in cells:
        losses = np.asarray(cell.losses, np.float64)
        if not np.all(np.isfinite(losses)):
            cell.max_loss_difference, cell.drop_ratio, cell.correct = float("inf"), 0.0, False
            continue
        cell.max_loss_difference = float(np.max(np.abs(losses - expected) / np.abs(expected)))
        cell.drop_ratio = float((losses[0] - losses[-1]) / expected_drop)
        cell.correct = bool(cell.max_loss_difference <= tolerance and expected_drop > 0
                            and cell.drop_ratio >= min_drop)


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
