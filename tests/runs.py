"""Helpers of the run-directory fault tests (issues 26 and 27): the binaries as subprocesses on
digits with `--deterministic`, their one-line errors, checkpoints compared bit for bit, files
planted outside a run dir, and a small tmpfs for a full disk."""
import contextlib
import csv
import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import binaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--epochs=2", "--steps_per_epoch=10", "--batch_size=32", "--checkpoint_steps=3",
         "--deterministic", "--embedding_l2=0.1", "--norm_probe_size=16"]
TIMEOUT = 600


def env(**extra):
    return {**os.environ, "BNREG_QUIET": "1", **extra}


def command(model_dir, *extra, binary="bnreg_tf.cli.train"):
    return [sys.executable, "-m", binary, f"--model_dir={model_dir}", *FLAGS, *extra]


def train(model_dir, *extra, cwd=ROOT):
    return binaries.run(command(model_dir, *extra), cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=TIMEOUT)


def fault(name, value, model_dir, *extra):
    """`tests/fault_run.py` as a Popen (stdout and stderr piped)."""
    return binaries.popen([sys.executable, os.path.join(ROOT, "tests", "fault_run.py"), name,
                           str(value), f"--model_dir={model_dir}", *FLAGS, *extra], cwd=ROOT,
                          env=env())


def ok(result):
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    return result


def one_line(result, status=2):
    """The one stderr line of `result`, which must have exited with `status`."""
    assert result.returncode == status, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def wait_for(predicate, process=None, seconds=300):
    """Polls `predicate()` until true (and `process` still runs); fails after `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended first: {process.communicate()[1][-2000:]}")
        time.sleep(0.01)
    raise AssertionError("timed out waiting")


def state(model_dir):
    """(name of the newest checkpoint, its network and optimizer variables)."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    return os.path.basename(path), {name: reader.get_tensor(name)
                                    for name, _ in tf.train.list_variables(path)
                                    if name.startswith(("network/", "optimizer/"))}


def assert_identical(reference, model_dir, last="ckpt-20"):
    name_a, a = state(reference)
    name_b, b = state(model_dir)
    assert name_a == name_b == last
    assert a.keys() == b.keys() and len(a) > 20
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)


COLUMNS = ("epoch", "step", "loss", "accuracy", "val_loss", "probe_embedding_norm_sq")


def log_rows(model_dir, columns=COLUMNS):
    with open(os.path.join(model_dir, "log.csv"), newline="") as f:
        return [[row[c] for c in columns] for row in csv.DictReader(f)]


def plant(folder, files):
    """Writes `files` ({relative path: bytes}) under `folder`; returns their sha256 by path."""
    for name, data in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return digests(folder)


def digests(folder):
    """sha256 of every file under `folder`, by relative path."""
    found = {}
    for directory, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


@contextlib.contextmanager
def small_disk(path, size):
    """A tmpfs of `size` (e.g. "1600k") mounted at `path`, unmounted afterwards. Needs root (or
    CAP_SYS_ADMIN): elsewhere the disk-full tests are skipped with that reason."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()[:100]}); the full-disk "
                    "cases need root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


def resize(path, size):
    subprocess.run(["mount", "-o", f"remount,size={size}", path], check=True, timeout=30)


def fill(path, leave=0):
    """Fills the file system of `path` with `path/filler`, leaving about `leave` bytes free."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.truncate(filler, max(0, os.path.getsize(filler) - leave))
    return filler
