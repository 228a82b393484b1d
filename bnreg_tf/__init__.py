"""bnreg_tf: the mechanisms of "Deconstructing the Regularization of BatchNorm" (ICLR 2021).

The package is built in floors, each importing only the floors below it (docs/architecture.md;
`lint-imports` checks it): `nn` (the building blocks: penalties, layers, `regularize`, Fixup and
normalizer-free pieces, diagnostics), the model families `resnet` and `efficientnet` (top-level
packages), `data` (tf.data), `run` (config, trainer, run directory), `study` (the ablation grid
and its report) and `cli` (the binaries).

`import bnreg_tf` imports Keras and registers every bnreg object Keras may meet in a `.keras`
file: the building blocks' layers and, on the TensorFlow backend, the trainer's schedules and
optimizers (`bnreg_tf.run.schedules`, `bnreg_tf.run.optimizers`, `efficientnet.optim`).
TensorFlow's C++ start-up lines are kept off stderr while it loads (`bnreg_tf.startup`).
"""
import sys

from bnreg_tf.startup import quiet_stderr, stop_signals_at_start

stop_signals_at_start()   # a bnreg binary's process only: a signal while TensorFlow loads is one line

if "keras" in sys.modules:
    import keras
else:
    with quiet_stderr():
        import keras

from bnreg_tf.nn import (PENALTIES, NormMonitor, PenalizedModel, SignalPropagation, agc,
                         gaussian_probe, init, layers, nf, penalties, regularize)
from bnreg_tf.nn.param_groups import param_groups

if keras.backend.backend() == "tensorflow":
    import efficientnet.optim  # noqa: F401  (registers ReferenceRMSprop, WarmupExponentialDecay)
    import bnreg_tf.run.optimizers  # noqa: F401  (registers bnreg>SGD)
    import bnreg_tf.run.schedules  # noqa: F401  (registers bnreg>WarmupPiecewise)

__all__ = ["PENALTIES", "NormMonitor", "PenalizedModel", "SignalPropagation", "agc",
           "gaussian_probe", "init", "layers", "nf", "param_groups", "penalties", "regularize"]
