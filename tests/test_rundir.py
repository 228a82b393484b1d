"""Run directories under faults (subprocesses on digits, `--deterministic`): one writer at a time,
checkpoints found without (or despite) their index, corrupt files skipped or named, SIGTERM and
SIGINT saving a checkpoint, foreign and unwritable dirs refused, bad execution flags in one line.
"""
import csv
import json
import os
import shutil
import signal
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf.run.checkpoints import checkpoint_paths

from tests import binaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--epochs=2", "--steps_per_epoch=10", "--batch_size=32", "--checkpoint_steps=3",
         "--deterministic", "--embedding_l2=0.1", "--norm_probe_size=16", "--noexport"]


def _command(model_dir, *extra, binary="bnreg_tf.cli.train"):
    return [sys.executable, "-m", binary, f"--model_dir={model_dir}", *FLAGS, *extra]


def _env(**extra):
    return {**os.environ, "BNREG_QUIET": "1", **extra}


def train(model_dir, *extra, env=None):
    return binaries.run(_command(model_dir, *extra), cwd=ROOT, env=env or _env(),
                          capture_output=True, text=True, timeout=600)


def _one_line_error(result, status=2):
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _weights(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    return path, {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
                  if name.startswith(("network/", "optimizer/"))}


def _assert_identical(reference, resumed):
    path_a, a = _weights(reference)
    path_b, b = _weights(resumed)
    assert os.path.basename(path_a) == os.path.basename(path_b) == "ckpt-20"
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)


def _log(model_dir):
    with open(os.path.join(model_dir, "log.csv")) as f:
        return list(csv.DictReader(f))


