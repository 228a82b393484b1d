"""The checks a `RunConfig` makes on itself when it is made (`validate`), and the choices and
ranges they hold its fields to.

Pure: no file, data, model or TensorFlow is touched, so a config can be checked anywhere (a
study checks every run's config before the first one starts). Each failure is a `ConfigError`
whose one-line message names the flag, what it expects and what it got; the binaries turn it
into exit status 2. What needs files or models is `bnreg_tf.run.preflight`'s.
"""
import math

from bnreg_tf.nn import revisions
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
EVAL_CROPS = ("crop_fraction", "crop_padding")  # efficientnet.input_pipeline.EVAL_CROPS
SKIP_GAIN_NORMS = ("skipinit", "nf_resnet")
FLOAT32_MAX = 3.4028234663852886e38   # every coefficient becomes a float32 tensor
MAX_RANDAUGMENT_MAGNITUDE = 30.0      # the flag's documented range; the paper's B8: 28 (§5.12)
MIN_IMAGE_SIZE = 8                    # px: the smallest images bnreg trains on (8x8 digits)



class ConfigError(ValueError):
    """A bad flag or config value; the message is one line naming the flag."""


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
                          ("eval_crop", EVAL_CROPS),
                          ("weight_decay_exclude", WEIGHT_DECAY_EXCLUDE)):
        _require(getattr(config, name) in choices, name, f"one of {', '.join(choices)}",
                 getattr(config, name))
    for name in ("model", "norm", "dataset"):
        _require(isinstance(getattr(config, name), str) and getattr(config, name), name,
                 f"a {name} name", getattr(config, name))
    _require(config.revision in (0, *revisions.REVISIONS), "revision",
             f"0 (the newest) or one of {', '.join(map(str, revisions.REVISIONS))}",
             config.revision)


def _check_numbers(config):
    for name in (*PENALTIES, "weight_decay", "label_smoothing", "learning_rate",
                 "warmup_epochs", "decay_rate", "momentum", "ema_decay",
                 "randaugment_magnitude", "agc"):
        _finite_nonnegative(config, name)
    _require(config.dropout == -1 or 0 <= config.dropout < 1, "dropout", "a rate in [0, 1) or -1",
             config.dropout)
    _require(config.survival_prob == -1 or 0 < config.survival_prob <= 1, "survival_prob",
             "a probability in (0, 1] or -1", config.survival_prob)
    _require(math.isfinite(config.skipinit_gain), "skipinit_gain", "a finite number",
             config.skipinit_gain)
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
    _require(not config.skipinit_gain or config.norm in SKIP_GAIN_NORMS, "skipinit_gain",
             f"0 unless --norm={' or --norm='.join(SKIP_GAIN_NORMS)}", config.skipinit_gain)
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
