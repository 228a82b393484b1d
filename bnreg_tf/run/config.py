"""One frozen configuration per run; absl flags mirror every field (`bnreg_tf.run.flags`).

A `RunConfig` checks itself when it is made (`validate`, from `__post_init__`): an unknown or
inconsistent value raises a `ConfigError` whose one-line message names the flag and what it
expects; the binaries turn it into exit status 2. The checks need no file, data, model or
TensorFlow: what does (the model name, the data, `--init_from`, the model dir) is checked once
per run by `bnreg_tf.run.preflight`. The penalties' fields come from the penalty table
(`bnreg_tf.nn.PENALTIES`): one float field per row, with the row's help text.
"""
import dataclasses
import json
import math

from bnreg_tf.nn.penalty_table import PENALTIES

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
COMPILATION = ("auto", "xla", "graph")
SCHEDULES = ("constant", "cosine", "goyal", "efficientnet")
OPTIMIZERS = ("sgd", "rmsprop_reference")
AUGMENTATIONS = ("auto", "none", "crop", "crop_flip", "goyal", "randaugment")
WEIGHT_DECAY_EXCLUDE = ("none", "batchnorm", "batchnorm_and_bias")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
ACTIVATIONS = ("relu", "swish")
RANDAUGMENT_VARIANTS = ("reference", "corrected")  # efficientnet.augment_ops.VARIANTS
FLOAT32_MAX = 3.4028234663852886e38   # every coefficient becomes a float32 tensor
MAX_RANDAUGMENT_MAGNITUDE = 30.0      # the flag's documented range; the paper's B8: 28 (§5.12)
MIN_IMAGE_SIZE = 8                    # px: the smallest images bnreg trains on (8x8 digits)


class ConfigError(ValueError):
    """A bad flag or config value; the message is one line naming the flag."""


def _field(default, text, group):
    """A RunConfig field; `text` says what it is and its unit in brackets, `group` where
    `--help` lists it (data, model, penalties, optimisation, execution, output)."""
    return dataclasses.field(default=default, metadata={"help": text, "group": group})


# One coefficient per penalty of the table, 0 = off (they come first in `--help`'s group).
_PenaltyFields = dataclasses.make_dataclass(
    "_PenaltyFields", [(row.name, float, _field(0.0, row.help, "penalties"))
                       for row in PENALTIES.values()], frozen=True)


