"""ImageNet training of ResNet-50 (Goyal et al.), NF-ResNet-50 (nfnets) or EfficientNet (TPU
reference) by preset/flags.

    python run_imagenet.py --preset=resnet50_imagenet --data_dir=$TFDS --model_dir=runs/r50 \
        --norm=fixup --embedding_l2=... --strategy=mirrored
    python run_imagenet.py --preset=efficientnet_b8_imagenet --strategy=tpu --tpu=$TPU ...

Same flags as `bnreg-train`; the dataset must be imagenet2012 (TFDS, manual download).
"""
from absl import flags

from bnreg_tf.cli import train as train_cli
from bnreg_tf.cli import initialize_devices
from bnreg_tf.cli.errors import run_main
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.flags import config_from_flags

IMAGENET_PRESETS = ("resnet50_imagenet", "nf_resnet50_imagenet", "efficientnet_b0_imagenet",
                    "efficientnet_b8_imagenet")


def main():
    from bnreg_tf.run import trainer

    if flags.FLAGS.preset not in IMAGENET_PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(IMAGENET_PRESETS)}, "
                          f"got {flags.FLAGS.preset!r}")
    config = config_from_flags(flags.FLAGS)
    if config.dataset != "imagenet2012":
        raise ConfigError(f"--dataset: run_imagenet.py trains on imagenet2012, got {config.dataset!r}")
    strategy = initialize_devices(config)
    if flags.FLAGS.export_only:
        trainer.export_from_checkpoint(config, strategy)
    else:
        trainer.train(config, strategy)
    return 0


if __name__ == "__main__":
    train_cli.define_flags(default_preset="resnet50_imagenet")
    run_main(main, name="run_imagenet.py")
