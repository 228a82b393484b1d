"""bnreg-study on tiny grids (digits, 1 short epoch): report files, table vs per-run numbers,
figures, skipping finished runs, a failing run reported while the others finish."""
import csv
import json
import os
import sys

import numpy as np
import pytest

from bnreg_tf.study import caveats, report, spp_figure, tables

from tests import binaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--epochs=1", "--steps_per_epoch=5", "--batch_size=32", "--norm_probe_size=16"]


def study(output_dir, *flags):
    return binaries.run([sys.executable, "-m", "bnreg_tf.cli.study", f"--output_dir={output_dir}",
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
    # The study measured the signal propagation plots of its one norm mode (fixup) once.
    assert "bnreg-study: signal propagation at initialisation of fixup in" in result.stdout
    assert f"![{spp_figure.SPP_TITLE}](signal_propagation.png)" in text
    assert _is_png(os.path.join(out, "signal_propagation.png"))
    assert "| fixup_el2 | 0.1 | 1 |" in text and "| fixup_el2 | 1 | 1 |" in text


def test_beyond_study_runs_the_normalizer_free_lineage_end_to_end(tmp_path):
    """Issue 18: the `beyond` preset's variants (one seed, one short epoch), their rows in the
    report, AGC's two thresholds kept out of Figure 3, and every norm mode's SPP curves."""
    out = str(tmp_path / "beyond")
    result = study(out, "--preset=beyond", "--seeds=0")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        records = json.load(f)
    assert [(r["run"], r["status"]) for r in records] == [(name, "ok") for name in (
        "batchnorm_s0", "fixup_s0", "fixup_el2_c0.05_s0", "skipinit_s0",
        "skipinit_el2_c0.05_s0", "nf_resnet_s0", "nf_resnet_agc_c0.32_s0",
        "nf_resnet_agc_c1_s0", "nf_resnet_el2_c0.05_s0")]
    configs = {r["run"]: json.load(open(os.path.join(r["model_dir"], "config.json")))
               for r in records}
    assert configs["nf_resnet_agc_c0.32_s0"]["agc"] == 0.32
    assert configs["nf_resnet_agc_c0.32_s0"]["norm"] == "nf_resnet"
    assert configs["nf_resnet_el2_c0.05_s0"]["agc"] == 0.0   # each variant: its own mechanism
    assert configs["skipinit_el2_c0.05_s0"]["embedding_l2"] == 0.05
    # The normalizer-free variants train with the reference's stochastic depth (keep 0.9).
    assert {name: c["survival_prob"] for name, c in configs.items()
            if name.startswith(("skipinit", "nf_resnet"))} == dict.fromkeys(
        [n for n in configs if n.startswith(("skipinit", "nf_resnet"))], 0.9)
    assert configs["batchnorm_s0"]["survival_prob"] == -1.0
    text = open(os.path.join(out, "report.md")).read()
    for row in ("| skipinit | – | 1 |", "| skipinit_el2 | 0.05 | 1 |", "| nf_resnet | – | 1 |",
                "| nf_resnet_agc | 0.32 | 1 |", "| nf_resnet_agc | 1 | 1 |",
                "| nf_resnet_el2 | 0.05 | 1 |"):
        assert row in text, row
    assert "coefficients.png" not in text   # AGC's thresholds are not a penalty sweep
    assert f"![{spp_figure.SPP_TITLE}](signal_propagation.png)" in text
    assert _is_png(os.path.join(out, "signal_propagation.png"))
    with open(os.path.join(out, "signal_propagation.json")) as f:
        modes = json.load(f)["modes"]
    assert {"batchnorm", "fixup", "skipinit", "nf_resnet"} <= set(modes)
    # The skip gains measured at 1: NF-ResNet's stream grows by about alpha^2 = 0.04 a block
    # within a stage (reset at the projection blocks), SkipInit's branches add to its stream.
    nf = modes["nf_resnet"]["gaussian"]
    assert [r["depth"] for r in nf] == [0, 1, 2, 3] and nf[0]["name"] == "stem"
    assert all(r["branch_variance"] > 0 for r in nf[1:])


def test_report_only_over_another_grids_runs_is_refused_and_writes_nothing(tmp_path):
    out = tmp_path / "study"
    (out / "runs" / "nf_resnet_agc_c0.5_s0").mkdir(parents=True)
    (out / "report.md").write_text("the study's report")
    result = study(str(out), "--report_only")   # the default grid, not the one that ran
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds none of this grid's 36 runs but others (e.g. " \
        "'nf_resnet_agc_c0.5_s0')" in lines[0], lines
    assert sorted(os.listdir(out)) == ["report.md", "runs"]
    assert (out / "report.md").read_text() == "the study's report"


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
    table = tables.main_table(records).splitlines()
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
    (["--variants=fixup_el2", "--coefficients=1e-7,1.0000001e-7"],
     "--coefficients/--learning_rates: values too close to tell apart in run names"),
    (["--preset=paper_cifar10", "--data_dir=/nonexistent/tfds"], "cifar10"),
    (["--protocol=cv"], "--protocol"),
    (["--learning_rates=0.1,0"], "--learning_rates: expected finite numbers > 0"),
    (["--learning_rates=0.1,0.1"], "--learning_rates: lists 0.1 twice"),
    (["--learning_rates=0.1", "--learning_rate=0.2"], "give either --learning_rate or"),
    (["--protocol=paper", "--tuning_seeds=0"], "--tuning_seeds: expected an integer >= 1"),
    (["--tuning_seeds=2"], "--tuning_seeds: only the paper protocol has a tuning phase"),
    (["--noholdout"], "--holdout: bnreg-study sets each run's training split"),
    (["--variants=fixup_el2", "--embedding_l2=0.1", "--coefficients=0.5"],
     "--embedding_l2: give either --embedding_l2 or --coefficients"),
    (["--preset=beyond", "--variants=nf_resnet_agc", "--agc=0.1", "--coefficients=0.5"],
     "--agc: give either --agc or --coefficients"),
    (["--report_only"], "--report_only: no runs of this study in"),
])
def test_bad_study_flags_exit_2(tmp_path, flags, message):
    result = study(str(tmp_path / "s"), *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnreg-study: error: ") and message in lines[0], \
        lines
    assert not os.path.exists(tmp_path / "s")


def _json(path):
    with open(path) as f:
        return json.load(f)


def test_paper_protocol_tunes_on_the_holdout_then_retrains_on_the_full_split(tmp_path):
    """Phase 1 on the holdout, the best median holdout accuracy chosen, phase 2 on the full
    training split; two shards, the first of which finishes its phase-1 share alone."""
    from bnreg_tf.data.digits import digits_arrays

    out = str(tmp_path / "paper")
    grid = ["--protocol=paper", "--variants=el2", "--coefficients=0.01,3", "--seeds=0,1",
            "--tuning_seeds=2", "--learning_rate=0.1"]
    first = study(out, *grid, "--shard=0/2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "phase 1 share done; phase 2 is planned once every phase-1 run has finished " \
           "(2 of 4 now)" in first.stdout
    partial = study(out, *grid, "--report_only")
    assert partial.returncode == 0, partial.stderr[-3000:]
    text = open(os.path.join(out, "report.md")).read()
    assert "## Selection (phase 1: tuned on the holdout)" in text
    assert "none yet (phase 1 incomplete)" in text and "## Phase 2 (final runs)" in text
    second = study(out, *grid, "--shard=1/2")   # the rest of phase 1, then its phase-2 share
    assert second.returncode == 0, second.stderr[-3000:]
    assert "phase 1 complete; phase 2: 2 runs" in second.stdout
    third = study(out, *grid, "--shard=0/2")
    assert third.returncode == 0, third.stderr[-3000:]
    merged = study(out, *grid, "--report_only")
    assert merged.returncode == 0, merged.stderr[-3000:]

    runs = os.path.join(out, "runs")
    tune = sorted(name for name in os.listdir(runs) if name.startswith("tune_"))
    final = sorted(name for name in os.listdir(runs) if name.startswith("final_"))
    assert tune == ["tune_el2_c0.01_lr0.1_s0", "tune_el2_c0.01_lr0.1_s1",
                    "tune_el2_c3_lr0.1_s0", "tune_el2_c3_lr0.1_s1"]
    # The choice, recomputed from each tuning run's own results.json (the trainer's holdout).
    holdout = {}
    for name in tune:
        config = _json(os.path.join(runs, name, "config.json"))
        results = _json(os.path.join(runs, name, "results.json"))
        assert config["holdout"] is True and results["eval_split"] == "validation"
        assert not os.path.exists(os.path.join(runs, name, "export"))   # never scored on test
        holdout.setdefault(config["embedding_l2"], []).append(
            results.get("validation_accuracy", results.get("eval_accuracy")))
    best = max(sorted(holdout), key=lambda c: np.median(holdout[c]))   # ties: the smaller one
    label = f"{best:g}"
    assert final == [f"final_el2_c{label}_lr0.1_s0", f"final_el2_c{label}_lr0.1_s1"]
    train, validation = len(digits_arrays("train")[1]), len(digits_arrays("validation")[1])
    records = {r["run"]: r for r in _json(os.path.join(out, "results.json"))}
    for name in final:
        config = _json(os.path.join(runs, name, "config.json"))
        assert config["holdout"] is False and config["embedding_l2"] == best
        assert records[name]["train_examples"] == train + validation
        assert records[name]["test_accuracy"] is not None
    for name in tune:
        assert records[name]["train_examples"] == train
    text = open(os.path.join(out, "report.md")).read()
    assert f"**el2**: chosen coefficient {label}, lr 0.1" in text
    for coefficient, values in holdout.items():
        cell = f"{np.median(values):.4f} [{min(values):.4f}, {max(values):.4f}]"
        assert f"| {coefficient:g} | 0.1 | {cell} | – |" in text
    assert "### Table 1: digits" in text and "### Table 3" in text and "## Caveats" in text
    assert "Pending" not in text


def _record(variant, seed, accuracy, coefficient=0.0, curve=(0.5, 0.6)):
    return {"run": f"{variant}_{coefficient}_s{seed}", "variant": variant, "seed": seed,
            "coefficient": coefficient, "learning_rate": 0.1, "status": "ok", "phase": "holdout",
            "holdout": True, "test_accuracy": accuracy, "val_accuracy": curve[-1],
            "curves": {"epoch": list(range(len(curve) + 1)), "val_accuracy": [None, *curve],
                       "embedding_norm_sq": [1.0] * (len(curve) + 1),
                       "output_norm_sq": [0.0] + [1.0] * len(curve)}}


def test_caveats_say_what_the_data_cannot_show():
    single = [_record("fixup", 0, 0.9), _record("batchnorm", 0, 0.95)]
    assert any("Every result is from a single seed" in line
               for line in caveats.caveats(single, 10))
    chance = [_record("fixup", s, a) for s, a in enumerate((0.10, 0.11, 0.12))]
    assert any("near chance (1/10 = 0.1000)" in line for line in caveats.caveats(chance, 10))
    learned = [_record("fixup", s, a, curve=(0.7, 0.6)) for s, a in enumerate((0.9, 0.92))]
    assert not any("near chance" in line or "rising" in line
                   for line in caveats.caveats(learned, 10))
    rising = [_record("fixup", s, a, curve=(0.5, 0.6, 0.7)) for s, a in enumerate((0.9, 0.92))]
    assert any("still rising at the last epoch in 2 of 2 runs" in line
               for line in caveats.caveats(rising, 10))
    overlap = learned + [_record("fixup_el2", s, a, 0.1, (0.7, 0.6))
                         for s, a in enumerate((0.91, 0.95))]
    lines = caveats.caveats(overlap, 10)
    assert any("seed ranges overlap" in line and "fixup_el2 (0.1)" in line and
               "not shown by this data" in line for line in lines), lines
    apart = learned + [_record("fixup_el2", s, a, 0.1, (0.7, 0.6))
                       for s, a in enumerate((0.95, 0.97))]
    lines = caveats.caveats(apart, 10)
    assert not any("overlap" in line for line in lines)
    assert any("fixup_el2 (0.1) (above: [0.9500, 0.9700])" in line for line in lines)


def test_selection_takes_the_best_median_and_breaks_ties_to_the_smaller_setting():
    from bnreg_tf.study import grid as study_lib, selection as selection_lib

    grid = study_lib.make_study("default", {}, ["fixup_el2"], ["0"], ["0.1", "0.2", "0.3"],
                                "/tmp/unused", "paper", ["0.1", "0.2"], 3)
    accuracy = {(0.1, 0.1): (0.5, 0.9, 0.6), (0.2, 0.1): (0.8, 0.8, 0.1),   # medians .6 .8
                (0.3, 0.1): (0.8, 0.7, 0.9), (0.3, 0.2): (0.8, 0.8, 0.8),   # .8 .8: tie
                (0.1, 0.2): (0.2, 0.2, 0.2), (0.2, 0.2): (0.1, 0.1, 0.1)}
    records = [{"run": s.name, "phase": s.phase, "variant": s.variant, "seed": s.seed,
                "coefficient": s.coefficient, "learning_rate": s.learning_rate, "status": "ok",
                "val_accuracy": accuracy[(s.coefficient, s.learning_rate)][s.seed]}
               for s in grid.runs]
    chosen = selection_lib.selection(grid, records)
    assert chosen["complete"] and chosen["variants"]["fixup_el2"]["choice"] == (0.2, 0.1)
    finals = selection_lib.final_runs(grid, records)
    assert [s.name for s in finals] == ["final_fixup_el2_c0.2_lr0.1_s0"]
    assert finals[0].config.holdout is False and finals[0].config.embedding_l2 == 0.2
    records[0] = {**records[0], "status": "pending"}
    assert selection_lib.final_runs(grid, records) is None


def test_default_study_draws_figure_3_with_the_batchnorm_reference(tmp_path):
    """The default study's own grid, through the report code with synthetic run records."""
    from bnreg_tf.study import grid as study_lib

    grid = study_lib.make_study("default", {}, output_dir=str(tmp_path))
    rng = np.random.default_rng(0)
    records = []
    for spec in grid.runs:
        record = _record(spec.variant, spec.seed, float(rng.uniform(0.8, 1.0)), spec.coefficient,
                         (0.7, 0.8))
        records.append({**record, "run": spec.name, "dropout_drop": 0.01,
                        "embedding_norm_sq": 2.0, "output_norm_sq": 3.0})
    report.write_report(records, str(tmp_path), "# header", grid)
    assert _is_png(tmp_path / "norm_curves.png") and _is_png(tmp_path / "coefficients.png")
    with open(tmp_path / "coefficients.csv") as f:
        rows = list(csv.DictReader(f))
    bn = [r for r in rows if r["variant"] == "batchnorm"]
    assert len(bn) == 1 and bn[0]["coefficient"] == ""
    bn_values = [r["test_accuracy"] for r in records if r["variant"] == "batchnorm"]
    assert float(bn[0]["test_accuracy_median"]) == pytest.approx(np.median(bn_values))
    for variant in ("fixup_el2", "fixup_fl2"):
        assert len({r["coefficient"] for r in rows if r["variant"] == variant}) >= 3
    text = (tmp_path / "report.md").read_text()
    assert "### Table 1: digits" in text and "## Caveats" in text


def test_paper_tables_follow_the_data_and_model():
    records = [{**_record(v, s, 0.8 + 0.01 * s, c), "dropout_drop": 0.01}
               for v, c in (("batchnorm", 0.0), ("dropout", 0.5), ("el2", 0.1), ("fl2", 0.1))
               for s in (0, 1)]
    context = dict(protocol="paper", seeds=(0, 1), dataset="imagenet2012", family="efficientnet",
                   early_stopping=True)
    text = tables.paper_tables(records, context)
    assert "### Table 4: EfficientNet-B8 on ImageNet" in text and "Table 1" not in text
    assert "early stopping on it" in text and "seeds 0, 1" in text
    for name in ("no Dropout", "Dropout", "EL2", "FL2"):
        assert f"| {name} |" in text
    assert "| no Dropout | – | 2 | 0.8050 [0.8000, 0.8100] |" in text
    resnet = tables.paper_tables(records, {**context, "family": "resnet",
                                           "early_stopping": False})
    assert "### Table 2: ResNet-50 on ImageNet" in resnet and "full training split" in resnet
    cifar = tables.paper_tables([{**r, "cifar10_c": 0.7} for r in records],
                                {**context, "dataset": "cifar10", "family": "resnet"})
    assert "### Table 1: CIFAR-10, test accuracy and CIFAR-10-C" in cifar
    assert "### Table 3" in text and "### Table 3" in cifar
