"""Every experiment as a documented function: the training presets (`--preset` of `bnreg-train`
and `run_imagenet.py`) and, beside them, the study presets (`--preset` of `bnreg-study`).

Each function's docstring gives the command, what it reproduces, the paper's number and the
expected cost; flags override any field. Where the paper and docs/references.md give no value,
the value is the standard one of the recipe the paper cites, marked "assumed".
"""
import dataclasses

from bnreg_tf.run.config import ConfigError, RunConfig


def digits():
    """The offline default: WRN-10-1 on scikit-learn's 8x8 digits, 15 epochs, cosine, batch 64.

    `bnreg-train --model_dir=runs/digits`. Reproduces nothing of the paper's numbers: it is the
    real-data run that fits a laptop; about 30 s on 2 CPU cores.
    """
    return RunConfig(model="wrn10_1", dataset="digits", epochs=15, batch_size=64,
                     learning_rate=0.05, schedule="cosine", momentum=0.9, augment="auto")


def wrn28_10_cifar10():
    """WRN-28-10 on CIFAR-10 (paper section 4.1, Table 1; docs/references.md §3.1): 200 epochs,
    cosine, batch 128, flips + pad-and-crop, Swish (rho from 0), LR 0.1 (the paper's best with
    BatchNorm; 0.2 with FL2). Weight decay 5e-4 and Nesterov: assumed (WRN's recipe).

    `bnreg-train --preset=wrn28_10_cifar10 --data_dir=$TFDS --model_dir=runs/c10 --norm=fixup
    --embedding_l2=0.1`. The paper: EL2/FL2 about 0.6 points above Fixup (§3.7). Cost: 200 epochs
    of 390 steps of a 36.5M-parameter network; not measured here (no GPU with TensorFlow).
    """
    return RunConfig(model="wrn28_10", dataset="cifar10", activation="swish", epochs=200,
                     batch_size=128, learning_rate=0.1, schedule="cosine", momentum=0.9,
                     nesterov=True, weight_decay=5e-4, augment="crop_flip", eval_batch_size=500)


def wrn28_10_svhn():
    """WRN-28-10 on SVHN core (73,257 training images, no "extra"; docs/references.md §3.2): the
    CIFAR-10 recipe without flips (digits are not mirror-symmetric: assumed).

    `bnreg-train --preset=wrn28_10_svhn --data_dir=$TFDS --model_dir=runs/svhn`. The paper:
    BatchNorm 96.9, Fixup 95.5, EL2 or FL2 96.5 (§3.7). Cost: 200 epochs of 572 steps; not
    measured here.
    """
    return dataclasses.replace(wrn28_10_cifar10(), dataset="svhn_cropped", augment="crop")


def resnet50_imagenet():
    """ResNet-50 on ImageNet, Goyal et al. (docs/references.md §3.3): 90 epochs, batch 512, LR
    0.1 x batch / 256, 5 warm-up epochs, x0.1 at 30/60/80, momentum 0.9, weight decay 1e-4 not
    on BatchNorm or biases, float32, random-resized crop + flip.

    `python run_imagenet.py --preset=resnet50_imagenet --data_dir=$TFDS --model_dir=runs/r50
    --norm=fixup --embedding_l2=...`. The paper: Fixup + EL2/FL2 about 2.9 points above Fixup;
    single BN 73.8, single BN + Fixup 74.9 (§3.7). Cost: 90 epochs of 2,502 steps; not
    measured here.
    """
    return RunConfig(model="resnet50", dataset="imagenet2012", epochs=90, batch_size=512,
                     learning_rate=0.1, lr_reference_batch=256, schedule="goyal",
                     warmup_epochs=5, decay_epochs="30,60,80", decay_rate=0.1, momentum=0.9,
                     weight_decay=1e-4, weight_decay_exclude="batchnorm_and_bias",
                     augment="goyal", precision="float32", eval_batch_size=500)


