"""Fault tolerance: SIGKILL a training run at several points, restart it, lose nothing.

With `--deterministic`, the killed-and-resumed run ends with exactly the weights, optimizer
step and per-epoch log of an uninterrupted run of the same seed.
"""
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from tests import binaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--epochs=3", "--steps_per_epoch=12", "--batch_size=64", "--checkpoint_steps=4",
         "--deterministic", "--embedding_l2=0.1", "--norm_probe_size=16", "--noexport",
         "--augment=crop"]


def _command(model_dir):
    return [sys.executable, "-m", "bnreg_tf.cli.train", f"--model_dir={model_dir}", *FLAGS]


def _env():
    return {**os.environ, "BNREG_QUIET": "1"}


def _run_to_end(model_dir):
    result = binaries.run(_command(model_dir), cwd=ROOT, env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _kill_when(model_dir, ready):
    """Starts the run and SIGKILLs it as soon as `ready(checkpoint files)` holds."""
    process = binaries.popen(_command(model_dir), cwd=ROOT, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    directory = os.path.join(model_dir, "checkpoints")
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        files = os.listdir(directory) if os.path.isdir(directory) else []
        if ready(files):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def _final_state(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    names = sorted(name for name, _ in tf.train.list_variables(path)
                   if name.startswith(("network/", "optimizer/")))
    return path, {name: reader.get_tensor(name) for name in names}


def _epochs_logged(model_dir):
    with open(os.path.join(model_dir, "log.csv")) as f:
        return [row["epoch"] for row in csv.DictReader(f)]


def test_sigkill_at_several_points_then_resume_gives_the_uninterrupted_result(tmp_path):
    reference = str(tmp_path / "reference")
    _run_to_end(reference)
    resumed = str(tmp_path / "resumed")
    # 1) mid first epoch, just as the step-4 checkpoint's files appear (index not yet promoted)
    _kill_when(resumed, lambda files: any(f.startswith("ckpt-4.") for f in files))
    # 2) mid second epoch, right as the write of the step-16 checkpoint starts
    _kill_when(resumed, lambda files: any(f.startswith("ckpt-16") for f in files))
    # 3) after the second epoch's checkpoint: resume at an epoch boundary or beyond
    _kill_when(resumed, lambda files: any(f.startswith("ckpt-28") for f in files))
    _run_to_end(resumed)
    ref_path, ref_state = _final_state(reference)
    res_path, res_state = _final_state(resumed)
    assert ref_path.endswith("ckpt-36") and res_path.endswith("ckpt-36")
    assert ref_state.keys() == res_state.keys() and len(ref_state) > 20
    for name, value in ref_state.items():
        np.testing.assert_array_equal(res_state[name], value, err_msg=name)
    assert _epochs_logged(reference) == _epochs_logged(resumed) == ["1", "2", "3"]
