"""One frozen configuration per run; absl flags mirror every field (`bnreg_tf.run.flags`).

A `RunConfig` checks itself when it is made (`bnreg_tf.run.config_checks.validate`, from
`__post_init__`): an unknown or inconsistent value raises a `ConfigError` whose one-line message
names the flag and what it expects; the binaries turn it into exit status 2. The checks need no file, data, model or
TensorFlow: what does (the model name, the data, `--init_from`, the model dir) is checked once
per run by `bnreg_tf.run.preflight`. The penalties' fields come from the penalty table
(`bnreg_tf.nn.PENALTIES`): one float field per row, with the row's help text.
"""
import dataclasses
import json

from bnreg_tf.nn import revisions
from bnreg_tf.nn.penalty_table import PENALTIES
from bnreg_tf.run.config_checks import ConfigError, validate

# What a config.json written before a field existed implies, where it is not the field's
# default: what that run computed. Without `revision` it is revision 1 (`bnreg_tf.nn.revisions`).
LEGACY_VALUES = {"revision": 1}
# The survival_prob every run had by default before `revision` existed (ResNets ignored it; it
# was EfficientNet's reference value): such a config.json reads it as today's default, -1.
LEGACY_SURVIVAL_PROB = 0.8


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
    survival_prob: float = _field(-1.0, "Stochastic depth: keep probability of the last "
                                  "residual block [probability] (block i of n keeps 1 - (1 - p) "
                                  "i / n); -1 = the model's reference: 0.8 for EfficientNet "
                                  "(drop-connect), none for ResNets/WRNs (the NF-ResNet "
                                  "reference's rate 0.1 is 0.9)", "model")
    skipinit_gain: float = _field(0.0, "Initial value of the skip gains of --norm=skipinit or "
                                  "nf_resnet [scalar] (the reference's 0: every block starts as "
                                  "the identity)", "model")
    revision: int = _field(0, "What bnreg computes [revision]: 2 = issue 25's reference-exact "
                           "normalizer-free models, AGC and weight-decay sets, ImageNet from "
                           "JPEG bytes; 1 = before; 0 = the newest for a new run, the run dir's "
                           "own when it resumes (bnreg_tf/nn/revisions.py)", "model")
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
    eval_crop: str = _field(
        "crop_fraction", "EfficientNet eval centre crop [choice]: crop_fraction (0.875 of the "
        "shorter side at every size, the reference since Nov. 2021) or crop_padding (size / "
        "(size + 32), the reference code of the paper's time: 0.955 at 672 px)", "data")
    # Optimisation
    optimizer: str = _field("sgd", "Optimizer [choice]: sgd (momentum) or rmsprop_reference "
                            "(EfficientNet TF1 RMSProp)", "optimisation")
    learning_rate: float = _field(0.05, "Peak learning rate [per step] (at --lr_reference_batch "
                                  "images if that is set)", "optimisation")
    lr_reference_batch: int = _field(0, "If > 0, LR = learning_rate * batch_size / this "
                                     "[images] (linear scaling)", "optimisation")
    schedule: str = _field("cosine", "LR schedule [choice]: constant, cosine, goyal or "
                           "efficientnet", "optimisation")
    warmup_epochs: float = _field(0.0, "Linear warm-up [epochs] (goyal, efficientnet; cosine "
                                  "from revision 2)", "optimisation")
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
        if "revision" not in values and values.get("survival_prob") == LEGACY_SURVIVAL_PROB:
            values["survival_prob"] = -1.0   # the same computation (`LEGACY_SURVIVAL_PROB`)
        return cls(**{**LEGACY_VALUES, **values})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @property
    def decay_boundaries(self):
        return [float(v) for v in self.decay_epochs.split(",") if v.strip()]

    @property
    def model_revision(self):
        """The revision the run computes (`revision`, 0 read as the newest)."""
        return self.revision or revisions.LATEST

    @property
    def penalties(self):
        """`{name: coefficient}` of every penalty of `bnreg_tf.nn.PENALTIES`."""
        return {name: getattr(self, name) for name in PENALTIES}