def nf_resnet50_imagenet():
    """NF-ResNet-50 on ImageNet as google-deepmind/deepmind-research `nfnets/experiment.py` trains
    its ResNets (docs/references.md §6): 90 epochs, batch 1024, LR 0.1 x batch / 256 with 5
    warm-up epochs then cosine to 0, SGD with Nesterov momentum 0.9, weight decay 1e-4 except on
    gains and biases, label smoothing 0.1, no Dropout, and the reference's stochastic depth
    (`stochdepth_rate=0.1`: `--survival_prob=0.9`). `--norm=skipinit` is the reference's SkipInit
    ResNet-50 (`nfnets/skipinit_resnet.py`, the same defaults). Data: bnreg's Goyal crop (the
    reference crops as EfficientNet does and resizes with TF2's bicubic; assumed close enough).

    `python run_imagenet.py --preset=nf_resnet50_imagenet --data_dir=$TFDS --model_dir=runs/nf50
    [--embedding_l2=...]`. Brock et al. 2021a: NF-ResNet-50 roughly matches BatchNorm ResNet-50
    (§6.9). Cost: 90 epochs of 1,251 steps; not measured here.
    """
    return RunConfig(model="resnet50", norm="nf_resnet", dataset="imagenet2012", epochs=90,
                     batch_size=1024, learning_rate=0.1, lr_reference_batch=256,
                     schedule="cosine", warmup_epochs=5, momentum=0.9, nesterov=True,
                     weight_decay=1e-4, weight_decay_exclude="batchnorm_and_bias",
                     label_smoothing=0.1, survival_prob=0.9, augment="goyal",
                     precision="float32", eval_batch_size=500)


def _efficientnet_imagenet(variant, randaugment_magnitude, eval_crop):
    """The TPU reference recipe (docs/references.md §5): batch 2048, 350 epochs, RMSProp (0.9,
    0.9, 1e-3), LR 0.016 x batch / 256, 5 warm-up epochs, x0.97 every 2.4 epochs, EMA 0.9999,
    label smoothing 0.1, weight decay 1e-5 on non-BN variables, the variant's reference
    Dropout, drop-connect 0.2, and early stopping on the paper's 25,022 held-out images
    (`bnreg_tf.run.early_stopping`); RandAugment with the reference's own arithmetic; ImageNet
    read as JPEG bytes, each crop decoding its window (§5.11). `eval_crop`: the eval crop's era
    (`efficientnet.input_pipeline`)."""
    return RunConfig(
        model=f"efficientnet_{variant}", dataset="imagenet2012", holdout=True, epochs=350,
        batch_size=2048, optimizer="rmsprop_reference", learning_rate=0.016,
        lr_reference_batch=256, schedule="efficientnet", warmup_epochs=5, decay_epochs="2.4",
        decay_rate=0.97, momentum=0.9, weight_decay=1e-5, weight_decay_exclude="batchnorm",
        label_smoothing=0.1, ema_decay=0.9999, dropout=-1, survival_prob=0.8,
        augment="randaugment", randaugment_layers=2,
        randaugment_magnitude=randaugment_magnitude, randaugment_variant="reference",
        eval_crop=eval_crop, eval_batch_size=1024, early_stopping=True)


def efficientnet_b8_imagenet():
    """EfficientNet-B8 on ImageNet per the TPU reference + RandAugment N=2, M=28 (paper section
    4.3; docs/references.md §3.4, §5).

    `python run_imagenet.py --preset=efficientnet_b8_imagenet --strategy=tpu --tpu=$TPU
    --data_dir=$TFDS --model_dir=runs/b8 --dropout=0 --embedding_l2=...`. The paper: EL2/FL2
    about 0.9 points above the model without Dropout, on a par with Dropout (§3.7). Cost: 350
    epochs of 613 steps at 672 px on a TPU pod; not measured here.

    Eval crop: `crop_padding`, the reference code of the paper's time (`CROP_PADDING = 32` until
    Nov. 2021: 672 / 704 = 0.955 of the shorter side at 672 px), the crop the paper's B8 was
    evaluated with; today's reference crops 0.875 (`crop_fraction`).
    """
    return _efficientnet_imagenet("b8", randaugment_magnitude=28, eval_crop="crop_padding")


