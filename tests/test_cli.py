"""The binaries end to end, in subprocesses: train -> SavedModel -> bnreg-eval, and bad input.

TFDS datasets are mocked (`tests/mock_tfds_run.py` wraps a binary in `tfds.testing.mock_data`);
digits is real. Every run is a few steps of a small model.
"""
import csv
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import binaries
from tests.runs import digests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOCK = os.path.join(ROOT, "tests", "mock_tfds_run.py")
QUICK = ["--epochs=1", "--steps_per_epoch=3", "--batch_size=8", "--eval_batch_size=8",
         "--norm_probe_size=8"]


def run(args, mock_examples=None, timeout=600):
    env = {**os.environ, "BNREG_QUIET": "1"}
    if mock_examples is None:
        command = [sys.executable, "-m", *args]
    else:
        command = [sys.executable, MOCK, str(mock_examples), *args]
    result = binaries.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    return result


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)


def _log(model_dir):
    with open(os.path.join(model_dir, "log.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("flags,column", [
    (["--embedding_l2=0.5"], "embedding_l2"),
    (["--functional_l2=0.5"], "functional_l2"),
    (["--norm=fixup_standardize", "--standardization_kl=0.01"], "_kl"),
])
def test_digits_train_export_eval(tmp_path, flags, column):
    model_dir = str(tmp_path / "run")
    ok(run(["bnreg_tf.cli.train", f"--model_dir={model_dir}", "--epochs=2", "--steps_per_epoch=5",
            "--batch_size=32", *flags]))
    results = _results(model_dir)
    rows = _log(model_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"] and [r["step"] for r in rows] == ["5", "10"]
    assert results["steps"] == 10
    assert not [c for c in rows[0] if c.startswith("val_") and column in c]  # no NaN columns
    penalty_columns = [c for c in rows[0] if column in c]
    assert penalty_columns and all(np.isfinite(float(r[c])) and float(r[c]) > 0
                                   for r in rows for c in penalty_columns)
    for key in ("probe_embedding_norm_sq", "probe_output_norm_sq", "learning_rate",
                "images_per_second", "val_accuracy"):
        assert np.isfinite(float(rows[-1][key])), key
    # TensorBoard scalars: the same numbers as the CSV, at the global step.
    scalars = {}
    for directory, _, files in os.walk(os.path.join(model_dir, "tensorboard")):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name == "scalars":
                        scalars[(os.path.basename(directory), value.tag, event.step)] = \
                            float(tf.make_ndarray(value.tensor))
    assert scalars[("train", "loss", 10)] == pytest.approx(float(rows[1]["loss"]), rel=1e-6)
    assert scalars[("validation", "accuracy", 10)] == \
        pytest.approx(float(rows[1]["val_accuracy"]), rel=1e-6)
    # bnreg-eval on the export in a fresh process (the run's own test split, from its
    # dataset.json): the baked-in preprocessing reproduces the trainer's score of the test split.
    export = os.path.join(model_dir, "export")
    ok(run(["bnreg_tf.cli.evaluate", f"--saved_model={export}"]))
    with open(os.path.join(model_dir, "eval_digits.json")) as f:
        evaluation = json.load(f)
    assert evaluation["examples"] == 360
    assert evaluation["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    assert evaluation["embedding_norm_sq"] > 0 and evaluation["output_norm_sq"] > 0
    assert 0 <= evaluation["dropout_accuracy"] <= 1
    assert evaluation["dropout_drop"] == pytest.approx(
        evaluation["accuracy"] - evaluation["dropout_accuracy"])


def test_saved_model_cli_reads_the_export(tmp_path):
    model_dir = str(tmp_path / "run")
    ok(run(["bnreg_tf.cli.train", f"--model_dir={model_dir}", *QUICK]))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = binaries.run([cli, "show", "--all", "--dir", os.path.join(model_dir, "export")],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout
    for signature in ("signature_def['serve']", "signature_def['serving_default']",
                      "signature_def['classify_embedding']"):
        assert signature in text
    assert "DT_UINT8" in text and "shape: (-1, -1, -1, 1)" in text
    for output in ("outputs['logits']", "outputs['probabilities']", "outputs['embedding']"):
        assert output in text
    # Probabilities are the softmax of the logits, for any batch size.
    loaded = tf.saved_model.load(os.path.join(model_dir, "export"))
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    logits = out["logits"].numpy().astype(np.float64)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"].numpy(), soft / soft.sum(1, keepdims=True),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dataset", ["cifar10", "svhn_cropped"])
def test_mocked_tfds_train_and_eval(tmp_path, dataset):
    model_dir = str(tmp_path / "run")
    preset = "wrn28_10_cifar10" if dataset == "cifar10" else "wrn28_10_svhn"
    ok(run(["bnreg_tf.cli.train", f"--preset={preset}", "--model=wrn10_1", f"--model_dir={model_dir}",
            "--holdout", "--embedding_l2=0.1", *QUICK], mock_examples=16))
    assert _results(model_dir)["eval_split"] == \
        ("train[45000:]" if dataset == "cifar10" else "train[70000:]")
    export = os.path.join(model_dir, "export")
    ok(run(["bnreg_tf.cli.evaluate", f"--saved_model={export}", f"--dataset={dataset}",
            "--batch_size=8"], mock_examples=8))
    with open(os.path.join(model_dir, f"eval_{dataset}.json")) as f:
        evaluation = json.load(f)
    assert evaluation["examples"] == 8
    if dataset == "cifar10":
        table = evaluation["cifar10_c"]["table"]
        assert len(table) == 15 and all(len(row) == 5 for row in table.values())
        values = [v for row in table.values() for v in row.values()]
        assert evaluation["cifar10_c"]["mean"] == pytest.approx(np.mean(values))
    else:
        assert "cifar10_c" not in evaluation


@pytest.mark.parametrize("preset,flags", [
    ("resnet50_imagenet", ["--norm=fixup", "--functional_l2=0.1"]),
    ("efficientnet_b0_imagenet", ["--embedding_l2=0.1", "--dropout=0"]),
])
def test_run_imagenet_on_mocked_imagenet(tmp_path, preset, flags):
    model_dir = str(tmp_path / "run")
    ok(run(["run_imagenet.py", f"--preset={preset}", f"--model_dir={model_dir}", "--image_size=32",
            "--batch_size=4", "--eval_batch_size=4", "--steps_per_epoch=2", "--epochs=1",
            "--norm_probe_size=4", *flags], mock_examples=6))
    results = _results(model_dir)
    assert results["steps"] == 2 and 0 <= results["eval_accuracy"] <= 1
    ok(run(["bnreg_tf.cli.evaluate", f"--saved_model={model_dir}/export",
            "--dataset=imagenet2012", "--dropout_draws=2"], mock_examples=3))
    with open(os.path.join(model_dir, "eval_imagenet2012.json")) as f:
        assert json.load(f)["examples"] == 3


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("finished") / "run")
    ok(run(["bnreg_tf.cli.train", f"--model_dir={model_dir}", *QUICK]))
    return model_dir


BAD_FLAGS = [
    (["bnreg_tf.cli.train", "--model=resnet51"], "bnreg-train: error: --model:"),
    (["bnreg_tf.cli.train", "--preset=cifar100"], "bnreg-train: error: --preset:"),
    (["bnreg_tf.cli.train", "--dataset=not_a_dataset"], "bnreg-train: error: --dataset:"),
    (["bnreg_tf.cli.train", "--dataset=folder", "--data_dir={empty}"],
     "bnreg-train: error: --data_dir="),
    (["bnreg_tf.cli.train", "--init_from={empty}", "--model_dir={fresh}"],
     "bnreg-train: error: --init_from="),
    (["bnreg_tf.cli.train", "--noexport=1"], "bnreg-train: error: --noexport=1"),
    (["bnreg_tf.cli.train", "--seed=abc"], "bnreg-train: error: flag --seed=abc"),
    (["bnreg_tf.cli.train", "--embedding_l2=-1"], "bnreg-train: error: --embedding_l2:"),
    (["bnreg_tf.cli.train", "--functional_l2=nan"], "bnreg-train: error: --functional_l2:"),
    (["bnreg_tf.cli.train", "--epochs=two"], "bnreg-train: error: flag --epochs="),
    (["bnreg_tf.cli.train", "--bogus=1"], "bnreg-train: error: Unknown command line flag 'bogus'"),
    (["bnreg_tf.cli.train", "--learning_rate=0.2"], "bnreg-train: error: --model_dir="),
    (["bnreg_tf.cli.train", "--agc=-0.01"], "bnreg-train: error: --agc"),
    (["bnreg_tf.cli.train", "--dataset=imagenet2012", "--model=resnet18", "--data_dir={empty}",
      "--model_dir={fresh}"], "bnreg-train: error: --dataset=imagenet2012"),
    (["bnreg_tf.cli.train", "--strategy=tpu", "--model_dir={fresh}"],
     "bnreg-train: error: --strategy=tpu"),
    (["bnreg_tf.cli.train", "--strategy=mirrored", "--virtual_cpus=2", "--batch_size=63",
      "--model_dir={fresh}"], "bnreg-train: error: --batch_size=63 does not split evenly"),
    (["bnreg_tf.cli.train", "--strategy=multi_worker", "--model_dir={fresh}"],
     "bnreg-train: error: --strategy=multi_worker: expected the TF_CONFIG"),
    (["bnreg_tf.cli.evaluate", "--saved_model={model_dir}", "--dataset=digits"],
     "bnreg-eval: error: --saved_model="),
    (["bnreg_tf.cli.evaluate", "--saved_model={model_dir}/export", "--dataset=not_a_dataset"],
     "bnreg-eval: error: --dataset:"),
    (["run_imagenet.py", "--preset=digits"], "run_imagenet.py: error: --preset:"),
    (["bnreg_tf.cli.evaluate", "--saved_model={model_dir}/export", "--output=/proc/r.json"],
     "bnreg-eval: error: --output=/proc/r.json: cannot write there"),
    (["bnreg_tf.cli.evaluate", "--saved_model={model_dir}/export", "--output={model_dir}"],
     "bnreg-eval: error: --output="),
]


@pytest.mark.parametrize("args,expected", BAD_FLAGS)
def test_bad_input_exits_2_with_one_line_and_touches_nothing(finished_run, tmp_path, args,
                                                             expected):
    empty = str(tmp_path / "tfds")
    os.makedirs(empty)
    before = digests(finished_run)
    fresh = str(tmp_path / "fresh")
    args = [a.format(model_dir=finished_run, empty=empty, fresh=fresh) for a in args]
    if args[0].startswith("bnreg_tf.cli.train") and not any(a.startswith("--model_dir") for a in args):
        args.append(f"--model_dir={finished_run}")
    if args[0] == "run_imagenet.py":
        command = [sys.executable, *args, f"--model_dir={finished_run}"]
        result = binaries.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    else:
        result = run(args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    assert "Traceback" not in result.stderr
    assert digests(finished_run) == before
    assert not os.path.exists(fresh)


def test_eval_writes_a_bare_output_file_name_into_the_working_dir(finished_run, tmp_path):
    result = binaries.run([sys.executable, "-m", "bnreg_tf.cli.evaluate",
                             f"--saved_model={finished_run}/export", "--output=r.json"],
                            cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ROOT},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "r.json") as f:
        assert json.load(f)["examples"] == 360
