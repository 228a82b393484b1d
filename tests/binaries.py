"""`run(command, cwd=..., env=..., timeout=...)`: what `subprocess.run(command, cwd=cwd,
env=env, capture_output=True, text=True, timeout=timeout)` returns, and `popen(command, cwd=...,
env=..., stdout=..., stderr=...)`: a process with the part of `subprocess.Popen` the tests use
(`pid`, `poll`, `wait`, `communicate`, `send_signal`, `kill`, `returncode`), for the tests'
runs of bnreg's binaries. The process is forked from `tests/fork_server.py` (TensorFlow already
imported) when the command is `python -m bnreg_tf.cli.*`, `python <script>.py` or an installed
console script (`bnreg-train`), and a real subprocess otherwise.

Each run is still its own process with its own pid, argv, directory, environment, stdout,
stderr, exit status and signal dispositions, and several can run at once (a multi-worker run's
workers); what it skips is Python importing TensorFlow, which is what the start-up tests are
about: they call `subprocess` directly, or set BNREG_TEST_FRESH=1 to run every binary of the
suite as a fresh interpreter (what CI did before this helper; the suite then takes longer). The help is printed by the same code either way (`test_binaries_runner.py`).
"""
import atexit
import json
import os
import select
import shutil
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
_server = None


class _Server:
    """The fork server of this test process; answers are taken as `until` reads them."""

    def __init__(self):
        env = {**os.environ}   # `python -m tests.fork_server` in ROOT: ROOT on its sys.path
        env.pop("BNREG_QUIET", None)
        self.process = subprocess.Popen([sys.executable, "-m", "tests.fork_server"], cwd=ROOT,
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.env, self.pending, self.next_id = env, b"", 0
        self.pids, self.codes = {}, {}   # by request id
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

    def start(self, argv, cwd, env, out, err):
        """Sends one run; returns its request id once the server has forked it."""
        self.next_id += 1
        self.process.stdin.write(json.dumps({"id": self.next_id, "argv": argv, "cwd": str(cwd),
                                             "env": env, "stdout": out, "stderr": err}) + "\n")
        self.process.stdin.flush()
        if not self.until(lambda: self.next_id in self.pids, 60):
            raise RuntimeError("tests/fork_server.py did not fork the run within 60 s")
        return self.next_id

    def signal(self, ident, signum):
        """Asks the server to send `signum` to run `ident` if it has not been reaped yet (the
        server reaps: only it knows whether the pid is still that run's)."""
        self.process.stdin.write(json.dumps({"id": ident, "signal": int(signum)}) + "\n")
        self.process.stdin.flush()

    def until(self, done, timeout):
        """Takes answers until `done()`; False after `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            message = self.read(left)
            if message is None:
                return False
            table = self.pids if "pid" in message else self.codes
            table[message["id"]] = message.get("pid", message.get("returncode"))
        return True

    def close(self):
        """Ends the server; the runs it still has are killed (at the end of its stdin)."""
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _forkable(command, env):
    return _server_argv(command, env) is not None


def _server_argv(command, env):
    """What follows `python` for the server to run `command`, or None where it must be a real
    subprocess. An installed console script (`bnreg-train`) is a Python script of this
    interpreter: the server runs it as `python <script>` (argv[0] the script, as exec has it)."""
    base = _base_env()
    if os.environ.get("BNREG_TEST_FRESH") or any(
            env.get(name) != base.get(name) for name in IMPORT_TIME_VARIABLES):
        return None
    if command[0] != sys.executable:
        return list(command) if _console_script(command[0]) else None
    if len(command) > 2 and command[1] == "-m":
        # bnreg-demo, the quick start, is tested as users start it
        return command[1:] if command[2].startswith("bnreg_tf.cli.") \
            and command[2] != "bnreg_tf.cli.demo" else None
    return command[1:] if len(command) > 1 and command[1].endswith(".py") else None


def _console_script(path):
    """Whether `path` is one of bnreg's console scripts written for this interpreter."""
    name = os.path.basename(path)
    if not name.startswith("bnreg-") or name == "bnreg-demo" or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        first = f.readline().decode(errors="replace")
    interpreter = first[2:].strip() if first.startswith("#!") else ""
    return os.path.isfile(interpreter) and os.path.samefile(os.path.dirname(interpreter),
                                                            os.path.dirname(sys.executable))


def _base_env():
    return _get_server().env if _server else {**os.environ}


def _get_server():
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = _Server()
        atexit.register(_server.close)
    return _server


class _Forked:
    """A run forked by the server, seen as `subprocess.Popen` shows a process (text output)."""

    def __init__(self, command, cwd, env, stdout, stderr):
        self.args, self.returncode, self.outputs = command, None, None
        piped = subprocess.PIPE in (stdout, stderr)
        self.scratch = tempfile.mkdtemp(prefix="bnreg-run-") if piped else None
        self.paths = [os.path.join(self.scratch, name) if kind == subprocess.PIPE
                      else os.devnull for name, kind in (("stdout", stdout), ("stderr", stderr))]
        self.server = _get_server()
        try:
            self.id = self.server.start(_server_argv(command, env), cwd, env, *self.paths)
            self.pid = self.server.pids.pop(self.id)
        except BaseException:   # the server's answers may be out of step: start a new one
            self._drop_scratch()
            _reset()
            raise

    def poll(self):
        if self.returncode is None and self.server.until(lambda: self.id in self.server.codes,
                                                         0):
            self._ended()
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            if not self.server.until(lambda: self.id in self.server.codes, timeout):
                raise subprocess.TimeoutExpired(self.args, timeout, *self._read())
            self._ended()
        return self.returncode

    def communicate(self, timeout=None):
        self.wait(timeout)
        return self.outputs

    def send_signal(self, signum):
        if self.poll() is None:
            self.server.signal(self.id, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def _ended(self):
        """The run has ended: its exit status, its output kept, its scratch files gone."""
        self.returncode = self.server.codes.pop(self.id)
        self.outputs = self._read()
        self._drop_scratch()

    def _read(self):
        return tuple(None if path == os.devnull else _text(path) for path in self.paths)

    def _drop_scratch(self):
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def popen(command, *, cwd=ROOT, env=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          text=True):
    """`subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True)`,
    forked from the server where it can be (module docstring); stdout and stderr are PIPE or
    DEVNULL, read by `communicate`."""
    assert text and {stdout, stderr} <= {subprocess.PIPE, subprocess.DEVNULL}
    env = dict(os.environ if env is None else env)
    if not _forkable(command, env):
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr,
                                text=True)
    return _Forked(command, cwd, env, stdout, stderr)


def run(command, *, cwd=ROOT, env=None, timeout=None, capture_output=True, text=True):
    """`subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
    timeout=timeout)`, forked from the server where it can be (module docstring)."""
    assert capture_output and text, "binaries.run captures text output only"
    process = popen(command, cwd=cwd, env=env)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        process.kill()
        stdout, stderr = process.communicate(timeout=60)
        raise subprocess.TimeoutExpired(command, timeout, stdout, stderr) from expired
    except BaseException:   # interrupted: nothing outlives the test
        if process.poll() is None:
            process.kill()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _reset():
    global _server
    if _server is not None:
        _server.close()
        _server = None


def _text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:   # not yet opened by the child
        return ""
