"""Config, presets, flags and schedules: the paper's numbers, overrides, and what is rejected."""
import math

import numpy as np
import pytest
from absl import flags

from bnreg_tf.run import schedules
from bnreg_tf.run.config import ConfigError, RunConfig, validate
from bnreg_tf.data import catalog
from bnreg_tf.run.flags import config_from_flags, define_run_flags
from bnreg_tf.run.models import build_network, native_image_size
from bnreg_tf.run import preflight
from bnreg_tf.run.presets import PRESETS


def _preset(name, **changes):
    return validate(PRESETS[name].replace(model_dir="/tmp/unused", **changes))


def test_presets_carry_the_papers_hyperparameters():
    wrn = _preset("wrn28_10_cifar10")
    assert (wrn.model, wrn.dataset, wrn.epochs, wrn.batch_size, wrn.schedule) == \
        ("wrn28_10", "cifar10", 200, 128, "cosine")
    assert wrn.learning_rate == 0.1 and wrn.activation == "swish" and wrn.augment == "crop_flip"
    svhn = _preset("wrn28_10_svhn")
    assert svhn.dataset == "svhn_cropped" and svhn.model == "wrn28_10"
    r50 = _preset("resnet50_imagenet")
    assert (r50.epochs, r50.batch_size, r50.warmup_epochs, r50.decay_boundaries) == \
        (90, 512, 5, [30, 60, 80])
    assert schedules.peak_learning_rate(r50) == pytest.approx(0.2)  # 0.1 * 512 / 256
    assert (r50.weight_decay, r50.weight_decay_exclude, r50.precision) == \
        (1e-4, "batchnorm_and_bias", "float32")
    b8 = _preset("efficientnet_b8_imagenet")
    assert (b8.batch_size, b8.optimizer, b8.ema_decay, b8.label_smoothing, b8.weight_decay) == \
        (2048, "rmsprop_reference", 0.9999, 0.1, 1e-5)
    assert (b8.randaugment_layers, b8.randaugment_magnitude, b8.holdout) == (2, 28, True)
    assert schedules.peak_learning_rate(b8) == pytest.approx(0.128)  # 0.016 * 2048 / 256
    assert native_image_size(b8, catalog.DATASETS["imagenet2012"]) == 672
    b0 = _preset("efficientnet_b0_imagenet")
    assert native_image_size(b0, catalog.DATASETS["imagenet2012"]) == 224
    digits = _preset("digits")
    assert digits.dataset == "digits" and digits.model == "wrn10_1"


# Published trainable parameter counts (docs/references.md §3.8 and §5.6; ResNet-50 without conv biases).
@pytest.mark.parametrize("name,count", [
    ("resnet50_imagenet", 25_557_032),
    ("efficientnet_b0_imagenet", 5_288_548),
])
def test_preset_models_build_with_published_sizes(name, count):
    config = _preset(name)
    spec = catalog.DATASETS[config.dataset]
    network = build_network(config, spec, native_image_size(config, spec))
    assert sum(int(np.prod(v.shape)) for v in network.trainable_variables) == count
    assert set(network.output) == {"logits", "embedding"}


def test_wrn_preset_model_is_wrn_28_10():
    config = _preset("wrn28_10_cifar10", activation="relu")
    network = build_network(config, catalog.DATASETS["cifar10"], 32)
    assert sum(int(np.prod(v.shape)) for v in network.trainable_variables) == 36_479_194


def test_flags_start_from_the_preset_and_override_only_what_is_given():
    values = flags.FlagValues()
    define_run_flags(values)
    values(["prog", "--preset=resnet50_imagenet", "--model_dir=/tmp/x", "--embedding_l2=0.3",
            "--norm=fixup", "--nonesterov"])
    config = config_from_flags(values)
    assert config == PRESETS["resnet50_imagenet"].replace(
        model_dir="/tmp/x", embedding_l2=0.3, norm="fixup", nesterov=False)


def test_config_round_trips_through_json():
    config = _preset("efficientnet_b8_imagenet")
    assert RunConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="unknown fields"):
        RunConfig.from_json('{"bogus": 1}')