@dataclasses.dataclass(frozen=True)
class RunConfig(_PenaltyFields):
    """Everything one training run depends on. Defaults are the `digits` preset's. The penalty
    coefficients (`embedding_l2`, `functional_l2`, `standardization_kl`, ...) are fields too,
    one per row of `bnreg_tf.nn.PENALTIES`."""

    # Model
    model: str = _field("wrn10_1", "Network [name] (the model table, bnreg_tf.run.models)",
                        "model")
    norm: str = _field("batchnorm", "Normalisation [choice]: batchnorm, fixup, "
                       "fixup_standardize, single_bn, fixup_single_bn, none, skipinit (SkipInit: "
                       "zero-initialised branch gains) or nf_resnet (NF-ResNet: scaled weight "
                       "standardization, x + 0.2 f(x / beta))", "model")
    activation: str = _field("relu", "Activation [choice]: relu or swish (ResNet/WRN; "
                             "EfficientNet is always swish)", "model")
    survival_prob: float = _field(0.8, "EfficientNet drop-connect keep probability of the last "
                                  "block [probability]", "model")
    init_from: str = _field("", "Start from the network weights of another run's latest "
                            "checkpoint [path: its --model_dir] (fresh optimizer; '' = random "
                            "init)", "model")
    # Penalties
    dropout: float = _field(0.0, "Dropout rate on the embedding [probability]; -1 = "
                            "EfficientNet's reference rate", "penalties")
    weight_decay: float = _field(0.0, "L2 weight decay [loss weight], added as wd * sum 1/2 "
                                 "||v||^2", "penalties")
    weight_decay_exclude: str = _field("none", "Variables without weight decay [choice]: none, "
                                       "batchnorm or batchnorm_and_bias", "penalties")
    label_smoothing: float = _field(0.0, "Label smoothing of the cross-entropy [probability "
                                    "mass]", "penalties")
    # Data
    dataset: str = _field("digits", "Dataset [name]: digits, cifar10, svhn_cropped, "
                          "imagenet2012, any TFDS image-classification name, or folder (with "
                          "--data_dir=DIR holding train/<class>/ and optionally test/<class>/)",
                          "data")
    data_dir: str = _field("", "TFDS data dir, or the image folder of --dataset=folder [path] "
                           "(ImageNet's manual files go in <data_dir>/downloads/manual)", "data")
    download: bool = _field(False, "Let TFDS download and prepare the dataset [bool] (needs "
                            "network)", "data")
    holdout: bool = _field(True, "Hold out a validation set [bool]: train on the rest, validate "
                           "on it each epoch; --noholdout trains on the whole training split "
                           "and reports only the test split", "data")
    holdout_examples: int = _field(0, "Holdout size [images] for datasets without a paper "
                                   "holdout; 0 = --holdout_fraction", "data")
    holdout_fraction: float = _field(0.1, "Holdout size [fraction of the training split] for "
                                     "datasets without a paper holdout (also the test share "
                                     "carved off when a dataset has no test split)", "data")
    skip_bad_images: bool = _field(False, "--dataset=folder: leave out image files that cannot "
                                   "be read (corrupt, truncated, not PNG/JPEG, a second link to "
                                   "one file) instead of refusing them [bool]; they are counted "
                                   "in the start-up summary and results.json", "data")
    drop_empty_classes: bool = _field(False, "--dataset=folder: leave out class folders of "
                                      "train/ that hold no image instead of refusing them "
                                      "[bool]; the summary names them", "data")
    image_size: int = _field(0, "Training resolution [px]; 0 = the dataset's (or EfficientNet's) "
                             "native size", "data")
    augment: str = _field("auto", "Augmentation [choice]: auto, none, crop, crop_flip, goyal or "
                          "randaugment", "data")
    randaugment_layers: int = _field(2, "RandAugment N [ops per image]", "data")
    randaugment_magnitude: float = _field(10.0, "RandAugment M [magnitude, 0..30]", "data")
    randaugment_variant: str = _field(
        "reference", "RandAugment arithmetic [choice]: reference (the EfficientNet TPU code's: "
        "uint8 wrap of Solarize/Posterize, pixel-count Contrast) or corrected (PIL's definitions, "
        "saturating levels)", "data")
    # Optimisation
    optimizer: str = _field("sgd", "Optimizer [choice]: sgd (momentum) or rmsprop_reference "
                            "(EfficientNet TF1 RMSProp)", "optimisation")
    learning_rate: float = _field(0.05, "Peak learning rate [per step] (at --lr_reference_batch "
                                  "images if that is set)", "optimisation")
    lr_reference_batch: int = _field(0, "If > 0, LR = learning_rate * batch_size / this "
                                     "[images] (linear scaling)", "optimisation")
    schedule: str = _field("cosine", "LR schedule [choice]: constant, cosine, goyal or "
                           "efficientnet", "optimisation")
    warmup_epochs: float = _field(0.0, "Linear warm-up [epochs] (goyal, efficientnet)",
                                  "optimisation")
    decay_epochs: str = _field("30,60,80", "goyal: x0.1 steps at these [epochs]; efficientnet: "
                               "the decay period [epochs], e.g. 2.4", "optimisation")
    decay_rate: float = _field(0.1, "LR multiplier at each decay [factor] (goyal 0.1, "
                               "efficientnet 0.97)", "optimisation")
    momentum: float = _field(0.9, "SGD / RMSProp momentum [factor, 0 <= m < 1]", "optimisation")
    nesterov: bool = _field(False, "Nesterov momentum (sgd) [bool]", "optimisation")
    fixup_scalar_lr: float = _field(1.0, "LR multiplier of Fixup scalars [factor] (reference: "
                                    "0.1)", "optimisation")
    agc: float = _field(0.0, "Adaptive gradient clipping of every variable but the classifier's "
                        "[max ratio of a unit's gradient norm to its weight norm] (NFNets; 0 = "
                        "off; the paper uses 0.01 at batch 4096, larger for smaller batches)",
                        "optimisation")
    ema_decay: float = _field(0.0, "Weight average decay incl. BN statistics [factor per step] "
                              "(0 = off; rmsprop_reference)", "optimisation")
    epochs: int = _field(15, "Training length [epochs]", "optimisation")
    steps_per_epoch: int = _field(0, "Epoch length [steps]; 0 = one pass over the training "
                                  "split", "optimisation")
    batch_size: int = _field(64, "Global training batch [images] (split evenly over replicas)",
                             "optimisation")
    # Execution
    eval_batch_size: int = _field(256, "Global evaluation batch [images]", "execution")
    precision: str = _field("auto", "Precision [choice]: auto, float32, mixed_bfloat16 or "
                            "mixed_float16", "execution")
    compilation: str = _field("auto", "Compilation [choice]: auto (per device), xla or graph",
                              "execution")
    strategy: str = _field("default", "Distribution [choice]: default, one_device, mirrored, "
                           "multi_worker or tpu", "execution")
    tpu: str = _field("", "TPU address for --strategy=tpu [address] ('' = local)", "execution")
    worker_timeout: int = _field(600, "How long --strategy=multi_worker waits for every task "
                                 "of TF_CONFIG to come up before it gives up [seconds]",
                                 "execution")
    virtual_cpus: int = _field(0, "Split the CPU into N logical devices [devices] (try "
                               "--strategy=mirrored on a CPU machine); 0 = as is", "execution")
    deterministic: bool = _field(False, "Enable TF deterministic ops [bool]", "execution")
    seed: int = _field(0, "Seed of init, data order, augmentation and dropout [integer]",
                       "execution")
    # Output
    model_dir: str = _field("", "Where checkpoints, logs, config.json and the export go [path]",
                            "output")
    checkpoint_steps: int = _field(0, "Also checkpoint every N [steps] (0 = every epoch only)",
                                   "output")
    norm_probe_size: int = _field(256, "Fixed NormMonitor probe batch [images]", "output")
    export: bool = _field(True, "Export a SavedModel to <model_dir>/export at the end [bool]",
                          "output")
    early_stopping: bool = _field(False, "Keep the checkpoint of the best holdout accuracy and "
                                  "evaluate and export that one [bool] (needs --holdout)",
                                  "output")

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def __post_init__(self):
        validate(self)

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ConfigError("config.json is not a mapping of fields")
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
    def penalties(self):
        """`{name: coefficient}` of every penalty of `bnreg_tf.nn.PENALTIES`."""
        return {name: getattr(self, name) for name in PENALTIES}


