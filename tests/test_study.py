"""bnreg-study on tiny grids (digits, 1 short epoch): report files, table vs per-run numbers,
figures, skipping finished runs, a failing run reported while the others finish."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bnreg_tf import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--epochs=1", "--steps_per_epoch=5", "--batch_size=32", "--norm_probe_size=16"]


def study(output_dir, *flags):
    return subprocess.run([sys.executable, "-m", "bnreg_tf.cli.study", f"--output_dir={output_dir}",
                           *QUICK, *flags], cwd=ROOT, capture_output=True, text=True, timeout=900)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10_000


def test_study_reports_skips_finished_runs_and_survives_a_failing_one(tmp_path):
    out = str(tmp_path / "study")
    # KL at 1000 diverges: those runs fail (NaN loss) while the BatchNorm runs finish.
    first = study(out, "--variants=batchnorm,fixup_kl", "--seeds=0,1", "--standardization_kl=1000")
    assert first.returncode == 1, first.stderr[-3000:]
    assert "FAILED: NonFiniteLoss" in first.stdout
    with open(os.path.join(out, "results.json")) as f:
        records = json.load(f)
    assert [(r["variant"], r["seed"], r["status"]) for r in records] == [
        ("batchnorm", 0, "ok"), ("batchnorm", 1, "ok"),
        ("fixup_kl", 0, "failed"), ("fixup_kl", 1, "failed")]
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["test_accuracy"]) for r in rows[:2]] == \
        [r["test_accuracy"] for r in records[:2]]
    # The report's table cell is the median [min, max] of the per-run numbers.
    accuracies = [r["test_accuracy"] for r in records[:2]]
    cell = f"{np.median(accuracies):.4f} [{min(accuracies):.4f}, {max(accuracies):.4f}]"
    text = open(os.path.join(out, "report.md")).read()
    batchnorm_row = next(line for line in text.splitlines() if line.startswith("| batchnorm |"))
    assert cell in batchnorm_row
    assert "| fixup_kl | 1000 | 0 (2 failed) |" in text and "## Failed runs" in text
    assert _is_png(os.path.join(out, "norm_curves.png"))
    for record in records[:2]:
        curves = record["curves"]
        assert curves["epoch"] == [0, 1] and curves["embedding_norm_sq"][0] > 0
    # Repeating the command skips the finished runs and retries the failed ones.
    second = study(out, "--variants=batchnorm,fixup_kl", "--seeds=0,1", "--standardization_kl=1000")
    assert second.stdout.count("skipped (finished before with the same config)") == 2
    assert second.stdout.count("FAILED") == 2


def test_coefficient_sweep_draws_figure_3(tmp_path):
    out = str(tmp_path / "sweep")
    result = study(out, "--variants=fixup_el2", "--seeds=0", "--coefficients=0.1,1")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        records = json.load(f)
    assert [(r["run"], r["coefficient"]) for r in records] == \
        [("fixup_el2_c0.1_s0", 0.1), ("fixup_el2_c1_s0", 1.0)]
    assert _is_png(os.path.join(out, "coefficients.png"))
    text = open(os.path.join(out, "report.md")).read()
    assert "![Figure 3: against the coefficient](coefficients.png)" in text
    assert "| fixup_el2 | 0.1 | 1 |" in text and "| fixup_el2 | 1 | 1 |" in text


def test_main_table_formats_medians_and_failures():
    records = [
        {"run": "a_s0", "variant": "a", "coefficient": 0.0, "seed": 0, "status": "ok",
         "test_accuracy": 0.5, "dropout_drop": 0.1},
        {"run": "a_s1", "variant": "a", "coefficient": 0.0, "seed": 1, "status": "ok",
         "test_accuracy": 0.7, "dropout_drop": 0.3},
        {"run": "a_s2", "variant": "a", "coefficient": 0.0, "seed": 2, "status": "ok",
         "test_accuracy": 0.6, "dropout_drop": 0.2},
        {"run": "b_s0", "variant": "b", "coefficient": 0.5, "seed": 0, "status": "failed",
         "error": "boom"},
    ]
    table = report.main_table(records).splitlines()
    assert table[2] == "| a | – | 3 | 0.6000 [0.5000, 0.7000] | +0.2000 [+0.1000, +0.3000] |"
    assert table[3] == "| b | 0.5 | 0 (1 failed) | – | – |"


@pytest.mark.parametrize("flags,message", [
    (["--variants=batchnorm,bogus"], "--variants: 'bogus' is not one of"),
    (["--seeds=a"], "--seeds: expected comma-separated numbers"),
    (["--coefficients=-1"], "--coefficients: expected finite numbers >= 0"),
    (["--preset=paper_mnist"], "--preset: expected one of"),
    (["--model_dir=/tmp/x"], "--model_dir: bnreg-study puts each run"),
    (["--variants=fixup,fixup"], "--variants: lists fixup twice"),
    (["--seeds=0,1,0"], "--seeds: lists 0 twice"),
    (["--variants="], "--variants: expected a non-empty comma-separated list, got ''"),
    (["--seeds=0,-1"], "--seeds: expected integers in [0, 2^32), got '0,-1'"),
    (["--variants=batchnorm", "--standardization_kl=0.1"],
     "--standardization_kl=0.1: no chosen variant uses it (it is the coefficient of fixup_kl)"),
    (["--variants=batchnorm", "--coefficients=0.1,1"], "--coefficients: none of the variants"),
    (["--shard=2/2"], "--shard: expected I/N with 0 <= I < N"),
    (["--preset=paper_cifar10", "--data_dir=/nonexistent/tfds"], "cifar10"),
])
def test_bad_study_flags_exit_2(tmp_path, flags, message):
    result = study(str(tmp_path / "s"), *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnreg-study: error: ") and message in lines[0], \
        lines
    assert not os.path.exists(tmp_path / "s")