# What needs the model table, files or data: refused by the run's one preflight.
NEEDS_PREFLIGHT = [
    (dict(model="resnet51"), "--model"),
    (dict(model="wrn27_10"), "--model"),
    (dict(dataset="not_a_dataset"), "--dataset"),
    (dict(dataset="folder", data_dir="/nonexistent"), "--data_dir"),
    (dict(dataset="cifar10", holdout_examples=100), "--holdout_examples"),
    (dict(init_from="/nonexistent"), "--init_from"),
    (dict(norm="layernorm"), "--norm"),
    (dict(dropout=-1.0), "--dropout"),                       # reference rate: EfficientNet only
    (dict(model_dir=""), "--model_dir"),
    (dict(model="efficientnet_b0", norm="fixup"), "--norm"),
    (dict(augment="randaugment"), "--augment"),              # digits are greyscale
]
# What a RunConfig checks by itself when it is made, touching no file, data or model.
BAD = [
    (dict(holdout_fraction=1.5), "--holdout_fraction"),
    (dict(embedding_l2=-0.1), "--embedding_l2"),
    (dict(functional_l2=math.nan), "--functional_l2"),
    (dict(weight_decay=math.inf), "--weight_decay"),
    (dict(dropout=1.0), "--dropout"),
    (dict(standardization_kl=0.1), "--standardization_kl"),  # needs fixup_standardize
    (dict(norm="skipinit", standardization_kl=0.1), "--standardization_kl"),
    (dict(norm="nf_resnet", standardization_kl=0.1), "--standardization_kl"),
    (dict(agc=-0.01), "--agc"),
    (dict(ema_decay=0.99), "--ema_decay"),                   # needs rmsprop_reference
    (dict(schedule="linear"), "--schedule"),
    (dict(schedule="goyal", decay_epochs="60,30"), "--decay_epochs"),
    (dict(decay_epochs="a,b"), "--decay_epochs"),
    (dict(batch_size=0), "--batch_size"),
    (dict(epochs=0), "--epochs"),
    (dict(precision="float8"), "--precision"),
    (dict(strategy="horovod"), "--strategy"),
    (dict(activation="gelu"), "--activation"),
]


@pytest.mark.parametrize("changes,flag", BAD)
def test_a_config_refuses_bad_values_when_made_without_any_io(changes, flag, monkeypatch):
    config = PRESETS["digits"].replace(model_dir="/tmp/unused")

    def no_io(*args, **kwargs):
        raise AssertionError("a RunConfig touched the file system while checking itself")

    for name in ("open", "os.path.exists", "os.path.isdir", "os.listdir", "os.stat"):
        monkeypatch.setattr(name if "." in name else f"builtins.{name}", no_io)
    with pytest.raises(ConfigError) as error:
        config.replace(**changes)
    message = str(error.value)
    assert message.startswith(flag) and "\n" not in message


@pytest.mark.parametrize("changes,flag", NEEDS_PREFLIGHT)
def test_the_preflight_refuses_what_needs_models_files_or_data(changes, flag):
    config = PRESETS["digits"].replace(**{"model_dir": "/tmp/unused", **changes})   # valid
    with pytest.raises(ConfigError) as error:
        preflight.check(config)
    message = str(error.value)
    assert message.startswith(flag) and "\n" not in message


def _splits(name, holdout):
    splits = catalog.plan(name, holdout=holdout)[1]
    if holdout:
        return splits.train, splits.validation, splits.train_examples, splits.validation_examples
    return splits.train, splits.test, splits.train_examples, splits.test_examples


def test_split_plans_hold_out_the_papers_counts():
    assert _splits("cifar10", True) == ("train[:45000]", "train[45000:]", 45_000, 5_000)
    assert _splits("cifar10", False) == ("train", "test", 50_000, 10_000)
    assert _splits("svhn_cropped", True) == ("train[:70000]", "train[70000:]", 70_000, 3_257)
    assert _splits("imagenet2012", True)[2:] == (1_281_167 - 25_022, 25_022)
    assert _splits("imagenet2012", False)[1] == "validation"
    assert _splits("digits", True) == ("train", "validation", 1257, 180)
    assert _splits("digits", False) == ("train+validation", "test", 1437, 360)


def test_goyal_schedule_at_chosen_epochs():
    config = _preset("resnet50_imagenet")
    schedule = schedules.make_schedule(config, steps_per_epoch=100)
    peak = 0.2
    for epoch, want in ((0, 0.0), (2.5, peak / 2), (5, peak), (29.99, peak), (30, peak * 0.1),
                        (60, peak * 0.01), (85, peak * 0.001)):
        assert float(schedule(round(epoch * 100))) == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_cosine_and_efficientnet_schedules():
    config = _preset("wrn28_10_cifar10")
    cosine = schedules.make_schedule(config, steps_per_epoch=10)
    for step in (0, 500, 1000, 2000):
        want = 0.1 * 0.5 * (1 + math.cos(math.pi * step / 2000))
        assert float(cosine(step)) == pytest.approx(want, rel=1e-5, abs=1e-9)
    b8 = schedules.make_schedule(_preset("efficientnet_b8_imagenet").replace(steps_per_epoch=100),
                                 steps_per_epoch=100)
    assert float(b8(500)) == pytest.approx(0.128 * 0.97 ** 2, rel=1e-5)
    assert float(b8(250)) == pytest.approx(0.128 / 2, rel=1e-5)
