"""A server that runs bnreg's binaries for the tests, each in its own process, without paying
TensorFlow's import (about 5 s on the 2-core CI machine) per run: `tests/binaries.py` starts one
per test process; it imports TensorFlow, Keras and bnreg once (no device is initialised, no op
runs) and then, for each request, forks a child that runs the command's Python program as
`python -m module ...` or `python script ...` would: its own argv, working directory,
environment, stdout and stderr files, default signal handlers, `runpy` with `__main__`.

What the child cannot see is what a binary does while Python imports TensorFlow (its start-up
signal handler, TensorFlow's C++ start-up lines): tests of those run real subprocesses
(`tests/binaries.py` sends those to `subprocess`). Requests are JSON lines on stdin; each answer is one JSON line on stdout
({"pid": N} when the child starts, {"returncode": R} when it ends, -S for a signal S).
"""
import json
import os
import runpy
import signal
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def preload():
    """The imports every binary makes first. Not the binaries' own modules (their absl flags are
    defined when they run), not TensorFlow Datasets (it reads TFDS_DATA_DIR when imported)."""
    from bnreg_tf.startup import quiet_stderr

    import importlib

    with quiet_stderr():   # as the binaries keep TensorFlow's start-up lines quiet
        for name in ("tensorflow", "keras", "bnreg_tf"):
            importlib.import_module(name)
    for name in ("bnreg_tf.run.trainer", "bnreg_tf.run.flags"):   # what they print, shows
        importlib.import_module(name)


def child(request):
    """Runs in the forked child; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)   # as Python starts
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        argv = request["argv"]
        sys.orig_argv = [sys.executable, *argv]
        if argv[0] == "-m":
            sys.argv = ["-m", *argv[2:]]   # as Python has it while it finds the module
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:   # as Python ends on one: the traceback, then killed by SIGINT
        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code & 0xFF)


def answer(message):
    sys.__stdout__.write(json.dumps(message) + "\n")
    sys.__stdout__.flush()


def main():
    preload()
    answer({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        answer({"pid": pid})
        _, status = os.waitpid(pid, 0)
        answer({"returncode": -os.WTERMSIG(status) if os.WIFSIGNALED(status)
                else os.WEXITSTATUS(status)})


if __name__ == "__main__":
    main()