def efficientnet_b0_imagenet():
    """The B8 recipe on EfficientNet-B0 for smaller hardware; RandAugment at the reference's flag
    defaults (N=2, M=10): assumed. No paper number (the paper trains B8).

    `python run_imagenet.py --preset=efficientnet_b0_imagenet --data_dir=$TFDS
    --model_dir=runs/b0`. Cost: 350 epochs of 613 steps at 224 px; not measured here.

    Eval crop: `crop_fraction` (today's reference, 0.875); at 224 px both eras crop 224 / 256,
    the same window, and runs made before the choice existed (which cropped so) resume as they
    were.
    """
    return _efficientnet_imagenet("b0", randaugment_magnitude=10, eval_crop="crop_fraction")


PRESETS = {f.__name__: f() for f in (digits, wrn28_10_cifar10, wrn28_10_svhn, resnet50_imagenet,
                                      nf_resnet50_imagenet, efficientnet_b8_imagenet,
                                      efficientnet_b0_imagenet)}


def preset(name):
    """The training preset `name`; ConfigError (one line naming --preset) when there is none."""
    if name not in PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(PRESETS)}, got {name!r}")
    return PRESETS[name]


@dataclasses.dataclass(frozen=True)
class StudyPreset:
    """A study: the training preset, which variants and seeds, each penalty's coefficient grid,
    the learning-rate grid (empty: the training preset's), and the protocol (`holdout` or
    `paper`, `bnreg_tf.study.variants.PROTOCOLS`)."""

    training_preset: str
    variants: tuple
    seeds: tuple
    coefficients: dict       # config field -> tuple of coefficients (the grid)
    changes: dict = dataclasses.field(default_factory=dict)   # applied to the training preset
    protocol: str = "holdout"
    learning_rates: tuple = ()
    tuning_seeds: int = 1


# The paper's ablation variants (docs/references.md §2.1).
PAPER_VARIANTS = ("batchnorm", "fixup", "fixup_kl", "fixup_el2", "fixup_fl2", "single_bn",
                  "single_bn_fixup", "fixup_dropout")
# The paper's grids: EL2/FL2 0.1..1.0 in steps of 0.1, KL 1e-7..1e-5 on a log scale (section 4;
# §3.6); Dropout 0.5, the test-time rate of Table 3 (training with it: assumed).
PAPER_GRIDS = dict(standardization_kl=(1e-7, 1e-6, 1e-5),
                   embedding_l2=tuple(round(0.1 * i, 1) for i in range(1, 11)),
                   functional_l2=tuple(round(0.1 * i, 1) for i in range(1, 11)), dropout=(0.5,))


def default_study():
    """The offline study: WRN-10-1 on the digits, the paper's eight variants x 3 seeds, with a
    3-point EL2/FL2 sweep (Figure 3); 36 runs of 15 epochs.

    `bnreg-study`. The paper's Figures 2-3 in miniature (its accuracy claims need its data): the
    README's table. 6.4-8 minutes on 2 CPU cores. KL 0.01 because 0.1 diverged at this learning
    rate (loss NaN by step 4).
    """
    return StudyPreset("digits", PAPER_VARIANTS, (0, 1, 2),
                       dict(standardization_kl=(0.01,), embedding_l2=(0.05, 0.5, 5.0),
                            functional_l2=(0.05, 0.5, 5.0), dropout=(0.5,)))


