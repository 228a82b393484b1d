"""The binaries as a researcher meets them: help, any dataset, holdout vs test, progress,
TensorBoard, --init_from (issue 13). Subprocess runs are a few steps on tiny data."""
import csv
import json
import os
import re
import sys

import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf.run import rundir, trainer
from bnreg_tf.run.config import ConfigError
from bnreg_tf.data import catalog, folder
from bnreg_tf.data.digits import digits_arrays
from bnreg_tf.run.presets import PRESETS
from bnreg_tf.run import inputs

from tests import binaries

DEFAULT = tf.distribute.get_strategy()  # the process strategy the binaries would pass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOCK = os.path.join(ROOT, "tests", "mock_tfds_run.py")
TINY = ["--epochs=1", "--steps_per_epoch=2", "--batch_size=4", "--eval_batch_size=8",
        "--norm_probe_size=4"]
BINARIES = {"bnreg-train": ["-m", "bnreg_tf.cli.train"], "bnreg-eval": ["-m", "bnreg_tf.cli.evaluate"],
            "bnreg-study": ["-m", "bnreg_tf.cli.study"], "run_imagenet.py": ["run_imagenet.py"]}


def run(args, mock_examples=None, quiet=True):
    env = {**os.environ}
    if quiet:
        env["BNREG_QUIET"] = "1"
    else:
        env.pop("BNREG_QUIET", None)
    prefix = [sys.executable, MOCK, str(mock_examples)] if mock_examples else [sys.executable]
    if mock_examples and args[0] == "-m":
        args = args[1:]
    result = binaries.run([*prefix, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _json(path):
    with open(path) as f:
        return json.load(f)


# --- help ---------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_help_and_helpfull_exit_0_listing_the_flags(binary):
    short = run([*BINARIES[binary], "--help"]).stdout
    full = run([*BINARIES[binary], "--helpfull"]).stdout
    own = "--saved_model" if binary == "bnreg-eval" else "--embedding_l2"
    assert own in short and own in full
    assert "--verbosity" in full and "--verbosity" not in short   # absl's own: full list only
    if binary != "bnreg-eval":
        for group in ("data:", "model:", "penalties:", "optimisation:", "execution:", "output:"):
            assert f"\n{group}\n" in short, group
        assert "[loss weight]" in short and "(preset default: 0.0)" in short
    if binary == "bnreg-train":
        assert run([*BINARIES[binary], "-h"]).stdout == short


def test_every_own_flag_has_a_unit_and_a_default():
    """Every RunConfig flag's help names its unit in brackets; the help adds its default."""
    from absl import flags

    from bnreg_tf.cli import help as cli_help
    from bnreg_tf.run.flags import define_run_flags, flag_group

    values = flags.FlagValues()
    define_run_flags(values)
    text = cli_help.short_help("bnreg-train", "doc", values)
    for flag in cli_help.own_flags(values):
        assert re.search(r"\[[^]]+\]", flag.help), flag.name
        assert flag_group(flag.name) != "other", flag.name
        assert f"--{flag.name}" in text or f"--[no]{flag.name}" in text
    assert text.count("default") >= len(cli_help.own_flags(values))


# --- datasets -----------------------------------------------------------------------------

def test_carved_splits_partition_the_training_split():
    spec = catalog.DatasetSpec("x", 3, 10, 3, 100, 0, "", 0, "crop_flip")
    splits = catalog.plan_splits(spec, True, holdout_fraction=0.1)
    assert (splits.train, splits.validation, splits.test) == ("train[:81]", "train[81:90]",
                                                               "train[90:]")
    assert (splits.train_examples, splits.validation_examples, splits.test_examples) == (81, 9, 10)
    full = catalog.plan_splits(spec, False, holdout_fraction=0.1)
    assert (full.train, full.validation, full.test, full.train_examples) == \
        ("train[:90]", None, "train[90:]", 90)
    explicit = catalog.plan_splits(spec, True, holdout_examples=20)
    assert (explicit.validation, explicit.test) == ("train[60:80]", "train[80:]")
    with_test = catalog.plan_splits(catalog.DatasetSpec("y", 3, 10, 3, 100, 0, "test", 7, "crop"),
                                    True, holdout_examples=25)
    assert (with_test.train, with_test.validation, with_test.test) == \
        ("train[:75]", "train[75:]", "test")
    with pytest.raises(catalog.DataError, match="--holdout_examples"):
        catalog.plan_splits(spec, True, holdout_examples=100)


def make_folder(root, with_test, per_class=6, grey=False, size=10):
    """Images whose class sets one channel to 255 (grey: the whole image brightness)."""
    rng = np.random.default_rng(0)
    parts = (("train", per_class), ("test", 2)) if with_test else (("train", per_class),)
    for part, count in parts:
        for label, name in enumerate(["bee", "ant", "cow"]):
            os.makedirs(os.path.join(root, part, name), exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 200, (size, size, 1 if grey else 3), dtype=np.uint8)
                image[..., 0 if grey else label] = 255 if not grey else 60 * label
                data = tf.io.encode_png(image) if i % 2 else tf.io.encode_jpeg(image, quality=100)
                with open(os.path.join(root, part, name, f"{i}.{'png' if i % 2 else 'jpg'}"),
                          "wb") as f:
                    f.write(data.numpy())
    return root


def test_folder_dataset_lists_decodes_and_slices(tmp_path):
    root = make_folder(str(tmp_path / "images"), with_test=False, per_class=6)
    spec = catalog.spec("folder", root)
    assert (spec.num_classes, spec.channels, spec.image_size, spec.train_examples) == (3, 3, 10, 18)
    assert spec.class_names == ("ant", "bee", "cow") and spec.test_split == ""
    splits = catalog.plan_splits(spec, True, holdout_examples=3)
    assert (splits.train, splits.validation, splits.test) == ("train[:12]", "train[12:15]",
                                                               "train[15:]")
    seen = []
    for split in (splits.train, splits.validation, splits.test):
        for example in catalog.load("folder", split, root):
            image, label = example["image"].numpy(), int(example["label"])
            # The label's class folder saturated one channel: the brightest one on average.
            assert image.shape == (10, 10, 3)
            assert image.mean((0, 1)).argmax() == _channel(label)
            seen.append(label)
    assert sorted(seen) == [0] * 6 + [1] * 6 + [2] * 6   # the slices partition the folder
    for path in folder.listing(root, "train")[1][:4]:
        assert folder.image_shape(path) == tuple(
            tf.io.decode_image(tf.io.read_file(path)).shape)


def _channel(label):
    # make_folder saturates channel `index in ["bee", "ant", "cow"]`; sorted labels are
    # ant (0), bee (1), cow (2).
    return ["bee", "ant", "cow"].index(["ant", "bee", "cow"][label])


def test_normalisation_is_computed_from_the_training_split_and_stored(tmp_path):
    root = make_folder(str(tmp_path / "images"), with_test=True, per_class=4, grey=True)
    config = PRESETS["digits"].replace(dataset="folder", data_dir=root,
                                       model_dir=str(tmp_path / "run"))
    spec, splits = inputs.plan(config)
    assert spec.channels == 1
    prep = inputs.preprocessing_for(config, spec.image_size, spec, splits)
    _, paths, _ = folder.listing(root, "train")
    pixels = np.concatenate([tf.io.decode_image(tf.io.read_file(p), channels=1).numpy().ravel()
                             for p in paths[:splits.train_examples]]).astype(np.float64)
    assert prep.mean[0] == pytest.approx(pixels.mean(), rel=1e-9)
    assert prep.std[0] == pytest.approx(pixels.std(), rel=1e-9)
    stored = _json(os.path.join(config.model_dir, "normalization.json"))
    assert stored["split"] == splits.train and stored["examples"] == splits.train_examples
    assert inputs.preprocessing_for(config, 10, spec, splits).mean == prep.mean  # read back
    stored["mean"] = [1.0]   # edited: its sha256 no longer fits, so it is recomputed (issue 26)
    with open(os.path.join(config.model_dir, "normalization.json"), "w") as f:
        json.dump(stored, f)
    assert inputs.preprocessing_for(config, 10, spec, splits).mean == prep.mean


def test_every_model_family_builds_for_the_datas_channels():
    from bnreg_tf.run.models import build_network, native_image_size

    for model in ("efficientnet_b0", "resnet18", "wrn10_1"):
        config = PRESETS["digits"].replace(model=model, model_dir="/tmp/unused")
        spec = catalog.spec("digits")
        network = build_network(config, spec, native_image_size(config, spec))
        prep = inputs.preprocessing_for(config, native_image_size(config, spec))
        images = prep.evaluate_batch(tf.constant(digits_arrays("test")[0][:2]))
        assert network(images)["logits"].shape == (2, 10), model


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar100"])
def test_unlisted_tfds_dataset_trains_exports_and_evaluates(tmp_path, dataset):
    model_dir = str(tmp_path / "run")
    run(["-m", "bnreg_tf.cli.train", f"--dataset={dataset}", f"--model_dir={model_dir}", *TINY],
        mock_examples=12)
    results = _json(os.path.join(model_dir, "results.json"))
    assert results["validation_split"] == "train[11:]"  # 10% of the 12 mocked images held out
    assert results["test_split"] == "test"
    record = _json(os.path.join(model_dir, "export", "dataset.json"))
    shape = {"fashion_mnist": 1, "cifar100": 3}[dataset]
    assert record["channels"] == shape and record["num_classes"] == {"fashion_mnist": 10,
                                                                     "cifar100": 100}[dataset]
    run(["-m", "bnreg_tf.cli.evaluate", f"--saved_model={model_dir}/export", "--batch_size=4"],
        mock_examples=6)
    evaluation = _json(os.path.join(model_dir, f"eval_{dataset}.json"))
    assert evaluation["examples"] == 6 and evaluation["split"] == "test"


@pytest.mark.parametrize("with_test", [True, False])
def test_image_folder_trains_exports_and_evaluates(tmp_path, with_test):
    root = make_folder(str(tmp_path / "images"), with_test)
    model_dir = str(tmp_path / "run")
    run(["-m", "bnreg_tf.cli.train", "--dataset=folder", f"--data_dir={root}",
         f"--model_dir={model_dir}", "--holdout_examples=2", *TINY])
    with open(os.path.join(model_dir, "export", "class_names.txt")) as f:
        assert f.read().split() == ["ant", "bee", "cow"]
    results = _json(os.path.join(model_dir, "results.json"))
    # Without test/: 2 test images carved off the end, then 2 held out.
    assert (results["validation_split"], results["test_split"]) == \
        (("train[16:]", "test") if with_test else ("train[14:16]", "train[16:]"))
    run(["-m", "bnreg_tf.cli.evaluate", f"--saved_model={model_dir}/export"])
    evaluation = _json(os.path.join(model_dir, "eval_folder.json"))
    assert evaluation["split"] == results["test_split"]
    assert evaluation["examples"] == (6 if with_test else 2)
    assert evaluation["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)


# --- the default run: holdout vs test, progress, logs, TensorBoard ------------------------

@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """bnreg-train's defaults on digits, 40 steps, stdout not a terminal."""
    model_dir = str(tmp_path_factory.mktemp("default") / "run")
    result = run(["-m", "bnreg_tf.cli.train", f"--model_dir={model_dir}", "--epochs=1",
                  "--steps_per_epoch=40", "--batch_size=8", "--embedding_l2=0.1"], quiet=False)
    return model_dir, result.stdout


def test_default_run_validates_on_the_holdout_and_scores_test_once(default_run):
    model_dir, _ = default_run
    results = _json(os.path.join(model_dir, "results.json"))
    assert (results["validation_split"], results["test_split"]) == ("validation", "test")
    with open(os.path.join(model_dir, "log.csv")) as f:
        (row,) = list(csv.DictReader(f))
    # The epoch's validation is the holdout's: the final holdout score of the same weights.
    assert float(row["val_cross_entropy"]) == pytest.approx(results["validation_cross_entropy"],
                                                            rel=1e-5)
    assert results["validation_cross_entropy"] != pytest.approx(results["test_cross_entropy"])
    # Independently: the export's predictions on each split's images.
    loaded = tf.saved_model.load(os.path.join(model_dir, "export"))
    for split, role in (("validation", "validation"), ("test", "test")):
        images, labels = digits_arrays(split)
        logits = loaded.serve(tf.constant(images))["logits"].numpy()
        accuracy = float(np.mean(np.argmax(logits, 1) == labels))
        assert accuracy == pytest.approx(results[f"{role}_accuracy"], abs=1e-6), role
    assert results["eval_accuracy"] == results["validation_accuracy"]   # the study's field


def test_progress_lines_inside_an_epoch(default_run):
    _, stdout = default_run
    lines = [line for line in stdout.splitlines() if line.startswith("epoch 1/1 step ")]
    assert len(lines) >= 2, stdout
    for line in lines:
        assert "/40 (" in line and "loss " in line and "images/s" in line
    assert any("ETA epoch" in line for line in lines)
    assert "config.json" in stdout and '"batch_size"' not in stdout   # a summary, not the JSON


def test_log_csv_learning_rate_is_the_epochs_mean(default_run):
    model_dir, _ = default_run
    with open(os.path.join(model_dir, "log.csv")) as f:
        (row,) = list(csv.DictReader(f))
    assert (row["epoch"], row["step"]) == ("1", "40")
    # Cosine from 0.05 to 0 over 40 steps, the LR of steps 0..39 averaged (closed form).
    want = np.mean([0.05 * 0.5 * (1 + np.cos(np.pi * s / 40)) for s in range(40)])
    assert float(row["learning_rate"]) == pytest.approx(want, rel=1e-5)


def test_tensorboard_has_train_and_validation_runs_by_step_and_hparams(default_run):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    model_dir, _ = default_run
    root = os.path.join(model_dir, "tensorboard")
    keep_all = {event_accumulator.TENSORS: 0}   # the reader samples 10 per tag by default
    train = event_accumulator.EventAccumulator(os.path.join(root, "train"), keep_all)
    train.Reload()
    rates = train.Tensors("learning_rate")
    assert [e.step for e in rates] == list(range(1, 41))   # every step, step on the x axis
    assert float(tf.make_ndarray(rates[0].tensor_proto)) == pytest.approx(0.05)
    assert "loss" in train.Tags()["tensors"]
    validation = event_accumulator.EventAccumulator(os.path.join(root, "validation"), keep_all)
    validation.Reload()
    assert [e.step for e in validation.Tensors("accuracy")] == [40]
    top = event_accumulator.EventAccumulator(root)
    top.Reload()
    content = top.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert data.session_start_info.hparams["embedding_l2"].number_value == pytest.approx(0.1)
    assert data.session_start_info.hparams["dataset"].string_value == "digits"


# --- --init_from ----------------------------------------------------------------------------

def test_init_from_starts_from_the_source_checkpoints_weights(tmp_path):
    source = PRESETS["digits"].replace(model_dir=str(tmp_path / "source"), epochs=1,
                                       steps_per_epoch=3, batch_size=16, export=False,
                                       norm_probe_size=8)
    trained = trainer.train(source, DEFAULT, log=lambda *_: None, verbose=0)
    branch = source.replace(model_dir=str(tmp_path / "branch"), init_from=source.model_dir,
                            learning_rate=0.01, epochs=2)
    run_ = trainer.build_run(branch, DEFAULT)
    # The trainable weights are the source's final ones (its last checkpoint), not a fresh init.
    assert trainer.weights_fingerprint(run_.network) == trained["weights_sha256"]
    fresh = trainer.build_run(branch.replace(init_from="", model_dir=str(tmp_path / "fresh")), DEFAULT)
    assert trainer.weights_fingerprint(fresh.network) != trained["weights_sha256"]
    # BatchNorm statistics too: every variable equals the checkpoint's value.
    latest = tf.train.latest_checkpoint(os.path.join(source.model_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(latest)
    stats = [v for v in run_.network.variables if "moving_" in v.path]
    assert stats
    saved = [reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
             if "moving_" in key and "optimizer" not in key]
    assert sorted(np.asarray(v).tobytes() for v in stats) == \
        sorted(np.asarray(t).tobytes() for t in saved)
    assert int(run_.trainer.optimizer.iterations.numpy()) == 0   # a fresh optimizer
    assert run_.init_from == latest
    with pytest.raises(ConfigError, match="--init_from"):
        trainer.build_run(branch.replace(model="wrn16_1", model_dir=str(tmp_path / "other")),
                          DEFAULT)


def test_refusals_point_to_init_from(tmp_path):
    config = PRESETS["digits"].replace(model_dir=str(tmp_path / "run"))
    os.makedirs(config.model_dir)
    with open(os.path.join(config.model_dir, "config.json"), "w") as f:
        f.write(config.to_json())
    with pytest.raises(ConfigError, match=f"--init_from={config.model_dir} --model_dir=NEW_DIR"):
        rundir.check_model_dir(config.replace(learning_rate=0.2))
