"""bnreg_tf: the mechanisms of "Deconstructing the Regularization of BatchNorm" (ICLR 2021).

Penalties (`penalties`, `layers`), Fixup initializers (`init`), `regularize` for any Keras
functional model, and the norm diagnostics (`diagnostics.NormMonitor`); the trainer, data and
binaries of the paper's experiments (`trainer`, `data`, `cli`).

Names load on first use (PEP 562), so `import bnreg_tf.config` does not import TensorFlow.
"""
import importlib

_ATTRIBUTES = {
    "NormMonitor": "bnreg_tf.diagnostics",
    "choose_jit_compile": "bnreg_tf.strategies",
    "make_strategy": "bnreg_tf.strategies",
    "regularize": "bnreg_tf.regularization",
}
_SUBMODULES = ("diagnostics", "init", "layers", "penalties")

__all__ = sorted([*_ATTRIBUTES, *_SUBMODULES])


def __getattr__(name):
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"bnreg_tf.{name}")
    raise AttributeError(f"module 'bnreg_tf' has no attribute {name!r}")
