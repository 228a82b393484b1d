"""bnreg-study where researchers run it: MirroredStrategy and multi-worker studies, shards that
split the grid and merge with --report_only, claimed run dirs, and finished runs reused only when
their config is the one asked (subprocesses on digits, a few steps per run)."""
import csv
import json
import os
import signal
import sys
import time

import numpy as np

from bnreg_tf.run.runlock import RunLock
from tests import binaries
from tests.test_distributed import _env, launch_workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--epochs=1", "--steps_per_epoch=4", "--batch_size=32", "--norm_probe_size=16",
         "--deterministic"]
GRID = ["--variants=fixup,fixup_el2", "--seeds=0,1", "--coefficients=0.5"]
COLUMNS = ("test_accuracy", "val_accuracy", "dropout_drop", "embedding_norm_sq", "output_norm_sq",
           "steps")


def _command(output_dir, *flags):
    return [sys.executable, "-m", "bnreg_tf.cli.study", f"--output_dir={output_dir}", *QUICK,
            *flags]


def study(output_dir, *flags, env=None):
    return binaries.run(_command(output_dir, *flags), cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env or _env())


def _results(output_dir):
    with open(os.path.join(output_dir, "results.csv")) as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def _log(output_dir, run, column):
    with open(os.path.join(output_dir, "runs", run, "log.csv")) as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def test_mirrored_study_over_two_cpus_matches_one_device(tmp_path):
    """The README's multi-GPU command on logical CPUs: one MirroredStrategy for every run."""
    grid = ["--variants=fixup,fixup_el2,fixup_fl2", "--seeds=0", "--learning_rate=0.1",
            "--coefficients=0.5"]
    single, mirrored = str(tmp_path / "single"), str(tmp_path / "mirrored")
    first = study(single, *grid)
    assert first.returncode == 0, first.stderr[-3000:]
    second = study(mirrored, *grid, "--strategy=mirrored", "--virtual_cpus=2")
    assert second.returncode == 0, second.stderr[-3000:]
    runs = ["fixup_s0", "fixup_el2_c0.5_s0", "fixup_fl2_c0.5_s0"]
    assert all(f"{run}: test acc" in second.stdout for run in runs)
    assert sorted(_results(mirrored)) == sorted(runs)
    for run in runs:   # the trainer's own mirrored test tolerance (test_distributed)
        for column in ("loss", "cross_entropy", "val_loss", "probe_embedding_l2",
                       "probe_functional_l2"):
            np.testing.assert_allclose(_log(mirrored, run, column), _log(single, run, column),
                                       rtol=1e-4, atol=1e-5, err_msg=f"{run} {column}")
    np.testing.assert_allclose(_log(mirrored, runs[1], "embedding_l2"),
                               _log(single, runs[1], "embedding_l2"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_log(mirrored, runs[2], "functional_l2"),
                               _log(single, runs[2], "functional_l2"), rtol=1e-4, atol=1e-5)


def test_two_worker_study_finishes_the_same_runs_and_only_the_chief_reports(tmp_path):
    out = str(tmp_path / "workers")
    processes = launch_workers(_command(out, "--variants=fixup_el2,fixup_fl2", "--seeds=0",
                                        "--coefficients=0.5", "--strategy=multi_worker"))
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=400)
            assert process.returncode == 0, stderr[-3000:]
            outputs.append(stdout)
    finally:
        for process in processes:
            process.kill()
    for stdout in outputs:
        assert "fixup_el2_c0.5_s0:" in stdout and "fixup_fl2_c0.5_s0:" in stdout
    assert "report in" in outputs[0] and "report in" not in outputs[1]
    results = _results(out)
    assert sorted(results) == ["fixup_el2_c0.5_s0", "fixup_fl2_c0.5_s0"]
    assert all(r["status"] == "ok" and r["test_accuracy"] for r in results.values())


