"""A server that runs bnreg's binaries for the tests, each in its own process, without paying
TensorFlow's import (about 5 s on the 2-core CI machine) per run: `tests/binaries.py` starts one
per test process; it imports TensorFlow, Keras and bnreg once (no device is initialised, no op
runs) and then, for each request, forks a child that runs the command's Python program as
`python -m module ...` or `python script ...` would: its own argv, working directory,
environment, stdout and stderr files, default signal handlers, `runpy` with `__main__`.

What the child cannot see is what a binary does while Python imports TensorFlow (its start-up
signal handler, TensorFlow's C++ start-up lines): tests of those run real subprocesses
(`tests/binaries.py` sends those to `subprocess`).

Requests are JSON lines on stdin, each with an "id"; several children may run at once (the
workers of a multi-worker run, a study's shards); {"id": I, "signal": S} sends signal S to
run I if it still runs. Each answer is one JSON line on stdout: {"id": I, "pid": N} when the
child starts, {"id": I, "returncode": R} when it ends (-S for a signal S). Children are reaped
as SIGCHLD wakes the loop, never by a thread (a thread holding a lock at a fork would leave it
held in the child); at the end of stdin the runs still going are killed.
"""
import json
import os
import runpy
import select
import signal
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
START_SIGNALS = {signal.SIGINT, signal.SIGTERM}   # blocked from before a fork until the child's
                                                   # handlers are those of a fresh process


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


def child(request, server_fds):
    """Runs in the forked child, with SIGINT and SIGTERM blocked since before the fork; never
    returns."""
    code = 1
    try:
        for fd in server_fds:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
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
        sys.argv = ["-m", *argv[2:]] if argv[0] == "-m" else list(argv)   # as Python has it
        # What `import bnreg_tf` does first in a binary's fresh process: a stop signal before
        # the binary's own handler is one line and status 75.
        from bnreg_tf.startup import stop_signals_at_start

        stop_signals_at_start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, START_SIGNALS)
        if argv[0] == "-m":
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
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


def reap(children):
    """Answers for every child that has ended; `children` ({pid: request id}) loses it."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            answer({"id": children.pop(pid), "returncode": -os.WTERMSIG(status)
                    if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)})


def serve(request, children, server_fds):
    """A run: forks its child and answers its pid. A signal: sent to the run's child if it has
    not been reaped (only this loop reaps, so the pid is still that child's)."""
    if "signal" in request:
        for pid, ident in children.items():
            if ident == request["id"]:
                os.kill(pid, request["signal"])
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, START_SIGNALS)
    pid = os.fork()
    if pid == 0:
        child(request, server_fds)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, START_SIGNALS)
    children[pid] = request["id"]
    answer({"id": request["id"], "pid": pid})


def main():
    preload()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)   # not SIG_IGN: that reaps
    signal.set_wakeup_fd(wake_write)
    answer({"ready": True})
    children, pending, stdin = {}, b"", sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([stdin, wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
        reap(children)
        if stdin not in ready:
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:   # the tests' process ended or gave up on this server: so do its runs
            for pid in children:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            serve(json.loads(line), children, (wake_read, wake_write))
        reap(children)


if __name__ == "__main__":
    main()
