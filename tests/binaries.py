"""`run(command, cwd=..., env=..., timeout=...)`: what `subprocess.run(command, cwd=cwd,
env=env, capture_output=True, text=True, timeout=timeout)` returns, for the tests' runs of
bnreg's binaries, with the process forked from `tests/fork_server.py` (TensorFlow already
imported) when the command is `python -m bnreg_tf.cli.*` or `python <script>.py`, and a real
subprocess otherwise.

Each run is still its own process with its own argv, directory, environment, stdout, stderr,
exit status and signal dispositions; what it skips is Python importing TensorFlow, which is what
the start-up tests are about: they call `subprocess` directly, or set BNREG_TEST_FRESH=1 to run
every binary of the suite as a fresh interpreter (what CI did before this helper; the suite then
takes about a third longer).
"""
import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Read when TensorFlow or Keras is imported, which the server has done with its own values.
IMPORT_TIME_VARIABLES = ("KERAS_BACKEND", "KERAS_HOME", "HOME", "TF_CPP_MIN_LOG_LEVEL",
                         "TF_ENABLE_ONEDNN_OPTS", "CUDA_VISIBLE_DEVICES", "XLA_FLAGS",
                         "OMP_NUM_THREADS", "PYTHONHASHSEED", "PYTHONWARNINGS",
                         "PYTHONIOENCODING", "LC_ALL", "PYTHONPATH")
HELP = ("--help", "--helpfull", "--helpshort", "-h", "-?")
_server = None


class _Server:
    def __init__(self):
        env = {**os.environ, "PYTHONPATH": ROOT}
        env.pop("BNREG_QUIET", None)
        self.process = subprocess.Popen([sys.executable, "-m", "tests.fork_server"], cwd=ROOT,
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.env, self.pending = env, b""
        assert self.read(600) == {"ready": True}

    def read(self, timeout):
        """The server's next answer, or None after `timeout` seconds (None: no limit). Read
        unbuffered, so that select sees every line not yet taken."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"tests/fork_server.py ended (status {self.process.poll()})")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


def _forkable(command, env):
    if os.environ.get("BNREG_TEST_FRESH") or command[0] != sys.executable or len(command) < 2:
        return False
    if any(env.get(name) != _base_env().get(name) for name in IMPORT_TIME_VARIABLES
           if name != "PYTHONPATH"):
        return False
    if any(arg in HELP for arg in command):   # the help comes before any TensorFlow line
        return False
    if command[1] == "-m":
        return len(command) > 2 and command[2].startswith("bnreg_tf.cli.") \
            and command[2] != "bnreg_tf.cli.demo"   # the quick start: tested as users start it
    return command[1].endswith(".py")


def _base_env():
    return _get_server().env if _server else {**os.environ, "PYTHONPATH": ROOT}


def _get_server():
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = _Server()
        atexit.register(_server.close)
    return _server


def run(command, *, cwd=ROOT, env=None, timeout=None, capture_output=True, text=True):
    """`subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
    timeout=timeout)`, forked from the server where it can be (module docstring)."""
    assert capture_output and text, "binaries.run captures text output only"
    env = dict(os.environ if env is None else env)
    if not _forkable(command, env):
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    server = _get_server()
    with tempfile.TemporaryDirectory(prefix="bnreg-run-") as scratch:
        out, err = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
        try:
            done = _request(server, command, cwd, env, out, err, timeout)
        except BaseException:   # the server's answers may be out of step: start a new one
            _reset()
            raise
        if done is None:
            raise subprocess.TimeoutExpired(command, timeout, _text(out), _text(err))
        return subprocess.CompletedProcess(command, done["returncode"], _text(out), _text(err))


def _request(server, command, cwd, env, out, err, timeout):
    """Sends one run; returns its answer, or None after killing it past `timeout`."""
    server.process.stdin.write(json.dumps({
        "argv": command[1:], "cwd": str(cwd), "env": env, "stdout": out, "stderr": err}) + "\n")
    server.process.stdin.flush()
    pid = server.read(60)["pid"]
    deadline = None if timeout is None else time.monotonic() + timeout
    done = server.read(None if deadline is None else deadline - time.monotonic())
    if done is None:
        try:
            os.kill(pid, signal.SIGKILL)   # the server has not reaped it: still our child's pid
        except ProcessLookupError:
            pass
        if server.read(60) is None:
            raise RuntimeError("tests/fork_server.py did not answer after a kill")
    return done


def _reset():
    global _server
    if _server is not None:
        _server.process.kill()
        _server.process.wait()
        _server = None


def _text(path):
    with open(path, errors="replace") as f:
        return f.read()