def _require(condition, flag, expected, got):
    if not condition:
        raise ConfigError(f"--{flag}: expected {expected}, got {got!r}")


def _finite_nonnegative(config, name):
    value = getattr(config, name)
    _require(isinstance(value, (int, float)) and math.isfinite(value) and
             0 <= value <= FLOAT32_MAX, name, "a finite number >= 0 (at most 3.4e38, float32)",
             value)


def _check_choices(config):
    for name, choices in (("precision", PRECISIONS), ("compilation", COMPILATION),
                          ("schedule", SCHEDULES), ("optimizer", OPTIMIZERS),
                          ("augment", AUGMENTATIONS), ("strategy", STRATEGIES),
                          ("activation", ACTIVATIONS),
                          ("randaugment_variant", RANDAUGMENT_VARIANTS),
                          ("weight_decay_exclude", WEIGHT_DECAY_EXCLUDE)):
        _require(getattr(config, name) in choices, name, f"one of {', '.join(choices)}",
                 getattr(config, name))
    for name in ("model", "norm", "dataset"):
        _require(isinstance(getattr(config, name), str) and getattr(config, name), name,
                 f"a {name} name", getattr(config, name))


def _check_numbers(config):
    for name in (*PENALTIES, "weight_decay", "label_smoothing", "learning_rate",
                 "warmup_epochs", "decay_rate", "momentum", "ema_decay",
                 "randaugment_magnitude", "agc"):
        _finite_nonnegative(config, name)
    _require(config.dropout == -1 or 0 <= config.dropout < 1, "dropout", "a rate in [0, 1) or -1",
             config.dropout)
    _require(0 < config.survival_prob <= 1, "survival_prob", "a probability in (0, 1]",
             config.survival_prob)
    _require(config.learning_rate > 0, "learning_rate", "a number > 0", config.learning_rate)
    if config.lr_reference_batch:
        scaled = config.learning_rate * config.batch_size / config.lr_reference_batch
        _require(scaled <= FLOAT32_MAX, "learning_rate", "a rate that stays below 3.4e38 "
                 "(float32) once scaled by --batch_size/--lr_reference_batch", config.learning_rate)
    _require(config.randaugment_magnitude <= MAX_RANDAUGMENT_MAGNITUDE, "randaugment_magnitude",
             "a magnitude in [0, 30] (the paper's EfficientNet-B8: 28)",
             config.randaugment_magnitude)
    for name in ("label_smoothing", "momentum", "ema_decay"):
        _require(getattr(config, name) < 1, name, "a value in [0, 1)", getattr(config, name))
    _require(config.fixup_scalar_lr > 0 and math.isfinite(config.fixup_scalar_lr),
             "fixup_scalar_lr", "a number > 0", config.fixup_scalar_lr)
    for name in ("epochs", "batch_size", "eval_batch_size", "norm_probe_size",
                 "randaugment_layers"):
        _require(isinstance(getattr(config, name), int) and getattr(config, name) >= 1, name,
                 "an integer >= 1", getattr(config, name))
    for name in ("steps_per_epoch", "checkpoint_steps", "image_size", "lr_reference_batch",
                 "virtual_cpus", "holdout_examples"):
        _require(isinstance(getattr(config, name), int) and getattr(config, name) >= 0, name,
                 "an integer >= 0", getattr(config, name))
    _require(0 < config.holdout_fraction < 1, "holdout_fraction", "a fraction in (0, 1)",
             config.holdout_fraction)
    _require(isinstance(config.seed, int) and 0 <= config.seed < 2 ** 32, "seed",
             "an integer in [0, 2^32)", config.seed)
    _require(config.image_size == 0 or config.image_size >= MIN_IMAGE_SIZE, "image_size",
             f"0 (the data's or model's size) or at least {MIN_IMAGE_SIZE} px", config.image_size)
    _require(isinstance(config.worker_timeout, int) and config.worker_timeout >= 1,
             "worker_timeout", "an integer >= 1 [seconds]", config.worker_timeout)


