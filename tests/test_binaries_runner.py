"""`tests/binaries.py`, the tests' runner of bnreg's binaries: a run forked from the server
(TensorFlow imported once) is what a fresh interpreter gives, for a refusal and for a whole
training run (same exit status, same stderr, same results and weights), and a run past its
timeout is killed and raises as `subprocess.run` does."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import binaries

ROOT = binaries.ROOT
QUICK = ["--epochs=1", "--steps_per_epoch=3", "--batch_size=8", "--eval_batch_size=8",
         "--norm_probe_size=8", "--embedding_l2=0.1"]


def both(args, tmp_path):
    """(forked, fresh) results of `python -m bnreg_tf.cli.train args` in dirs a/ and b/."""
    env = {**os.environ, "BNREG_QUIET": "1"}
    results = []
    for name, runner in (("a", binaries.run), ("b", subprocess.run)):
        command = [sys.executable, "-m", "bnreg_tf.cli.train", f"--model_dir={tmp_path / name}",
                   *args]
        assert binaries._forkable(command, env)   # so "a" is forked, "b" a fresh interpreter
        results.append(runner(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300))
    return results


def test_a_refusal_is_the_same_forked_or_fresh(tmp_path):
    forked, fresh = both(["--learning_rate=1e308"], tmp_path)
    assert forked.returncode == fresh.returncode == 2
    assert forked.stderr.replace(str(tmp_path / "a"), "DIR") == \
        fresh.stderr.replace(str(tmp_path / "b"), "DIR") != ""
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_training_run_is_the_same_forked_or_fresh(tmp_path):
    forked, fresh = both(QUICK, tmp_path)
    assert forked.returncode == fresh.returncode == 0, (forked.stderr[-2000:], fresh.stderr[-2000:])
    results = [json.loads((tmp_path / name / "results.json").read_text()) for name in "ab"]
    for key in ("test_accuracy", "validation_accuracy", "steps"):
        assert results[0][key] == results[1][key], key
    weights = [tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / name /
                                                                       "checkpoints")))
               for name in "ab"]
    names = [n for n in weights[0].get_variable_to_shape_map() if n.startswith("network/")]
    assert names
    for name in names:
        np.testing.assert_array_equal(weights[0].get_tensor(name), weights[1].get_tensor(name))


def test_a_run_past_its_timeout_is_killed_and_raises(tmp_path):
    command = [sys.executable, "-m", "bnreg_tf.cli.train", f"--model_dir={tmp_path / 'run'}",
               "--epochs=100", "--batch_size=8"]
    with pytest.raises(subprocess.TimeoutExpired):
        binaries.run(command, env={**os.environ, "BNREG_QUIET": "1"}, timeout=2)
    forked = binaries.run([sys.executable, "-m", "bnreg_tf.cli.train", "--seed=-1"], timeout=60)
    assert forked.returncode == 2   # the server goes on serving


@pytest.mark.parametrize("flag", ["--help", "--helpfull"])
def test_the_help_is_the_same_forked_or_fresh(flag):
    """The server imported what the binaries import before their flags are read, and no more:
    the flags listed (absl's own with --helpfull) are a fresh interpreter's."""
    env = {**os.environ, "BNREG_QUIET": "1"}
    command = [sys.executable, "-m", "bnreg_tf.cli.train", flag]
    assert binaries._forkable(command, env)
    forked, fresh = (runner(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300) for runner in (binaries.run, subprocess.run))
    assert forked.returncode == fresh.returncode == 0
    assert forked.stdout == fresh.stdout and "--embedding_l2" in forked.stdout


def test_forked_runs_go_side_by_side_and_take_signals(tmp_path):
    """`popen`: two runs at once, each with its own pid, output and exit status; a signal
    reaches the run it is sent to, and `communicate` waits for that run only."""
    env = {**os.environ, "BNREG_QUIET": "1"}
    slow = binaries.popen([sys.executable, "-m", "bnreg_tf.cli.train",
                           f"--model_dir={tmp_path / 'slow'}", "--epochs=100", "--batch_size=8",
                           "--noexport"], env=env)
    quick = binaries.popen([sys.executable, "-m", "bnreg_tf.cli.train", "--seed=-1"], env=env)
    assert isinstance(slow, binaries._Forked) and slow.pid != quick.pid
    out, err = quick.communicate(timeout=120)
    assert quick.returncode == 2 and "--seed" in err and slow.poll() is None
    config = tmp_path / "slow" / "config.json"
    for _ in range(6000):
        if config.exists() or slow.poll() is not None:
            break
        time.sleep(0.01)
    slow.send_signal(signal.SIGKILL)
    assert slow.communicate(timeout=60)[0] is not None and slow.returncode == -signal.SIGKILL
    never = binaries.popen([sys.executable, "-m", "bnreg_tf.cli.train",
                            f"--model_dir={tmp_path / 'never'}", "--epochs=100"], env=env)
    with pytest.raises(subprocess.TimeoutExpired):
        never.wait(0.5)
    never.terminate()   # whenever it lands, a bnreg binary's stop: one line and status 75
    out, err = never.communicate(timeout=120)
    assert never.returncode == 75 and err.startswith("bnreg-train: stopped by SIGTERM"), err
    assert never.communicate() == (out, err)   # as Popen: the output again


def test_runs_still_going_end_with_their_server(tmp_path):
    """A test that gives up on the server (its answers out of step) leaves no run behind."""
    env = {**os.environ, "BNREG_QUIET": "1"}
    going = binaries.popen([sys.executable, "-m", "bnreg_tf.cli.train",
                            f"--model_dir={tmp_path / 'run'}", "--epochs=100"], env=env)
    os.kill(going.pid, 0)   # running
    binaries._reset()
    with pytest.raises(ProcessLookupError):
        os.kill(going.pid, 0)
    assert binaries.run([sys.executable, "-m", "bnreg_tf.cli.train", "--seed=-1"],
                        env=env, timeout=120).returncode == 2   # a new server serves