def beyond_study():
    """Beyond the paper (issue 18): SkipInit, NF-ResNets and NF-ResNets with AGC beside BatchNorm,
    Fixup and Fixup + EL2, on the default study's data and budget; 27 runs.

    `bnreg-study --preset=beyond --output_dir=reports/beyond`. 4.3 minutes on 2 idle cores.
    EL2 0.05 is the default study's best EL2 on the digits; AGC 0.32 keeps NFNets' product of
    learning rate and clipping (1.6 x 0.01 at batch 4096) at the digits' learning rate 0.05, and
    1.0 did not cost accuracy in a single-seed probe (BUILD_NOTES "Issue 18").
    """
    return StudyPreset("digits", ("batchnorm", "fixup", "fixup_el2", "skipinit", "skipinit_el2",
                                  "nf_resnet", "nf_resnet_agc", "nf_resnet_el2"), (0, 1, 2),
                       dict(embedding_l2=(0.05,), agc=(0.32, 1.0)))


def paper_cifar10_study():
    """The paper's protocol on CIFAR-10 (docs/references.md §3.6): tune each variant's grid on
    the 5,000-image holdout with learning rates 0.1 and 0.2 (the two the paper names), retrain
    the choice on all 50,000 images with 10 seeds, median test accuracy and CIFAR-10-C.

    `bnreg-study --preset=paper_cifar10 --data_dir=$TFDS --output_dir=reports/cifar10`
    (`--shard=I/N` over N GPUs). The paper: EL2/FL2 about 0.6 points above Fixup. Cost: a few
    hundred WRN-28-10 trainings of 200 epochs; not measured here.
    """
    return StudyPreset("wrn28_10_cifar10", PAPER_VARIANTS, tuple(range(10)), PAPER_GRIDS,
                       protocol="paper", learning_rates=(0.1, 0.2))


def paper_svhn_study():
    """The paper's protocol on SVHN core: tuned on its 3,257-image holdout at the preset's LR 0.1
    (assumed), retrained with 10 seeds. The paper: BatchNorm 96.9, Fixup 95.5, EL2/FL2 96.5.

    `bnreg-study --preset=paper_svhn --data_dir=$TFDS --output_dir=reports/svhn`. Not measured
    here.
    """
    return StudyPreset("wrn28_10_svhn", PAPER_VARIANTS, tuple(range(10)), PAPER_GRIDS,
                       protocol="paper")


def paper_imagenet_resnet50_study():
    """The paper's ResNet-50 ablations on ImageNet (Table 2): tuned on the 25,022-image holdout,
    mean of 2 seeds. The paper: Fixup + EL2/FL2 about 2.9 points above Fixup; single BN 73.8,
    single BN + Fixup 74.9.

    `bnreg-study --preset=paper_imagenet_resnet50 --data_dir=$TFDS --output_dir=...`. Not
    measured here.
    """
    return StudyPreset("resnet50_imagenet", ("batchnorm", "fixup", "fixup_el2", "fixup_fl2",
                                             "single_bn", "single_bn_fixup"), (0, 1),
                       PAPER_GRIDS, protocol="paper")


def paper_imagenet_efficientnet_b8_study():
    """The paper's EfficientNet-B8 comparison (Table 4): no Dropout, EL2, FL2 and Dropout on the
    reference recipe, tuned on the holdout, mean of 2 seeds. The paper: EL2/FL2 about 0.9 points
    above no Dropout, on a par with Dropout.

    `bnreg-study --preset=paper_imagenet_efficientnet_b8 --strategy=tpu ...`. Not measured here.
    """
    return StudyPreset("efficientnet_b8_imagenet", ("batchnorm", "el2", "fl2", "dropout"), (0, 1),
                       PAPER_GRIDS, dict(dropout=0.0), protocol="paper")


STUDY_PRESETS = {
    "default": default_study(),
    "beyond": beyond_study(),
    "paper_cifar10": paper_cifar10_study(),
    "paper_svhn": paper_svhn_study(),
    "paper_imagenet_resnet50": paper_imagenet_resnet50_study(),
    "paper_imagenet_efficientnet_b8": paper_imagenet_efficientnet_b8_study(),
}