def _check_schedule(config):
    try:
        boundaries = config.decay_boundaries
    except (ValueError, AttributeError):
        raise ConfigError(f"--decay_epochs: expected comma-separated numbers, got "
                          f"{config.decay_epochs!r}") from None
    _require(all(math.isfinite(b) for b in boundaries), "decay_epochs", "finite epochs",
             config.decay_epochs)
    if config.schedule == "goyal":
        _require(boundaries == sorted(boundaries) and all(b > 0 for b in boundaries),
                 "decay_epochs", "increasing positive epochs for the goyal schedule",
                 config.decay_epochs)
    if config.schedule == "efficientnet":
        _require(len(boundaries) == 1 and boundaries[0] > 0, "decay_epochs",
                 "one positive decay period (e.g. 2.4) for the efficientnet schedule",
                 config.decay_epochs)


def _check_combinations(config):
    _require(config.ema_decay == 0 or config.optimizer == "rmsprop_reference", "ema_decay",
             "0 unless --optimizer=rmsprop_reference", config.ema_decay)
    for row in PENALTIES.values():
        _require(not getattr(config, row.name) or not row.norms or config.norm in row.norms,
                 row.name, f"0 unless --norm={' or --norm='.join(row.norms)}",
                 getattr(config, row.name))
    _require(not config.early_stopping or config.holdout, "early_stopping",
             "--holdout too (the best epoch is chosen on the holdout, never on the test split)",
             config.early_stopping)
    _require(not (config.dataset == "digits" and config.data_dir), "data_dir",
             "no --data_dir with --dataset=digits (scikit-learn bundles it; nothing is read "
             "from a data dir)", config.data_dir)
    for name in ("skip_bad_images", "drop_empty_classes"):
        _require(not getattr(config, name) or config.dataset == "folder", name,
                 "--dataset=folder (it applies to image folders only)", getattr(config, name))


def validate(config):
    """Raises ConfigError naming the first bad flag; returns the config when it is consistent.

    Pure: no file, data, model or TensorFlow is touched (`RunConfig` calls it when it is made).
    """
    _check_choices(config)
    _check_numbers(config)
    _check_schedule(config)
    _check_combinations(config)
    return config
