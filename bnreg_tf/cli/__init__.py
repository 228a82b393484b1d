"""The command-line binaries: `bnreg-train`, `bnreg-eval` (and `run_imagenet.py`).

TensorFlow 2.21 prints C++ start-up lines (oneDNN, CUDA probing) to stderr before Python can
set any log level, which would bury a binary's one-line error. The binaries import TensorFlow
with stderr pointed at /dev/null; an import that fails still raises normally. Set
BNREG_TF_STARTUP_LOGS=1 to see those lines.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly():
    if os.environ.get("BNREG_TF_STARTUP_LOGS"):
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401  (imports tensorflow and its backend)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()
