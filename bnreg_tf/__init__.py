"""bnreg_tf: the mechanisms of "Deconstructing the Regularization of BatchNorm" (ICLR 2021).

Penalties (`penalties`, `layers`), Fixup initializers (`init`), `regularize` for any Keras
functional model, and the norm diagnostics (`diagnostics.NormMonitor`).
"""
from bnreg_tf import diagnostics, init, layers, penalties
from bnreg_tf.compilation import choose_jit_compile
from bnreg_tf.diagnostics import NormMonitor
from bnreg_tf.regularize import regularize

__all__ = [
    "NormMonitor",
    "choose_jit_compile",
    "diagnostics",
    "init",
    "layers",
    "penalties",
    "regularize",
]
