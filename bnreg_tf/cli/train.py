"""`bnreg-train`: trains any preset/model/dataset, evaluates, exports a SavedModel.

    bnreg-train --preset=wrn28_10_cifar10 --model_dir=runs/wrn --embedding_l2=0.1
    bnreg-train --model_dir=runs/wrn --export_only     # export the latest checkpoint
"""
from absl import flags

from bnreg_tf.cli import initialize_devices
from bnreg_tf.cli.errors import run_main
from bnreg_tf.run.flags import config_from_flags, define_run_flags

FLAGS = flags.FLAGS


def define_flags(default_preset="digits"):
    define_run_flags(FLAGS, default_preset)
    flags.DEFINE_bool("export_only", False, "Only export the latest checkpoint of --model_dir "
                      "[bool]")


def main():
    from bnreg_tf.run import trainer

    config = config_from_flags(FLAGS)
    strategy = initialize_devices(config)
    if FLAGS.export_only:
        trainer.export_from_checkpoint(config, strategy)
    else:
        trainer.train(config, strategy)
    return 0


def run(argv=None):
    define_flags()
    run_main(main, argv, "bnreg-train")


if __name__ == "__main__":
    run()
