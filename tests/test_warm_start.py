"""--init_from restores by layer name (issue 26): penalties and Dropout added or removed between
two runs, the restored weights equal the source checkpoint's layer by layer (read back by the
source run's own resume, an independent path), what was not restored is listed, and another
architecture or class count is one line naming the layer and both shapes."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bnreg_tf.run import trainer
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.presets import PRESETS
from tests import binaries
from tests.test_folder_checks import make_folder

DEFAULT = tf.distribute.get_strategy()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(epochs=1, steps_per_epoch=3, batch_size=16, export=False, norm_probe_size=8)


def _quiet(*_):
    pass


def _train(config):
    return trainer.train(config, DEFAULT, log=_quiet, verbose=0)


def _layer_weights(network):
    """{layer name: [arrays]} of the layers that hold weights (seed states excluded)."""
    found = {}
    for layer in network.layers:
        arrays = [v.numpy() for v in layer.variables if "seed_generator" not in v.path]
        if arrays:
            found[layer.name] = arrays
    return found


def _assert_same_layers(restored, source):
    want, got = _layer_weights(source), _layer_weights(restored)
    assert sorted(got) == sorted(want)
    for name, arrays in want.items():
        assert len(got[name]) == len(arrays), name
        for a, b in zip(got[name], arrays):
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A trained source without any penalty or Dropout, and its network as its own resume
    reads it back (tf.train.Checkpoint's object graph)."""
    config = PRESETS["digits"].replace(model_dir=str(tmp_path_factory.mktemp("plain") / "run"),
                                       **SMALL)
    _train(config)
    return config, trainer.build_run(config, DEFAULT, log=_quiet).network


@pytest.mark.parametrize("changes", [dict(embedding_l2=0.1), dict(dropout=0.3),
                                     dict(embedding_l2=0.1, functional_l2=0.1, dropout=0.3)])
def test_adding_penalties_and_dropout_restores_every_layer(plain, tmp_path, changes):
    source, source_network = plain
    lines = []
    branch = source.replace(model_dir=str(tmp_path / "branch"), init_from=source.model_dir,
                            learning_rate=0.01, **changes)
    run = trainer.build_run(branch, DEFAULT, log=lines.append)
    _assert_same_layers(run.network, source_network)
    assert int(run.trainer.optimizer.iterations.numpy()) == 0   # a fresh optimizer
    note = next(line for line in lines if line.startswith("bnreg: --init_from: "))
    count = len(run.network.variables)
    restored = count - (1 if changes.get("dropout") else 0)   # Dropout's seed state is new
    assert f"{restored} of {count} network variables restored by name" in note
    assert ("not restored (new here): seed_generator" in note) == bool(changes.get("dropout"))


def test_removing_penalties_and_dropout_restores_every_layer(plain, tmp_path):
    source, _ = plain
    regularised = source.replace(model_dir=str(tmp_path / "regularised"),
                                 init_from=source.model_dir, embedding_l2=0.1, dropout=0.3)
    _train(regularised)   # trained with EL2 and Dropout: its own weights now
    own = trainer.build_run(regularised.replace(init_from=""), DEFAULT, log=_quiet).network
    back = source.replace(model_dir=str(tmp_path / "back"), init_from=regularised.model_dir)
    lines = []
    run = trainer.build_run(back, DEFAULT, log=lines.append)
    _assert_same_layers(run.network, own)
    note = next(line for line in lines if line.startswith("bnreg: --init_from: "))
    assert "not restored (new here): none" in note


def test_another_architecture_or_class_count_is_one_line_naming_the_layer(plain, tmp_path):
    source, _ = plain
    deeper = source.replace(model_dir=str(tmp_path / "deeper"), init_from=source.model_dir,
                            model="wrn16_1")
    with pytest.raises(ConfigError) as error:
        trainer.build_run(deeper, DEFAULT, log=_quiet)
    assert str(error.value) == (
        f"--init_from={source.model_dir}: its network is not the one of --model=wrn16_1 "
        "--norm=batchnorm on --dataset=digits: layer group1_block1_site1_bn differs "
        "(group1_block1_site1_bn/gamma: (16,) here, not in the checkpoint)")
    rgb = make_folder(str(tmp_path / "rgb"), classes=("a", "b", "c"), per_class=6, sizes=(8,))
    grey = _grey_folder(str(tmp_path / "grey"), classes=("a", "b", "c"))
    for data_dir, expected in (
            (rgb, "layer stem_conv differs (stem_conv/kernel: (3, 3, 1, 16) in the checkpoint, "
                  "(3, 3, 3, 16) here)"),
            (grey, "layer classifier differs (classifier/kernel: (64, 10) in the checkpoint, "
                   "(64, 3) here)")):
        other = source.replace(model_dir=str(tmp_path / "other"), init_from=source.model_dir,
                               dataset="folder", data_dir=data_dir, holdout_examples=2,
                               batch_size=4)
        with pytest.raises(ConfigError) as error:
            trainer.build_run(other, DEFAULT, log=_quiet)
        assert expected in str(error.value) and "\n" not in str(error.value)


def _grey_folder(root, classes):
    rng = np.random.default_rng(0)
    for name in classes:
        os.makedirs(os.path.join(root, "train", name))
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                os.path.join(root, "train", name, f"{i}.png"))
    return root


def test_the_binary_refuses_in_one_line_without_tensorflow_warnings(plain, tmp_path):
    source, _ = plain
    model_dir = str(tmp_path / "fixup")
    result = binaries.run(
        [sys.executable, "-m", "bnreg_tf.cli.train", f"--init_from={source.model_dir}",
         f"--model_dir={model_dir}", "--norm=fixup", "--epochs=1", "--steps_per_epoch=2",
         "--batch_size=8", "--norm_probe_size=8"],
        cwd=ROOT, env={**os.environ, "BNREG_QUIET": "1"}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "WARNING" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(f"bnreg-train: error: --init_from={source.model_dir}: its network "
                               "is not the one of --model=wrn10_1 --norm=fixup") and \
        "layer group1_block0_site1_bias differs" in lines[0]
