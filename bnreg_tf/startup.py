"""TensorFlow's C++ start-up lines, kept off stderr (the lowest floor: standard library only).

TensorFlow 2.21 prints C++ lines to stderr when it loads (oneDNN, CUDA probing) and when it
first lists devices ("failed call to cuInit" on a machine without a GPU driver), before any
Python log setting applies. Those lines would bury a binary's one-line error, so `import
bnreg_tf` loads Keras (and with it TensorFlow) and the binaries initialise the devices with
file descriptor 2 pointed at /dev/null; failures still raise normally. Set
BNREG_TF_STARTUP_LOGS=1 to see those lines.
"""
import contextlib
import os


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
