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
    outer = _STDERR[0]
    _STDERR[0] = saved if outer is None else outer
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        _STDERR[0] = outer
        os.close(saved)
        os.close(devnull)


_STDERR = [None]   # the real stderr's descriptor while `quiet_stderr` holds fd 2


def stderr_fd():
    """The descriptor of the real stderr, also inside `quiet_stderr` (for a line that must be
    seen whatever runs: the stop signals' one line)."""
    return 2 if _STDERR[0] is None else _STDERR[0]


_BINARIES = {"bnreg-train": "bnreg-train", "bnreg-eval": "bnreg-eval",
             "bnreg-study": "bnreg-study", "run_imagenet.py": "run_imagenet.py",
             "bnreg_tf.cli.train": "bnreg-train", "bnreg_tf.cli.evaluate": "bnreg-eval",
             "bnreg_tf.cli.study": "bnreg-study"}


def binary_name():
    """The bnreg binary this process runs (`bnreg-train`, ...; `python -m bnreg_tf.cli.train`
    included), or None (a library user, a test, `bnreg-demo`, which parses on its own)."""
    import sys

    argv = list(getattr(sys, "orig_argv", []))
    if "-m" in argv[:-1]:
        return _BINARIES.get(argv[argv.index("-m") + 1])
    return _BINARIES.get(os.path.basename(sys.argv[0] if sys.argv else ""))


def stop_signals_at_start():
    """In a bnreg binary's process only: until the binary installs its own handler
    (`bnreg_tf.run.stop.install`, first thing in `run_main`), SIGTERM and SIGINT end the
    process at once with one line and status 75 (nothing is written before then), instead of a
    KeyboardInterrupt traceback or a silent death while TensorFlow loads. Also keeps
    TensorFlow's C++ warnings off stderr from the first import on (TF_CPP_MIN_LOG_LEVEL=2)."""
    import signal
    import threading

    name = binary_name()
    if name is None or threading.current_thread() is not threading.main_thread():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def handler(signum, _frame):
        text = (f"{name}: stopped by {signal.Signals(signum).name} during start-up; nothing "
                "was written: repeat the command\n")
        os.write(stderr_fd(), text.encode())
        os._exit(75)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
