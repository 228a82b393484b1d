"""A researcher's own data through the binaries (issue 26): bad image files and empty classes
refused in one line before anything is written (or skipped and counted), mixed sizes explained,
bnreg-eval refusing data of another channel count, and bnreg-study on an image folder and on a
(mocked) TFDS dataset with --data_dir. Subprocesses; each run is a few steps on tiny data."""
import json
import os
import sys
import time

import pytest

from tests import binaries
from tests.test_folder_checks import make_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOCK = os.path.join(ROOT, "tests", "mock_tfds_run.py")
TINY = ["--epochs=1", "--steps_per_epoch=2", "--batch_size=4", "--eval_batch_size=8",
        "--norm_probe_size=4"]


def run(args, mock_examples=None, timeout=300):
    env = {**os.environ}
    env.pop("BNREG_QUIET", None)
    prefix = [sys.executable, MOCK, str(mock_examples)] if mock_examples else [sys.executable, "-m"]
    start = time.monotonic()
    result = binaries.run([*prefix, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    result.seconds = time.monotonic() - start
    return result


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def one_line(result, start):
    """Exit 2 and a single stderr line starting with `start`, no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr[-3000:]
    return lines[0]


def _json(path):
    with open(path) as f:
        return json.load(f)


def _corrupt(root, relative, data):
    with open(os.path.join(root, relative), "wb") as f:
        f.write(data)


def _truncate(root, relative, size):
    path = os.path.join(root, relative)
    with open(path, "rb") as f:
        data = f.read()[:size]
    _corrupt(root, relative, data)


@pytest.mark.parametrize("damage,expected", [
    (lambda root: _truncate(root, "train/bee/1.png", 132),
     "train/bee/1.png: truncated PNG (132 bytes"),
    (lambda root: _corrupt(root, "test/cow/0.png", b"\x89PNG\r\n\x1a\ngarbage" * 8),
     "test/cow/0.png: PNG without an IHDR header chunk"),
    (lambda root: os.makedirs(os.path.join(root, "train", "dog")),
     "train/dog/ holds no .jpg/.jpeg/.png images"),
])
def test_bad_folders_are_refused_before_anything_is_written(tmp_path, damage, expected):
    root = make_folder(str(tmp_path / "images"))
    damage(root)
    model_dir = str(tmp_path / "run")
    result = run(["bnreg_tf.cli.train", "--dataset=folder", f"--data_dir={root}",
                  f"--model_dir={model_dir}", "--holdout_examples=2", *TINY])
    line = one_line(result, f"bnreg-train: error: --data_dir={root}: ")
    assert expected in line and ("--skip_bad_images" in line or "--drop_empty_classes" in line)
    assert not os.path.exists(model_dir)
    assert result.seconds < 120


@pytest.fixture(scope="module")
def tolerated(tmp_path_factory):
    """A folder of mixed small sizes with a truncated file in train/, a garbage file in test/
    and an empty class, trained with --skip_bad_images --drop_empty_classes."""
    base = tmp_path_factory.mktemp("tolerated")
    root = make_folder(str(base / "images"), per_class=6, sizes=(24, 40, 64, 30))
    _truncate(root, "train/ant/2.png", 100)
    _corrupt(root, "test/cow/1.png", b"not an image")
    os.makedirs(os.path.join(root, "train", "dog"))
    model_dir = str(base / "run")
    result = ok(run(["bnreg_tf.cli.train", "--dataset=folder", f"--data_dir={root}",
                     f"--model_dir={model_dir}", "--holdout_examples=2",
                     "--skip_bad_images", "--drop_empty_classes", *TINY]))
    return root, model_dir, result.stdout


def test_skipped_files_and_dropped_classes_are_counted_and_named(tolerated):
    root, model_dir, stdout = tolerated
    assert "skipped 2 bad image files (--skip_bad_images): train/ant/2.png (truncated PNG" \
        in stdout and "test/cow/1.png (neither PNG nor JPEG" in stdout
    assert "dropped 1 empty class folder (--drop_empty_classes): dog" in stdout
    results = _json(os.path.join(model_dir, "results.json"))
    assert results["data_checks"]["skipped_images"] == 2
    assert [entry[0] for entry in results["data_checks"]["skipped"]] == ["train/ant/2.png",
                                                                        "test/cow/1.png"]
    assert results["data_checks"]["dropped_classes"] == ["dog"]
    record = _json(os.path.join(model_dir, "export", "dataset.json"))
    assert record["class_names"] == ["ant", "bee", "cow"] and record["num_classes"] == 3
    assert results["steps"] == 2


def test_mixed_sizes_are_explained_with_the_flags_to_change(tolerated):
    _, _, stdout = tolerated
    line = next(line for line in stdout.splitlines() if line.startswith("  images: "))
    assert "varying sizes (24..64 px), all small: each resized to 64x64 (the largest side)" \
        in line and "pad-and-crop and flips" in line
    assert "--image_size=N" in line and "--augment=" in line
    assert "(64x64x3, 3 classes)" in stdout


def test_eval_refuses_data_of_another_channel_count_either_way(tolerated, tmp_path):
    root, model_dir, _ = tolerated
    # An RGB export scored on grey digits.
    line = one_line(run(["bnreg_tf.cli.evaluate", f"--saved_model={model_dir}/export",
                         "--dataset=digits", f"--output={tmp_path}/a.json"]),
                    "bnreg-eval: error: --dataset=digits: its images have 1 channel (grey), the "
                    "SavedModel takes 3 (RGB")
    assert not os.path.exists(tmp_path / "a.json")
    # A grey export (digits) scored on the RGB folder.
    grey = str(tmp_path / "grey")
    ok(run(["bnreg_tf.cli.train", f"--model_dir={grey}", *TINY]))
    one_line(run(["bnreg_tf.cli.evaluate", f"--saved_model={grey}/export", "--dataset=folder",
                  f"--data_dir={root}", "--skip_bad_images", f"--output={tmp_path}/b.json"]),
             "bnreg-eval: error: --dataset=folder: its images have 3 channels (RGB), the "
             "SavedModel takes 1 (grey")
    assert not os.path.exists(tmp_path / "b.json") and line


def test_eval_of_the_runs_own_folder_skips_as_the_run_did(tolerated):
    _, model_dir, _ = tolerated
    ok(run(["bnreg_tf.cli.evaluate", f"--saved_model={model_dir}/export"]))
    evaluation = _json(os.path.join(model_dir, "eval_folder.json"))
    assert evaluation["split"] == "test" and evaluation["examples"] == 5   # 6 minus the bad one


def _study(output_dir, *flags, mock_examples=None):
    return ok(run(["bnreg_tf.cli.study", f"--output_dir={output_dir}", "--variants=batchnorm,fixup",
                   "--seeds=0", "--epochs=1", "--steps_per_epoch=2", "--batch_size=4",
                   "--norm_probe_size=4", *flags], mock_examples=mock_examples, timeout=600))


def test_study_on_an_image_folder(tmp_path):
    root = make_folder(str(tmp_path / "images"), per_class=5)
    out = str(tmp_path / "study")
    result = _study(out, "--dataset=folder", f"--data_dir={root}", "--holdout_examples=3")
    assert f"on folder ({root})" in result.stdout
    assert os.path.isfile(os.path.join(out, "report.md"))
    records = _json(os.path.join(out, "results.json"))
    assert [(r["variant"], r["status"]) for r in records] == [("batchnorm", "ok"), ("fixup", "ok")]
    for record in records:
        results = _json(os.path.join(out, "runs", record["run"], "results.json"))
        # 15 training images: the last 3 of the fixed order held out; test/ scored once.
        assert (results["validation_split"], results["test_split"]) == ("train[12:]", "test")
        assert record["eval_split"] == "train[12:]" and 0 <= record["test_accuracy"] <= 1
        config = _json(os.path.join(out, "runs", record["run"], "config.json"))
        assert config["data_dir"] == root and config["holdout_examples"] == 3


def test_study_on_a_tfds_dataset_with_a_data_dir(tmp_path):
    data_dir = str(tmp_path / "tfds")
    os.makedirs(data_dir)
    out = str(tmp_path / "study")
    result = _study(out, "--dataset=fashion_mnist", f"--data_dir={data_dir}", mock_examples=12)
    assert f"on fashion_mnist ({data_dir})" in result.stdout
    assert os.path.isfile(os.path.join(out, "report.md"))
    for record in _json(os.path.join(out, "results.json")):
        assert record["status"] == "ok"
        results = _json(os.path.join(out, "runs", record["run"], "results.json"))
        # 12 mocked images: 10% held out from the end of train; the test split is TFDS's.
        assert (results["validation_split"], results["test_split"]) == ("train[11:]", "test")
        config = _json(os.path.join(out, "runs", record["run"], "config.json"))
        assert config["data_dir"] == data_dir
