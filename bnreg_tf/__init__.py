"""bnreg_tf: the mechanisms of "Deconstructing the Regularization of BatchNorm" (ICLR 2021).

Penalties (`penalties`, `layers`), Fixup initializers (`init`), `regularize` for any Keras
functional or Sequential classifier, and the norm diagnostics (`NormMonitor`, and
`SignalPropagation` at initialisation); the trainer, data and binaries of the paper's
experiments (`trainer`, `data`, `cli`).

Names load on first use (PEP 562), so `import bnreg_tf.config` does not import TensorFlow.
Keras still finds bnreg's layers, schedules and optimizer when loading a `.keras` file after only
`import bnreg_tf`: they are registered as soon as Keras is imported (now, if it already is; else
by a one-shot import hook that runs right after `import keras` finishes).
"""
import importlib
import importlib.abc
import importlib.util
import pkgutil
import sys

_ATTRIBUTES = {
    "NormMonitor": "bnreg_tf.diagnostics",
    "SignalPropagation": "bnreg_tf.diagnostics",
    "choose_jit_compile": "bnreg_tf.strategies",
    "make_strategy": "bnreg_tf.strategies",
    "regularize": "bnreg_tf.regularization",
}
_SUBMODULES = ("diagnostics", "init", "layers", "penalties")
# Every module that registers Keras-serializable objects (package "bnreg").
SERIALIZABLE_MODULES = ("bnreg_tf.batchnorm", "bnreg_tf.conv", "bnreg_tf.layers", "bnreg_tf.nf",
                        "bnreg_tf.optimizers", "bnreg_tf.schedules", "efficientnet.optim")

__all__ = sorted([*_ATTRIBUTES, *_SUBMODULES])


def __getattr__(name):
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"bnreg_tf.{name}")
    raise AttributeError(f"module 'bnreg_tf' has no attribute {name!r}")


def __dir__():
    submodules = {info.name for info in pkgutil.iter_modules(__path__)}
    return sorted({*__all__, *submodules, "register_keras_objects"})


def register_keras_objects():
    """Imports the modules holding bnreg's Keras-serializable objects (imports Keras)."""
    for module in SERIALIZABLE_MODULES:
        importlib.import_module(module)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds `keras` through the other finders; registers bnreg's objects once it has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(
                name, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            register_keras_objects()

        spec.loader = _Loader(spec.loader, exec_then_register)
        return spec


class _Loader(importlib.abc.Loader):
    """`loader` with its `exec_module` replaced (everything else delegated)."""

    def __init__(self, loader, exec_module):
        self._loader, self.exec_module = loader, exec_module

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def __getattr__(self, name):
        return getattr(self._loader, name)


if "keras" in sys.modules:
    register_keras_objects()
elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterKerasImport())