def _wait_for_file(directory, prefix, processes, deadline=300):
    end = time.time() + deadline
    while time.time() < end and all(p.poll() is None for p in processes):
        if os.path.isdir(directory) and any(f.startswith(prefix) for f in os.listdir(directory)):
            return True
        time.sleep(0.01)
    return False


def test_shards_split_the_grid_resume_and_merge_like_one_process(tmp_path):
    single, sharded = str(tmp_path / "single"), str(tmp_path / "sharded")
    reference = study(single, *GRID)
    assert reference.returncode == 0, reference.stderr[-3000:]
    flags = [*GRID, "--checkpoint_steps=2"]
    # Two shards at once into one output dir; shard 0 is killed inside its first run.
    shards = [binaries.popen(_command(sharded, *flags, f"--shard={i}/2"), cwd=ROOT, env=_env())
              for i in range(2)]
    first_run = os.path.join(sharded, "runs", "fixup_s0", "checkpoints")
    assert _wait_for_file(first_run, "ckpt-2.", shards[:1])
    shards[0].send_signal(signal.SIGKILL)
    shards[0].communicate(timeout=60)
    out, err = shards[1].communicate(timeout=400)
    assert shards[1].returncode == 0, err[-3000:]
    assert "fixup_s1:" in out and "fixup_el2_c0.5_s1:" in out and "fixup_s0" not in out
    assert "merge with the same flags and --report_only" in out
    # Before shard 0 is done, the merged report lists its runs as pending.
    partial = study(sharded, *GRID, "--report_only")
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert "## Pending runs" in open(os.path.join(sharded, "report.md")).read()
    # Shard 0 again, while this test holds its second run's dir: that run is busy, not retrained.
    with RunLock(os.path.join(sharded, "runs", "fixup_el2_c0.5_s0")):
        again = study(sharded, *flags, "--shard=0/2")
    assert again.returncode == 1, again.stderr[-3000:]
    assert "fixup_s0: test acc" in again.stdout
    assert f"fixup_el2_c0.5_s0: busy: --model_dir={sharded}/runs/fixup_el2_c0.5_s0 is in use by " \
           f"PID {os.getpid()}" in again.stdout
    last = study(sharded, *flags, "--shard=0/2")
    assert last.returncode == 0, last.stderr[-3000:]
    assert "fixup_s0: skipped (finished before with the same config)" in last.stdout
    assert "fixup_el2_c0.5_s0: test acc" in last.stdout
    merged = study(sharded, *GRID, "--report_only")
    assert merged.returncode == 0, merged.stderr[-3000:]
    a, b = _results(single), _results(sharded)
    assert list(a) == list(b) == ["fixup_s0", "fixup_s1", "fixup_el2_c0.5_s0", "fixup_el2_c0.5_s1"]
    for run in a:   # the resumed run included: exact resume, deterministic ops
        assert b[run]["status"] == "ok"
        for column in COLUMNS:
            assert float(b[run][column]) == float(a[run][column]), (run, column)
    assert "## Pending runs" not in open(os.path.join(sharded, "report.md")).read()

    # A changed flag never reuses those runs: one line, then --rerun_changed retrains them.
    changed = study(single, *GRID, "--learning_rate=0.1")
    assert changed.returncode == 2
    lines = changed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (
        f"bnreg-study: error: run fixup_s0 in {single} was trained with --learning_rate=0.05, now "
        "0.1 is asked (and 3 more runs); use a new --output_dir, or --rerun_changed to retrain "
        "them"), lines
    rerun = study(single, "--variants=fixup", "--seeds=0", "--learning_rate=0.1",
                  "--rerun_changed")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "fixup_s0: test acc" in rerun.stdout
    with open(os.path.join(single, "runs", "fixup_s0", "config.json")) as f:
        assert json.load(f)["learning_rate"] == 0.1
    replaced = os.listdir(os.path.join(single, "replaced"))
    assert len(replaced) == 1 and replaced[0].startswith("fixup_s0-")
    with open(os.path.join(single, "replaced", replaced[0], "config.json")) as f:
        assert json.load(f)["learning_rate"] == 0.05
