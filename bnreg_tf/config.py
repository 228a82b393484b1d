"""One frozen configuration per run; absl flags mirror every field (`bnreg_tf.flags`).

`validate()` rejects unknown or inconsistent values at start-up with a `ConfigError` whose one-line
message names the flag and what it expects; the binaries turn it into exit status 2.
"""
import dataclasses
import json
import math

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
COMPILATION = ("auto", "xla", "graph")
SCHEDULES = ("constant", "cosine", "goyal", "efficientnet")
OPTIMIZERS = ("sgd", "rmsprop_reference")
AUGMENTATIONS = ("auto", "none", "crop", "crop_flip", "goyal", "randaugment")
WEIGHT_DECAY_EXCLUDE = ("none", "batchnorm", "batchnorm_and_bias")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
ACTIVATIONS = ("relu", "swish")


class ConfigError(ValueError):
    """A bad flag or config value; the message is one line naming the flag."""


def _field(default, text):
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on. Defaults are the `digits` preset's."""

    # Model
    model: str = _field("wrn10_1", "wrn<depth>_<width>, resnet18..152, or efficientnet_b0..b8/l2")
    norm: str = _field("batchnorm", "batchnorm, fixup, fixup_standardize, single_bn, fixup_single_bn, none")
    activation: str = _field("relu", "relu or swish (ResNet/WRN; EfficientNet is always swish)")
    dropout: float = _field(0.0, "Dropout rate on the embedding; -1 = EfficientNet's reference rate")
    survival_prob: float = _field(0.8, "EfficientNet drop-connect keep probability of the last block")
    standardization_kl: float = _field(0.0, "KL standardization coefficient (with --norm=fixup_standardize)")
    embedding_l2: float = _field(0.0, "Embedding L2 coefficient")
    functional_l2: float = _field(0.0, "Functional L2 coefficient")
    # Data
    dataset: str = _field("digits", "digits, cifar10, svhn_cropped or imagenet2012")
    data_dir: str = _field("", "TFDS data dir (ImageNet's manual files go in <data_dir>/downloads/manual)")
    download: bool = _field(False, "Let TFDS download and prepare cifar10/svhn_cropped (needs network)")
    holdout: bool = _field(False, "Train without the paper's validation holdout and evaluate on it")
    image_size: int = _field(0, "Training resolution; 0 = the dataset's (or EfficientNet's) native size")
    augment: str = _field("auto", "auto, none, crop, crop_flip, goyal or randaugment")
    randaugment_layers: int = _field(2, "RandAugment N")
    randaugment_magnitude: float = _field(10.0, "RandAugment M")
    # Optimization
    optimizer: str = _field("sgd", "sgd (momentum) or rmsprop_reference (EfficientNet TF1 RMSProp)")
    learning_rate: float = _field(0.05, "Base learning rate (at --lr_reference_batch if that is set)")
    lr_reference_batch: int = _field(0, "If > 0, LR = learning_rate * batch_size / this (linear scaling)")
    schedule: str = _field("cosine", "constant, cosine, goyal or efficientnet")
    warmup_epochs: float = _field(0.0, "Linear warm-up epochs (goyal, efficientnet)")
    decay_epochs: str = _field("30,60,80", "goyal: epochs of x0.1 steps; efficientnet: period, e.g. 2.4")
    decay_rate: float = _field(0.1, "Multiplier at each decay (goyal 0.1, efficientnet 0.97)")
    momentum: float = _field(0.9, "SGD / RMSProp momentum")
    nesterov: bool = _field(False, "Nesterov momentum (sgd)")
    weight_decay: float = _field(0.0, "L2 weight decay, added as wd * sum 1/2 ||v||^2")
    weight_decay_exclude: str = _field("none", "none, batchnorm or batchnorm_and_bias")
    fixup_scalar_lr: float = _field(1.0, "LR multiplier of Fixup scalars (reference: 0.1)")
    label_smoothing: float = _field(0.0, "Label smoothing of the cross-entropy")
    ema_decay: float = _field(0.0, "Weight average decay incl. BN statistics (0 = off; rmsprop_reference)")
    # Schedule of the run
    epochs: int = _field(15, "Training epochs")
    steps_per_epoch: int = _field(0, "0 = one pass over the training split")
    batch_size: int = _field(64, "Global batch size (split evenly over replicas)")
    eval_batch_size: int = _field(256, "Global evaluation batch size")
    # Execution
    precision: str = _field("auto", "auto, float32, mixed_bfloat16 or mixed_float16")
    compilation: str = _field("auto", "auto (per device), xla or graph")
    strategy: str = _field("default", "default, one_device, mirrored, multi_worker or tpu")
    tpu: str = _field("", "TPU address for --strategy=tpu ('' = local)")
    virtual_cpus: int = _field(0, "Split the CPU into N logical devices (try --strategy=mirrored "
                                  "on a CPU machine); 0 = as is")
    deterministic: bool = _field(False, "Enable TF deterministic ops")
    seed: int = _field(0, "Seed of init, data order, augmentation and dropout")
    model_dir: str = _field("", "Where checkpoints, logs, config.json and the export go")
    checkpoint_steps: int = _field(0, "Also checkpoint every N steps (0 = every epoch only)")
    norm_probe_size: int = _field(256, "Images in the fixed NormMonitor probe batch")
    export: bool = _field(True, "Export a SavedModel to <model_dir>/export at the end")
    early_stopping: bool = _field(False, "Keep the checkpoint of the best holdout accuracy and "
                                         "evaluate and export that one (needs --holdout)")

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"config.json has unknown fields {unknown}")
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @property
    def decay_boundaries(self):
        return [float(v) for v in self.decay_epochs.split(",") if v.strip()]

    @property
    def family(self):
        if self.model.startswith("efficientnet_"):
            return "efficientnet"
        return "resnet"


