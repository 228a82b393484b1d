"""One preset per paper experiment (REFERENCE.md sections 3 and 5), as code.

`--preset` picks one and every other flag overrides it. Where the paper and REFERENCE.md are
silent, the value is the standard one of the recipe the paper cites, marked "assumed" below.
"""
from bnreg_tf.config import RunConfig

def _efficientnet_imagenet(variant, randaugment_magnitude):
    """The TPU reference recipe: batch 2048, 350 epochs, RMSProp (0.9, 0.9, 1e-3), LR 0.016 *
    batch / 256, 5 warm-up epochs, x0.97 every 2.4 epochs, EMA 0.9999, label smoothing 0.1,
    wd 1e-5 on non-BN variables, the variant's reference Dropout, drop-connect 0.2, holdout, and
    early stopping on it (the paper's 25,022 held-out images: `bnreg_tf.early_stopping`);
    RandAugment with the reference's own arithmetic (`--randaugment_variant=reference`)."""
    return RunConfig(
        model=f"efficientnet_{variant}", dataset="imagenet2012", holdout=True, epochs=350,
        batch_size=2048, optimizer="rmsprop_reference", learning_rate=0.016,
        lr_reference_batch=256, schedule="efficientnet", warmup_epochs=5, decay_epochs="2.4",
        decay_rate=0.97, momentum=0.9, weight_decay=1e-5, weight_decay_exclude="batchnorm",
        label_smoothing=0.1, ema_decay=0.9999, dropout=-1, survival_prob=0.8,
        augment="randaugment", randaugment_layers=2,
        randaugment_magnitude=randaugment_magnitude, randaugment_variant="reference",
        eval_batch_size=1024, early_stopping=True)


PRESETS = {
    # Offline default: WRN-10-1 on scikit-learn's 8x8 digits (about 30 s on 2 CPU cores).
    "digits": RunConfig(
        model="wrn10_1", dataset="digits", epochs=15, batch_size=64, learning_rate=0.05,
        schedule="cosine", momentum=0.9, augment="auto"),
    # WRN-28-10 on CIFAR-10: 200 epochs, cosine, batch 128, flips + pad-and-crop, Swish; LR 0.1
    # (the paper's best with BN; 0.2 with FL2). Weight decay 5e-4 and Nesterov: assumed (WRN).
    "wrn28_10_cifar10": RunConfig(
        model="wrn28_10", dataset="cifar10", activation="swish", epochs=200, batch_size=128,
        learning_rate=0.1, schedule="cosine", momentum=0.9, nesterov=True, weight_decay=5e-4,
        augment="crop_flip", eval_batch_size=500),
    # WRN-28-10 on SVHN core (73,257 train, no "extra"). Same recipe as CIFAR-10 except no flips
    # (digits are not mirror-symmetric): assumed.
    "wrn28_10_svhn": RunConfig(
        model="wrn28_10", dataset="svhn_cropped", activation="swish", epochs=200, batch_size=128,
        learning_rate=0.1, schedule="cosine", momentum=0.9, nesterov=True, weight_decay=5e-4,
        augment="crop", eval_batch_size=500),
    # ResNet-50, Goyal et al.: 90 epochs, batch 512, LR 0.1 * batch / 256, 5 warm-up epochs, x0.1
    # at 30/60/80, momentum 0.9, wd 1e-4 not on BN or biases, float32, random-resized crop + flip.
    "resnet50_imagenet": RunConfig(
        model="resnet50", dataset="imagenet2012", epochs=90, batch_size=512, learning_rate=0.1,
        lr_reference_batch=256, schedule="goyal", warmup_epochs=5, decay_epochs="30,60,80",
        decay_rate=0.1, momentum=0.9, weight_decay=1e-4,
        weight_decay_exclude="batchnorm_and_bias", augment="goyal", precision="float32",
        eval_batch_size=500),
    # EfficientNet-B8 per the TPU reference + RandAugment (N=2, M=28), early stopping on the
    # 25,022 held-out images (see _efficientnet_imagenet).
    "efficientnet_b8_imagenet": _efficientnet_imagenet("b8", randaugment_magnitude=28),
    # The same recipe on B0 for smaller hardware; RandAugment at the reference's flag defaults
    # (N=2, M=10): assumed.
    "efficientnet_b0_imagenet": _efficientnet_imagenet("b0", randaugment_magnitude=10),
}


def preset(name):
    from bnreg_tf.config import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(PRESETS)}, got {name!r}")
    return PRESETS[name]