def _stop_with(model_dir, signum, after_file="ckpt-6."):
    """Starts the run, sends `signum` once `after_file` exists; returns (process result, stderr)."""
    process = binaries.popen(_command(model_dir), cwd=ROOT, env=_env())
    directory = os.path.join(model_dir, "checkpoints")
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if os.path.isdir(directory) and any(f.startswith(after_file) for f in os.listdir(directory)):
            process.send_signal(signum)
            break
        time.sleep(0.005)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("reference") / "run")
    result = train(model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_saves_a_checkpoint_and_the_repeat_ends_identical(tmp_path, reference, signum):
    model_dir = str(tmp_path / "run")
    status, stderr = _stop_with(model_dir, signum)
    name = signal.Signals(signum).name
    assert status == 75, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bnreg-train: stopped by {name} at step "), lines
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    assert lines[0].endswith(f"{step}; checkpoint saved; repeat the command to resume")
    saved = [int(p.rsplit("-", 1)[1]) for p in checkpoint_paths(os.path.join(model_dir, "checkpoints"))]
    assert max(saved) == step >= 6   # nothing after the signal's step is lost
    with open(os.path.join(model_dir, "bnreg.lock")) as f:
        assert f.read() == ""   # released
    result = train(model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_identical(reference, model_dir)
    # The epoch resumed mid-way logs the loss and accuracy of all its steps, as the unbroken one.
    ours, theirs = _log(model_dir), _log(reference)
    assert [r["epoch"] for r in ours] == [r["epoch"] for r in theirs] == ["1", "2"]
    for column in ("loss", "accuracy", "embedding_l2", "val_loss"):
        assert [float(r[column]) for r in ours] == [float(r[column]) for r in theirs], column


def test_stop_on_signal_saves_at_the_current_step_between_periodic_checkpoints(tmp_path):
    """In process: the step the signal arrived in is saved, and no validation pass runs."""
    import keras

    from bnreg_tf.run import preemption

    model = keras.Sequential([keras.Input([3]), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    manager.save(checkpoint_number=0)

    class SignalAtStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 4:
                os.kill(os.getpid(), signal.SIGTERM)

    class NoValidation(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            raise AssertionError("validation ran after the stop signal")

    x, y = np.ones([64, 3], "float32"), np.zeros([64, 2], "float32")
    with preemption.stop_signals():
        with pytest.raises(preemption.Preempted, match="stopped by SIGTERM at step 5; checkpoint saved"):
            model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0,
                      callbacks=[SignalAtStep(), NoValidation(), preemption.StopOnSignal(manager)])
    assert manager.latest_checkpoint.endswith("ckpt-5")
    assert int(model.optimizer.iterations.numpy()) == 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # restored after the block


def _interrupted(tmp_path):
    model_dir = str(tmp_path / "interrupted")
    status, stderr = _stop_with(model_dir, signal.SIGTERM, after_file="ckpt-9.")
    assert status == 75, stderr[-2000:]
    return model_dir


def test_lost_stale_and_corrupt_checkpoints_resume_from_the_files(tmp_path, reference):
    source = _interrupted(tmp_path)
    checkpoints = checkpoint_paths(os.path.join(source, "checkpoints"))
    assert len(checkpoints) == 3
    cases = {}
    # Lost index; plus the leftovers of a kill during a write, and a dead holder's lock.
    lost = cases["lost"] = str(tmp_path / "lost")
    shutil.copytree(source, lost)
    os.remove(os.path.join(lost, "checkpoints", "checkpoint"))
    os.makedirs(os.path.join(lost, "checkpoints", "ckpt-99_temp"))
    os.makedirs(os.path.join(lost, "export.partial"))
    with open(os.path.join(lost, "bnreg.lock"), "w") as f:
        json.dump({"host": "gone", "pid": 999999, "started": 0}, f)
    # Stale index: names files that were deleted.
    stale = cases["stale"] = str(tmp_path / "stale")
    shutil.copytree(source, stale)
    with open(os.path.join(stale, "checkpoints", "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-999"\nall_model_checkpoint_paths: "ckpt-999"\n')
    # Corrupt newest checkpoint: its data file truncated.
    corrupt = cases["corrupt"] = str(tmp_path / "corrupt")
    shutil.copytree(source, corrupt)
    newest = os.path.basename(checkpoints[-1])
    data = os.path.join(corrupt, "checkpoints", f"{newest}.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    for name, model_dir in cases.items():
        result = train(model_dir)
        assert result.returncode == 0, (name, result.stderr[-3000:])
        _assert_identical(reference, model_dir)
    assert not os.path.exists(os.path.join(lost, "export.partial"))
    assert not os.path.exists(os.path.join(lost, "checkpoints", "ckpt-99_temp"))


def test_unrestorable_checkpoints_never_restart_from_zero(tmp_path):
    model_dir = _interrupted(tmp_path)
    for path in checkpoint_paths(os.path.join(model_dir, "checkpoints")):
        with open(f"{path}.index", "wb") as f:
            f.write(b"garbage")
    before = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    line = _one_line_error(train(model_dir))
    assert "no checkpoint restores (ckpt-" in line and "will not start over them from step 0" in line
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == before


def test_corrupt_logs_missing_config_and_foreign_dirs_are_refused(tmp_path, reference):
    model_dir = _interrupted(tmp_path)
    norms = os.path.join(model_dir, "initial_norms.json")
    with open(norms, "w") as f:
        f.write("{not json")
    assert f"{norms}: unreadable" in _one_line_error(train(model_dir))
    os.remove(norms)
    # Issue 26: a garbage log.csv is rebuilt from the checkpoint's history. The stop lands at
    # ckpt-9 or, on a loaded machine, a step or two later: past an epoch's end the log has rows.
    log = os.path.join(model_dir, "log.csv")
    rows = len(_log(model_dir)) if os.path.exists(log) else 0
    last = os.path.basename(checkpoint_paths(os.path.join(model_dir, "checkpoints"))[-1])
    with open(log, "w") as f:
        f.write("\x00\x01garbage\n1,2,3\n")
    result = train(model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    if rows:
        assert f"bnreg: {log} " in result.stdout and \
            f"rebuilt its {rows} rows from checkpoint {last}" in result.stdout, result.stdout
    else:
        assert f"bnreg: {log}: not the log of checkpoint {last}, which has no epoch done yet; " \
            "started anew" in result.stdout, result.stdout
    columns = ("epoch", "step", "loss", "accuracy", "val_loss")
    assert [[row[c] for c in columns] for row in _log(model_dir)] == \
        [[row[c] for c in columns] for row in _log(reference)]
    config = os.path.join(model_dir, "config.json")
    os.remove(config)
    line = _one_line_error(train(model_dir, "--learning_rate=0.3"))
    assert "holds checkpoints but no config.json" in line and f"--init_from={model_dir}" in line
    assert not os.path.exists(config)
    foreign = tmp_path / "foreign"
    (foreign / "export").mkdir(parents=True)
    (foreign / "export" / "notes.txt").write_text("mine")
    (foreign / "log.csv").write_text("my,own\n")
    line = _one_line_error(train(str(foreign)))
    assert "is not empty and holds no bnreg config.json" in line
    assert sorted(os.listdir(foreign)) == ["export", "log.csv"]
    assert (foreign / "export" / "notes.txt").read_text() == "mine"


def test_a_second_process_on_a_busy_dir_is_refused(tmp_path):
    model_dir = str(tmp_path / "run")
    first = binaries.popen(_command(model_dir, "--steps_per_epoch=2000"), cwd=ROOT, env=_env())
    directory = os.path.join(model_dir, "checkpoints")
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not (
            os.path.isdir(directory) and os.listdir(directory)):   # the first step checkpoint
        time.sleep(0.01)
    second = train(model_dir, "--steps_per_epoch=2000", "--learning_rate=0.3")
    assert first.poll() is None, "the first run ended before the second started"
    line = _one_line_error(second)
    assert line.startswith(f"bnreg-train: error: --model_dir={model_dir} is in use by PID "
                           f"{first.pid} on "), line
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 75, stderr[-2000:]
    with open(os.path.join(model_dir, "config.json")) as f:
        assert json.load(f)["learning_rate"] == 0.05


@pytest.mark.parametrize("flags,env,message", [
    (["--model_dir=/proc/bnreg_run"], {}, "--model_dir=/proc/bnreg_run: cannot write there"),
    (["--model_dir=" + "x" * 300], {}, "cannot write there (File name too long)"),
    (["--seed=-1"], {}, "--seed: expected an integer in [0, 2^32), got -1"),
    (["--seed=4294967296"], {}, "--seed: expected an integer in [0, 2^32)"),
    (["--strategy=multi_worker"], {"TF_CONFIG": "{}"}, "TF_CONFIG needs a \"cluster\""),
    (["--strategy=multi_worker"],
     {"TF_CONFIG": json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                               "task": {"type": "worker", "index": 2}})},
     "TF_CONFIG's task index 2 is outside the 2 worker task(s)"),
    (["--strategy=multi_worker"],
     {"TF_CONFIG": json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                               "task": {"type": "worker", "index": 0}})},
     "fewer than 2 tasks"),
    (["--virtual_cpus=100000", "--strategy=mirrored"], {}, "--virtual_cpus=100000: expected 1.."),
])
def test_bad_paths_and_execution_flags_exit_2_in_one_line(tmp_path, flags, env, message):
    model_dir = str(tmp_path / "run")
    result = binaries.run([*_command(model_dir), *flags], cwd=ROOT, env=_env(**env),
                            capture_output=True, text=True, timeout=300)
    line = _one_line_error(result)
    assert line.startswith("bnreg-train: error: ") and message in line, line
    assert not os.path.exists(model_dir) or not os.listdir(model_dir)


def test_model_dir_under_a_file_and_tpu_without_a_tpu(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _one_line_error(train(str(blocker / "run")))
    assert f"--model_dir={blocker}/run: cannot write there" in line
    result = binaries.run([sys.executable, "run_imagenet.py", "--preset=resnet50_imagenet",
                             f"--model_dir={tmp_path / 'r50'}", "--strategy=tpu", "--tpu=nope"],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    line = _one_line_error(result)
    assert line.startswith("run_imagenet.py: error: --strategy=tpu (--tpu='nope'): no TPU reachable")


def test_lock_write_failure_is_one_error_and_releases_the_lock(tmp_path, monkeypatch):
    """A full disk while writing the holder's line: ConfigError, and the lock is free again."""
    import errno

    from bnreg_tf.run import runlock
    from bnreg_tf.run.config import ConfigError

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(runlock.os, "write", full)
        with pytest.raises(ConfigError, match="cannot write .*bnreg.lock .No space left on device"):
            runlock.RunLock(str(tmp_path)).acquire()
    with runlock.RunLock(str(tmp_path)):   # not held by a leaked descriptor
        pass


def test_a_dir_holding_only_the_study_record_of_a_failed_run_is_not_foreign(tmp_path):
    from bnreg_tf.run import rundir
    from bnreg_tf.run.presets import PRESETS

    config = PRESETS["digits"].replace(model_dir=str(tmp_path / "run"))
    os.makedirs(config.model_dir)
    with open(os.path.join(config.model_dir, "study.json"), "w") as f:
        json.dump({"status": "failed"}, f)
    assert rundir.check_model_dir(config) is False


def test_an_os_error_of_the_machine_is_one_line_exit_1(capsys):
    import errno

    from bnreg_tf.cli.errors import run_main
    from absl import flags as absl_flags

    def main():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/results.json")

    with pytest.raises(SystemExit) as exit_:
        run_main(main, ["bnreg-train"], "bnreg-train", absl_flags.FlagValues())
    assert exit_.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["bnreg-train: error: /data/run/results.json: No space left on device; what "
                     "was saved before is intact: free space and repeat the command"]