def _require(condition, flag, expected, got):
    if not condition:
        raise ConfigError(f"--{flag}: expected {expected}, got {got!r}")


def _finite_nonnegative(config, name):
    value = getattr(config, name)
    _require(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, name,
             "a finite number >= 0", value)


def validate(config):
    """Raises ConfigError naming the first bad flag; returns the config when it is consistent."""
    from bnreg_tf.data.catalog import DATASETS
    from bnreg_tf.models import check_model_name

    try:
        check_model_name(config.model)
    except ValueError as error:
        raise ConfigError(f"--model: {error}") from None
    from resnet import NORM_MODES

    _require(config.norm in NORM_MODES, "norm", f"one of {', '.join(NORM_MODES)}", config.norm)
    if config.family == "efficientnet":
        _require(config.norm == "batchnorm", "norm", "batchnorm for EfficientNet", config.norm)
    _require(config.activation in ACTIVATIONS, "activation", " or ".join(ACTIVATIONS),
             config.activation)
    _require(config.dataset in DATASETS, "dataset", f"one of {', '.join(DATASETS)}", config.dataset)
    for name in ("standardization_kl", "embedding_l2", "functional_l2", "weight_decay",
                 "label_smoothing", "learning_rate", "warmup_epochs", "decay_rate", "momentum",
                 "ema_decay", "randaugment_magnitude"):
        _finite_nonnegative(config, name)
    _require(config.dropout == -1 or 0 <= config.dropout < 1, "dropout", "a rate in [0, 1) or -1",
             config.dropout)
    _require(config.dropout != -1 or config.family == "efficientnet", "dropout",
             "-1 (reference rate) only with EfficientNet", config.dropout)
    _require(0 < config.survival_prob <= 1, "survival_prob", "a probability in (0, 1]",
             config.survival_prob)
    _require(config.learning_rate > 0, "learning_rate", "a number > 0", config.learning_rate)
    _require(config.label_smoothing < 1, "label_smoothing", "a value in [0, 1)",
             config.label_smoothing)
    _require(config.momentum < 1, "momentum", "a value in [0, 1)", config.momentum)
    _require(config.ema_decay < 1, "ema_decay", "a value in [0, 1)", config.ema_decay)
    _require(config.ema_decay == 0 or config.optimizer == "rmsprop_reference", "ema_decay",
             "0 unless --optimizer=rmsprop_reference", config.ema_decay)
    _require(config.standardization_kl == 0 or config.norm in ("fixup_standardize", "none"),
             "standardization_kl", "0 unless --norm=fixup_standardize (the paper's KL variant)",
             config.standardization_kl)
    _require(config.fixup_scalar_lr > 0 and math.isfinite(config.fixup_scalar_lr),
             "fixup_scalar_lr", "a number > 0", config.fixup_scalar_lr)
    for name, choices in (("precision", PRECISIONS), ("compilation", COMPILATION),
                          ("schedule", SCHEDULES), ("optimizer", OPTIMIZERS),
                          ("augment", AUGMENTATIONS), ("strategy", STRATEGIES),
                          ("weight_decay_exclude", WEIGHT_DECAY_EXCLUDE)):
        _require(getattr(config, name) in choices, name, f"one of {', '.join(choices)}",
                 getattr(config, name))
    for name in ("epochs", "batch_size", "eval_batch_size", "norm_probe_size",
                 "randaugment_layers"):
        _require(getattr(config, name) >= 1, name, "an integer >= 1", getattr(config, name))
    for name in ("steps_per_epoch", "checkpoint_steps", "image_size", "lr_reference_batch",
                 "virtual_cpus"):
        _require(getattr(config, name) >= 0, name, "an integer >= 0", getattr(config, name))
    try:
        boundaries = config.decay_boundaries
    except ValueError:
        raise ConfigError(f"--decay_epochs: expected comma-separated numbers, got "
                          f"{config.decay_epochs!r}") from None
    if config.schedule == "goyal":
        _require(boundaries == sorted(boundaries) and all(b > 0 for b in boundaries),
                 "decay_epochs", "increasing positive epochs for the goyal schedule",
                 config.decay_epochs)
    if config.schedule == "efficientnet":
        _require(len(boundaries) == 1 and boundaries[0] > 0, "decay_epochs",
                 "one positive decay period (e.g. 2.4) for the efficientnet schedule",
                 config.decay_epochs)
    _require(config.augment != "randaugment" or DATASETS[config.dataset].channels == 3,
             "augment", "an RGB dataset for randaugment", config.dataset)
    _require(isinstance(config.seed, int) and 0 <= config.seed < 2 ** 32, "seed",
             "an integer in [0, 2^32)", config.seed)
    _require(not config.early_stopping or config.holdout, "early_stopping",
             "--holdout too (the best epoch is chosen on the holdout, never on the test split)",
             config.early_stopping)
    _require(bool(config.model_dir), "model_dir", "a directory path", config.model_dir)
    return config
