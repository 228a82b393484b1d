"""The models the binaries build, in one table: name -> family, builder, native image size.

`MODELS` holds every fixed name (`resnet18`..`resnet152`, `efficientnet_b0`..`_b8`, `_l2`);
the WideResNets form a pattern, `wrn<depth>_<width>` (depth = 6n + 4), read in one place
(`resnet.parse_wrn`). `model_entry(name)` answers both, `build_network` builds what a
`RunConfig` describes, and `--help` lists `model_names()`.
"""
import dataclasses
import functools
import re

import efficientnet
import resnet
from bnreg_tf.run.config import ConfigError

EFFICIENTNET_SURVIVAL_PROB = 0.8   # the reference's drop-connect (docs/references.md §5.4)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model: its `family` ("resnet" or "efficientnet"), the norm modes it can be built in,
    its builder (keyword arguments `num_classes`, `input_shape`, `norm`, `activation`,
    `dropout`, `survival_prob` (-1: the family's reference), `skipinit_gain`, `revision`, `seed`
    and the penalties' coefficients by name) and its native resolution on ImageNet-like data
    (None: the data's)."""

    name: str
    family: str
    build: object
    norms: tuple
    native_size: int = None


def _efficientnet_builder(variant):
    def build(*, norm="batchnorm", activation="swish", dropout=-1, survival_prob=-1,
              skipinit_gain=0.0, revision=None, **kwargs):
        del norm, activation, skipinit_gain, revision   # BatchNorm and swish (`norms`)
        survival_prob = EFFICIENTNET_SURVIVAL_PROB if survival_prob == -1 else survival_prob
        return efficientnet.build_model(variant, dropout=None if dropout == -1 else dropout,
                                        survival_prob=survival_prob, **kwargs)
    return build


def _resnet_builder(builder):
    def build(*, survival_prob=-1, revision=resnet.LATEST_REVISION, **kwargs):
        # No stochastic depth by default; revision 1 ignored --survival_prob (EfficientNet's).
        keep = 1.0 if survival_prob == -1 or revision < 2 else survival_prob
        return builder(survival_prob=keep, revision=revision, **kwargs)
    return build


MODELS = {
    **{f"resnet{depth}": ModelEntry(
        f"resnet{depth}", "resnet", _resnet_builder(functools.partial(
            resnet.build_resnet_v1, resnet.RESNETS[depth], name=f"resnet{depth}")),
        resnet.NORM_MODES) for depth in resnet.RESNETS},
    **{f"efficientnet_{variant}": ModelEntry(
        f"efficientnet_{variant}", "efficientnet", _efficientnet_builder(variant), ("batchnorm",),
        scaling.resolution) for variant, scaling in efficientnet.SCALING.items()},
}
WRN_PATTERN = "wrn<depth>_<width>"


def model_names():
    """What `--model` accepts, for `--help` and error messages."""
    return [WRN_PATTERN + " (depth = 6n+4, e.g. wrn28_10)", *MODELS]


def model_entry(name):
    """The `ModelEntry` of `name`; ConfigError (one line naming --model) when there is none."""
    if name in MODELS:
        return MODELS[name]
    try:
        spec = resnet.parse_wrn(name)
    except ValueError as error:
        raise ConfigError(f"--model: {error}") from None
    if spec is None:
        raise ConfigError(f"--model: expected one of {', '.join(model_names())}; got {name!r}")
    return ModelEntry(name, "resnet", _resnet_builder(functools.partial(
        resnet.build_wide_resnet, spec)), resnet.NORM_MODES)


def wrn_spec(name):
    """The `WideResNetSpec` of a WRN name, else None (`resnet.parse_wrn`, checked)."""
    if name in MODELS:
        return None
    try:
        return resnet.parse_wrn(name)
    except ValueError:
        return None


def check_model(config):
    """The model and its norm, activation and Dropout settings fit together (one line each)."""
    entry = model_entry(config.model)
    if config.norm not in entry.norms:
        raise ConfigError(f"--norm: expected one of {', '.join(entry.norms)} for "
                          f"{config.model}, got {config.norm!r}")
    if config.dropout == -1 and entry.family != "efficientnet":
        raise ConfigError(f"--dropout: expected a rate in [0, 1) for {config.model} (-1, the "
                          f"reference rate, is EfficientNet's), got {config.dropout!r}")
    return entry


def native_image_size(config, dataset_spec):
    """The training resolution: --image_size, else the model's own on ImageNet-like data
    (large or varying images, trained with random-resized crops), else the data's."""
    if config.image_size:
        return config.image_size
    native = model_entry(config.model).native_size
    if native and dataset_spec.augment == "goyal":
        return native
    return dataset_spec.image_size


def build(name, *, num_classes, input_shape=None, **kwargs):
    """The model `name` of the table (`resnet50`, `wrn28_10`, `efficientnet_b0`, ...), built with
    the family builder's keyword arguments (`norm`, `activation`, `dropout`, `survival_prob`,
    `skipinit_gain`, `revision`, `seed`, penalties by name such as `embedding_l2=0.1`);
    `input_shape` defaults to the family's (WRN 32x32x3, ResNet 224x224x3, EfficientNet its
    resolution)."""
    if input_shape is not None:
        kwargs["input_shape"] = input_shape
    return model_entry(name).build(num_classes=num_classes, **kwargs)


def build_network(config, dataset_spec, image_size):
    """The `{"logits", "embedding"}` Keras model that `config` describes, for the data's
    channels and classes. Out of memory while building: ConfigError (one line, the size asked
    for); the preflight's estimates (`bnreg_tf.run.resources`) refuse the larger requests
    before anything is written."""
    import tensorflow as tf

    try:
        return build(config.model, num_classes=dataset_spec.num_classes,
                     input_shape=(image_size, image_size, dataset_spec.channels),
                     norm=config.norm, activation=config.activation, dropout=config.dropout,
                     survival_prob=config.survival_prob, skipinit_gain=config.skipinit_gain,
                     revision=config.model_revision, seed=config.seed, **config.penalties)
    except (MemoryError, tf.errors.ResourceExhaustedError) as error:
        raise ConfigError(f"--model={config.model}: out of memory while building it for "
                          f"{image_size}x{image_size}x{dataset_spec.channels} inputs and "
                          f"{dataset_spec.num_classes} classes ({asked_for(error)})") from None


def asked_for(error):
    """The allocation an out-of-memory error names ("a tensor of shape [3,3,640,640]")."""
    text = " ".join(str(error).split())
    found = re.search(r"(Unable to allocate [^ ]+ [^ ]+) for an array with shape (\([^)]*\))",
                      text)
    if found:
        return f"{found.group(1)} for an array of shape {found.group(2)}"
    found = re.search(r"OOM when allocating tensor with shape\s*(\[[^\]]*\])", text)
    return f"a tensor of shape {found.group(1)}" if found else text[:120]
