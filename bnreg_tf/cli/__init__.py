"""The command-line binaries: `bnreg-train`, `bnreg-eval` (and `run_imagenet.py`).

TensorFlow 2.21 prints C++ lines to stderr when it loads (oneDNN, CUDA probing) and when it
first lists devices ("failed call to cuInit" on a machine without a GPU driver), before any
Python log setting applies. Those lines would bury a binary's one-line error, so the binaries
do both with stderr pointed at /dev/null; failures still raise normally. Set
BNREG_TF_STARTUP_LOGS=1 to see those lines.
"""
import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 goes to /dev/null inside the block (C++ writes included)."""
    if os.environ.get("BNREG_TF_STARTUP_LOGS"):
        yield
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def initialize_devices(config=None):
    """Initialises TensorFlow's devices quietly; returns `config`'s strategy when one is given.

    The process's one strategy (`bnreg_tf.strategies`): the CPU split of `--virtual_cpus` and
    MultiWorkerMirroredStrategy must both come before device initialisation, so it is made here,
    first, and every run of the process uses it.
    """
    import tensorflow as tf

    from bnreg_tf.strategies import strategy_for

    with quiet_stderr():
        strategy = strategy_for(config) if config is not None else None
        tf.config.list_logical_devices()
    return strategy


with quiet_stderr():
    import keras  # noqa: F401,E402  (imports tensorflow and its backend)
    import tensorflow  # noqa: F401,E402
