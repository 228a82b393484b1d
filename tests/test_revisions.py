"""Issue 25's revisions (`bnreg_tf.nn.revisions`): a config.json written before them reads as
revision 1 and rebuilds the layers it was trained with; `--revision=0` is a run dir's own; the
new flags (revision, skipinit_gain, survival_prob for every model, eval_crop) check themselves."""
import json
import math
import os
import sys

import keras
import numpy as np
import pytest

from bnreg_tf.nn import layers as bl
from bnreg_tf.run import rundir
from bnreg_tf.run.config import ConfigError, RunConfig
from bnreg_tf.run.models import build
from bnreg_tf.run.presets import PRESETS

from tests import binaries

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "main_3bfb970")
R3 = os.path.join(FIXTURES, "rundirs", "r3_wrn10_1_nf_resnet")


def r3_config():
    with open(os.path.join(R3, "config.json")) as f:
        return RunConfig.from_json(f.read())


def test_a_config_json_from_before_the_revisions_reads_as_revision_1():
    config = r3_config()
    assert (config.revision, config.model_revision, config.norm, config.agc) == \
        (1, 1, "nf_resnet", 0.5)
    assert config.survival_prob == -1.0 and config.eval_crop == "crop_fraction"  # as computed
    assert config.skipinit_gain == 0.0
    new = PRESETS["digits"].replace(model_dir="/tmp/x", revision=2, survival_prob=0.8)
    assert RunConfig.from_json(new.to_json()) == new   # an explicit 0.8 stays 0.8
    assert PRESETS["digits"].model_revision == 2


def test_revision_0_is_the_run_dirs_own_else_the_newest(tmp_path):
    fresh = PRESETS["digits"].replace(model_dir=str(tmp_path / "new"))
    assert rundir.resolve_revision(fresh).revision == 2
    old = str(tmp_path / "old")
    os.makedirs(old)
    with open(os.path.join(R3, "config.json")) as f:
        stored = json.load(f)
    with open(os.path.join(old, "config.json"), "w") as f:
        json.dump(stored, f)
    asked = r3_config().replace(model_dir=old, revision=0)
    assert rundir.resolve_revision(asked).revision == 1
    assert rundir.first_difference(r3_config(), asked) is None
    assert rundir.first_difference(r3_config(), asked.replace(revision=2)) == ("revision", 1, 2)
    with pytest.raises(ConfigError, match="--revision=1 there, 2 asked"):
        rundir.check_model_dir(asked.replace(revision=2))


def layer_configs(model):
    skip = {"name", "dtype", "trainable"}
    return [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if k not in skip})
            for layer in model.layers]


@pytest.mark.parametrize("norm,fixture", [("nf_resnet", "c_wrn10_1_nf_resnet.keras"),
                                          ("skipinit", "d_wrn10_1_skipinit.keras")])
def test_revision_1_builds_the_layers_3bfb970_built(norm, fixture):
    """Every layer's class and config (initializers and their seeds, gammas) as in the `.keras`
    file written at 3bfb970 with the same arguments; revision 2 differs."""
    saved = keras.saving.load_model(os.path.join(FIXTURES, fixture))
    kwargs = dict(num_classes=10, input_shape=(8, 8, 1), norm=norm, seed=0)
    assert layer_configs(build("wrn10_1", revision=1, **kwargs)) == layer_configs(saved)
    assert layer_configs(build("wrn10_1", **kwargs)) != layer_configs(saved)


def test_survival_prob_reaches_every_family():
    efficientnet = build("efficientnet_b0", num_classes=3, input_shape=(32, 32, 3))
    rates = [layer.drop_rate for layer in efficientnet.layers
             if isinstance(layer, bl.StochasticDepth)]
    # -1: the reference's 0.8; of B0's 16 blocks the last with a skip is block 14
    assert max(rates) == pytest.approx(0.2 * 14 / 16)
    assert all(layer.scale_by_keep for layer in efficientnet.layers
               if isinstance(layer, bl.StochasticDepth))
    wrn = build("wrn10_1", num_classes=3, input_shape=(8, 8, 3), survival_prob=0.9)
    assert [layer.drop_rate for layer in wrn.layers if isinstance(layer, bl.StochasticDepth)] \
        == pytest.approx([0.1 / 3, 0.2 / 3])
    assert not any(isinstance(layer, bl.StochasticDepth)
                   for layer in build("wrn10_1", num_classes=3, input_shape=(8, 8, 3)).layers)


def test_cosine_warm_up_is_the_nfnets_schedule():
    """`nfnets/optim.py` WarmupCosineDecay(start 0, min 0): linear to the peak over the warm-up,
    then `0.5 peak (1 + cos(pi (t - w) / (T - w)))`; revision 1 had no warm-up here."""
    from bnreg_tf.run.schedules import make_schedule

    config = PRESETS["nf_resnet50_imagenet"]
    assert (config.norm, config.survival_prob, config.warmup_epochs) == ("nf_resnet", 0.9, 5)
    schedule, peak, steps = make_schedule(config, 100), 0.4, 90 * 100
    for t in (0, 1, 250, 499, 500, 501, 4000, 8999, 9000):
        want = peak * t / 500 if t <= 500 else \
            0.5 * peak * (1 + np.cos(np.pi * (t - 500) / (steps - 500)))
        assert float(schedule(t)) == pytest.approx(want, rel=1e-5, abs=1e-7), t
    legacy = make_schedule(config.replace(revision=1), 100)
    assert float(legacy(0)) == pytest.approx(peak)


BAD = [
    (dict(revision=3), "--revision"),
    (dict(revision=-1), "--revision"),
    (dict(survival_prob=0.0), "--survival_prob"),
    (dict(survival_prob=1.5), "--survival_prob"),
    (dict(survival_prob=-0.5), "--survival_prob"),
    (dict(skipinit_gain=math.nan), "--skipinit_gain"),
    (dict(skipinit_gain=1.0), "--skipinit_gain"),          # digits' norm is batchnorm
    (dict(norm="fixup", skipinit_gain=0.5), "--skipinit_gain"),
    (dict(eval_crop="crop_half"), "--eval_crop"),
]


@pytest.mark.parametrize("changes,flag", BAD)
def test_new_flags_refuse_bad_values_in_one_line(changes, flag):
    with pytest.raises(ConfigError) as error:
        PRESETS["digits"].replace(model_dir="/tmp/unused", **changes)
    assert str(error.value).startswith(flag) and "\n" not in str(error.value)
    assert PRESETS["digits"].replace(norm="nf_resnet", skipinit_gain=1.0).skipinit_gain == 1.0


@pytest.mark.parametrize("flag", ["--revision=3", "--skipinit_gain=1", "--eval_crop=half"])
def test_bnreg_train_exits_2_naming_the_flag(tmp_path, flag):
    result = binaries.run(
        [sys.executable, "-m", "bnreg_tf.cli.train", f"--model_dir={tmp_path / 'run'}", flag],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "BNREG_QUIET": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"bnreg-train: error: {flag.split('=')[0]}")
    assert not os.path.exists(tmp_path / "run")
