"""Stopping within a bounded grace, and writes that fail whole (issue 27), through the binaries:
a step that never ends under SIGTERM exits within --stop_grace_secs, a second signal at once;
signals at start-up, during the final evaluation and during the export exit 75 with one line and
the repeat ends exactly as an unbroken run; a full disk at start, during a checkpoint and during
the export is one line, leaves no probe or staging files, and the repeat after freeing space is
exact."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests import binaries
from tests.runs import (ROOT, assert_identical, command, env, fault, fill, ok, one_line, resize,
                        small_disk, state, train, wait_for)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("reference") / "run")
    ok(train(model_dir))
    return model_dir


def _has(model_dir, name):
    directory = os.path.join(model_dir, "checkpoints")
    return lambda: os.path.isdir(directory) and any(f.startswith(name) for f in os.listdir(directory))


def test_a_step_that_never_ends_stops_within_the_grace_and_the_repeat_is_exact(tmp_path,
                                                                               reference):
    model_dir = str(tmp_path / "run")
    process = fault("hang_step", 5, model_dir, "--stop_grace_secs=3")
    wait_for(_has(model_dir, "ckpt-3.index"), process)
    time.sleep(2)   # the step after the hang's element is waiting inside TensorFlow
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    took = time.time() - sent
    assert process.returncode == 75, stderr[-2000:]
    assert 3 <= took < 3 + 10, took
    last = os.path.join(model_dir, "checkpoints", "ckpt-3")
    assert stderr.strip().splitlines() == [
        "bnreg-train: stopped by SIGTERM: the step in progress did not end within "
        f"--stop_grace_secs=3; exiting without a new checkpoint; the last checkpoint is {last}: "
        "repeat the command to resume from it"]
    result = ok(train(model_dir))
    assert f"bnreg: resuming from {last} (step 3)" in result.stdout
    assert_identical(reference, model_dir)


def test_a_second_signal_exits_at_once_even_inside_a_step(tmp_path):
    model_dir = str(tmp_path / "run")
    process = fault("hang_step", 0, model_dir, "--stop_grace_secs=300")   # step 1 never ends
    wait_for(lambda: os.path.isdir(os.path.join(model_dir, "tensorboard")), process)   # in fit
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    time.sleep(1)
    sent = time.time()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT and time.time() - sent < 10, stderr[-2000:]
    assert stderr.strip().splitlines() == [
        "bnreg-train: second SIGINT: exiting now without a checkpoint"]


@pytest.mark.parametrize("phase,marker", [("slow_eval", "during the final evaluation"),
                                          ("slow_export", "during the export")])
def test_a_signal_in_the_final_evaluation_or_export_exits_75_and_the_repeat_finishes(
        tmp_path, reference, phase, marker):
    model_dir = str(tmp_path / "run")
    flag = str(tmp_path / "started")
    process = fault(phase, flag, model_dir)
    wait_for(lambda: os.path.exists(flag), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    last = os.path.join(model_dir, "checkpoints", "ckpt-20")
    assert process.returncode == 75, stderr[-2000:]
    assert stderr.strip().splitlines() == [
        f"bnreg-train: stopped by SIGTERM {marker}; the last checkpoint is {last}: repeat the "
        "command to resume from it"]
    assert not any(os.path.exists(os.path.join(model_dir, name))
                   for name in ("results.json", "export", "export.partial"))
    ok(train(model_dir))
    assert_identical(reference, model_dir)
    assert os.path.isfile(os.path.join(model_dir, "export", "saved_model.pb"))
    with open(os.path.join(model_dir, "results.json")) as mine, \
            open(os.path.join(reference, "results.json")) as theirs:
        a, b = json.load(mine), json.load(theirs)
    for key in ("validation_accuracy", "test_accuracy", "test_cross_entropy", "steps",
                "weights_sha256"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_start_up_signals_exit_with_one_line_and_write_nothing(tmp_path, signum):
    name = signal.Signals(signum).name
    # While Python loads TensorFlow (before bnreg's own code runs).
    early = subprocess.Popen(command(str(tmp_path / "early")), cwd=ROOT, env=env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    early.send_signal(signum)
    _, stderr = early.communicate(timeout=60)
    assert early.returncode == 75, stderr[-2000:]
    assert stderr.strip().splitlines() == [
        f"bnreg-train: stopped by {name} during start-up; nothing was written: repeat the command"]
    # Inside the run's start-up, once it holds the run dir (building, restoring).
    model_dir = str(tmp_path / "run")
    process = binaries.popen(command(model_dir), cwd=ROOT, env=env())
    wait_for(lambda: os.path.exists(os.path.join(model_dir, "config.json")), process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr[-2000:]
    assert stderr.strip().splitlines() == [
        f"bnreg-train: stopped by {name} during start-up; nothing was written: repeat the command"]
    assert os.listdir(model_dir) == ["bnreg.lock"]   # the fresh dir's start-up was undone


def test_a_full_disk_at_start_leaves_no_probe_and_the_repeat_is_exact(tmp_path, reference):
    with small_disk(str(tmp_path / "disk"), "4m") as disk:
        filler = fill(disk)
        model_dir = os.path.join(disk, "run")
        line = one_line(train(model_dir))
        assert line == (f"bnreg-train: error: --model_dir={model_dir}: cannot write there (No "
                        "space left on device)")
        assert os.listdir(model_dir) == []   # no .bnreg-write-test-<pid> left
        os.remove(filler)
        resize(disk, "16m")
        ok(train(model_dir))
        assert_identical(reference, model_dir)


def test_a_full_disk_during_a_checkpoint_and_the_export_is_one_line_and_resumes_exactly(
        tmp_path, reference):
    with small_disk(str(tmp_path / "disk"), "1600k") as disk:
        model_dir = os.path.join(disk, "run")
        line = one_line(train(model_dir, "--noexport"), 1)
        step = int(re.match(r"bnreg-train: error: cannot write checkpoint ckpt-(\d+) ", line)[1])
        saved = sorted(int(f[5:-6]) for f in os.listdir(os.path.join(model_dir, "checkpoints"))
                       if f.endswith(".index"))
        last = f"ckpt-{saved[-1]}"
        assert saved and saved[-1] < step
        assert line == (f"bnreg-train: error: cannot write checkpoint ckpt-{step} in "
                        f"{model_dir}/checkpoints (No space left on device); the last checkpoint, "
                        f"{last}, is intact: free space (or make the dir writable) and repeat the "
                        "command to resume from it")
        resize(disk, "16m")
        result = ok(train(model_dir, "--noexport"))
        assert f"checkpoints/ckpt-{step}_temp" in result.stdout   # the leftover, removed
        assert_identical(reference, model_dir)
        # The export at the end of the same run: the disk fills up during it.
        filler = fill(disk, leave=100_000)
        line = one_line(train(model_dir), 1)
        export = os.path.join(model_dir, "export")
        assert line == (f"bnreg-train: error: cannot write the export {export} (No space left on "
                        "device); the last checkpoint, ckpt-20, is intact: free space (or make "
                        "the dir writable) and repeat the command to finish the run (its final "
                        "evaluation and export)")
        assert not os.path.exists(export) and not os.path.exists(f"{export}.partial")
        os.remove(filler)
        ok(train(model_dir))
        assert os.path.isfile(os.path.join(export, "saved_model.pb"))
        assert state(model_dir)[0] == "ckpt-20"
        assert_identical(reference, model_dir)
