"""The command-line binaries: `bnreg-train`, `bnreg-eval`, `bnreg-study`, `bnreg-demo` (and
`run_imagenet.py`). Each parses its flags and calls the library; nothing below `main` reads them.

TensorFlow's C++ start-up lines are kept off stderr (`bnreg_tf.startup`), so that a bad flag
ends in one line. The binaries are TensorFlow programs: under another Keras backend
(KERAS_BACKEND=jax, or `~/.keras/keras.json`) they stop here, before any flag is read, with one
line and exit status 2 (issue 24; README, "Which parts run where"); imported from other code,
this package raises that line as an ImportError, as the other TensorFlow floors do.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bnreg_tf.nn.backends import require_tensorflow  # noqa: E402

try:
    require_tensorflow(__name__)
except ImportError as error:
    _program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if not (_program.startswith("bnreg-") or _program in ("run_imagenet.py", "-m")):
        raise
    print(f"{'bnreg' if _program == '-m' else _program}: {error}; run it with KERAS_BACKEND=tensorflow", file=sys.stderr)
    sys.exit(2)

from bnreg_tf.startup import quiet_stderr  # noqa: E402


def initialize_devices(config=None):
    """Initialises TensorFlow's devices quietly; returns `config`'s strategy when one is given.

    The process's one strategy (`bnreg_tf.run.strategies`): the CPU split of `--virtual_cpus` and
    MultiWorkerMirroredStrategy must both come before device initialisation, so it is made here,
    first, and every run of the process uses it.
    """
    import tensorflow as tf

    from bnreg_tf.run.strategies import strategy_for

    with quiet_stderr():
        strategy = strategy_for(config) if config is not None else None
        tf.config.list_logical_devices()
    return strategy
