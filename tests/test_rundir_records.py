"""bnreg's own files read back as untrusted input (issue 27's What to build 4, issue 26's
normalization.json): the study's study.json and results.json, the lock, normalization.json, and
class names that hold any character a folder name can."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf.run import inputs
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.export import read_class_names
from bnreg_tf.run.presets import PRESETS
from tests import binaries
from tests.runs import ROOT, env, ok, one_line
from tests.test_binaries import make_folder

QUICK = ["--epochs=1", "--steps_per_epoch=5", "--batch_size=32", "--norm_probe_size=16",
         "--variants=batchnorm", "--seeds=0"]
RUN = "batchnorm_s0"


def study(output_dir, *flags):
    return binaries.run([sys.executable, "-m", "bnreg_tf.cli.study", f"--output_dir={output_dir}",
                           *QUICK, *flags], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=900)


def _record(output_dir):
    with open(os.path.join(output_dir, "runs", RUN, "study.json")) as f:
        return json.load(f)


def test_the_studys_own_files_are_checked_when_read_back(tmp_path):
    out = str(tmp_path / "study")
    ok(study(out))
    good = _record(out)
    record_path = os.path.join(out, "runs", RUN, "study.json")
    # study.json that is not bnreg's record: the run is finished again, the record rebuilt.
    for text, problem in (("[1]", "holds a list, not a record"),
                          ('{"status": "ok"}', "has no run name"),
                          (json.dumps({k: v for k, v in good.items() if k != "status"}),
                           "has no status")):
        with open(record_path, "w") as f:
            f.write(text)
        result = ok(study(out))
        assert (f"bnreg-study: {record_path} {problem}; the run is finished again and its "
                "record rebuilt") in result.stdout, (text, result.stdout)
        rebuilt = _record(out)
        assert rebuilt["status"] == "ok" and rebuilt["test_accuracy"] == good["test_accuracy"]
    # A finished run's results.json that is not bnreg's: finished again.
    results = os.path.join(out, "runs", RUN, "results.json")
    with open(results, "w") as f:
        f.write('{"steps": ')
    result = ok(study(out))
    assert (f"bnreg-study: {RUN}: {results} is unreadable (JSONDecodeError); the run is finished "
            "again to rebuild it") in result.stdout
    with open(results) as f:
        assert json.load(f)["steps"] == 5
    # --report_only says which record it could not use.
    with open(record_path, "w") as f:
        f.write("null")
    result = ok(study(out, "--report_only"))
    assert (f"bnreg-study: {record_path} holds null, not a record; reported as pending: repeat "
            "the study without --report_only to rebuild it") in result.stdout
    # A lock that is a directory, a run dir that is a file: one line each, nothing else touched.
    lock = os.path.join(out, "runs", RUN, "bnreg.lock")
    os.remove(lock)
    os.makedirs(lock)
    line = one_line(study(out))
    assert line.endswith(f"{lock} is a directory, not bnreg's lock file; move it aside and "
                         "repeat the command"), line
    run_dir = os.path.join(out, "runs", RUN)
    shutil.rmtree(run_dir)
    with open(run_dir, "w") as f:
        f.write("x")
    line = one_line(study(out))
    assert line == (f"bnreg-study: error: --model_dir={run_dir}: exists and is not a directory "
                    "(not a bnreg run dir); move it aside and repeat the command")


def _folder_config(tmp_path):
    root = make_folder(str(tmp_path / "images"), with_test=True, per_class=4)
    config = PRESETS["digits"].replace(dataset="folder", data_dir=root,
                                       model_dir=str(tmp_path / "run"))
    spec, splits = inputs.plan(config)
    return config, spec, splits


def _normalization(config, spec, splits, lines):
    prep = inputs.preprocessing_for(config, spec.image_size, spec, splits, lines.append)
    return prep.mean, prep.std


@pytest.mark.parametrize("damage,problem", [
    ("garbage", "unreadable"), ("truncated", "unreadable"), ("list", "holds a list"),
    ("no std", "std is not 3 finite value(s)"), ("std 0", "std is not 3 finite value(s)"),
    ("NaN", "mean is not 3 finite pixel value(s)"), ("wrong length", "std is not 3 finite"),
    ("edited", "its values were edited (its sha256 does not match them)")])
def test_normalization_json_that_does_not_fit_is_recomputed_or_refused(tmp_path, damage,
                                                                        problem):
    config, spec, splits = _folder_config(tmp_path)
    lines = []
    good = _normalization(config, spec, splits, lines)
    path = os.path.join(config.model_dir, "normalization.json")
    with open(path) as f:
        text = f.read()
    stored = json.loads(text)
    changed = {"garbage": "\x00garbage", "truncated": text[:len(text) // 2],
               "list": json.dumps([stored["mean"], stored["std"]]),
               "no std": json.dumps({k: v for k, v in stored.items() if k != "std"}),
               "std 0": json.dumps({**stored, "std": [0.0, 0.0, 0.0]}),
               "NaN": json.dumps({**stored, "mean": [float("nan")] * 3}),
               "wrong length": json.dumps({**stored, "std": stored["std"][:2]}),
               "edited": json.dumps({**stored, "mean": [1.0, 2.0, 3.0]})}[damage]
    with open(path, "w") as f:
        f.write(changed)
    # No checkpoint yet: recomputed, with a line, to the same numbers.
    assert _normalization(config, spec, splits, lines) == good
    assert len(lines) == 1 and lines[0].startswith(f"bnreg: {path}: ") and problem in lines[0]
    assert lines[0].endswith("; recomputed from the training split")
    # Once checkpoints were trained with it: one line, nothing rewritten.
    os.makedirs(os.path.join(config.model_dir, "checkpoints"))
    open(os.path.join(config.model_dir, "checkpoints", "ckpt-1.index"), "w").close()
    with open(path, "w") as f:
        f.write(changed)
    with pytest.raises(ConfigError) as error:
        _normalization(config, spec, splits, lines)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message
    assert message.endswith("restore the file, or move it aside to have them computed again "
                            "from the training data (the same numbers if the data has not "
                            "changed)")
    with open(path) as f:
        assert f.read() == changed


def test_normalization_json_is_checked_against_the_data(tmp_path):
    config, spec, splits = _folder_config(tmp_path)
    good = _normalization(config, spec, splits, [])
    # The data moved (a resumable --data_dir): verified on its first images and followed.
    moved = str(tmp_path / "moved")
    shutil.copytree(config.data_dir, moved)
    config = config.replace(data_dir=moved)
    assert _normalization(config, spec, splits, []) == good
    with open(os.path.join(config.model_dir, "normalization.json")) as f:
        assert json.load(f)["data_dir"] == moved
    # The data changed under the run: one line.
    for directory, _, files in os.walk(os.path.join(moved, "train")):
        for name in files:
            path = os.path.join(directory, name)
            image = np.full((10, 10, 3), 7, np.uint8)
            with open(path, "wb") as f:
                f.write(tf.io.encode_png(image).numpy())
    with pytest.raises(ConfigError, match="the training data is not the data these statistics "
                                          "were computed on"):
        _normalization(config, spec, splits, [])


def test_a_class_name_with_a_newline_round_trips_into_the_export(tmp_path):
    root = str(tmp_path / "images")
    names = ["a\nb", "back\\slash", "c"]
    for label, name in enumerate(names):
        os.makedirs(os.path.join(root, "train", name))
        for i in range(4):
            image = np.full((8, 8, 3), 40 * label + i, np.uint8)
            with open(os.path.join(root, "train", name, f"{i}.png"), "wb") as f:
                f.write(tf.io.encode_png(image).numpy())
    model_dir = str(tmp_path / "run")
    ok(binaries.run([sys.executable, "-m", "bnreg_tf.cli.train", f"--model_dir={model_dir}",
                       "--dataset=folder", f"--data_dir={root}", "--epochs=1",
                       "--steps_per_epoch=2", "--batch_size=4", "--norm_probe_size=2",
                       "--holdout_examples=3"], cwd=ROOT, env=env(), capture_output=True,
                      text=True, timeout=600))
    export = os.path.join(model_dir, "export")
    with open(os.path.join(export, "dataset.json")) as f:
        assert json.load(f)["class_names"] == names
    with open(os.path.join(export, "class_names.txt"), "rb") as f:
        assert f.read().count(b"\n") == len(names)   # one line per class
    assert read_class_names(os.path.join(export, "class_names.txt")) == names
    result = ok(binaries.run([sys.executable, "-m", "bnreg_tf.cli.evaluate",
                                f"--saved_model={export}", "--dropout_draws=1"], cwd=ROOT,
                               env=env(), capture_output=True, text=True, timeout=600))
    assert "bnreg-eval: wrote" in result.stdout
