"""`bnreg-demo`: the smallest real run of the paper's comparison, offline, in about a minute.

Trains WRN-10-1 on scikit-learn's bundled 8x8 digits with BatchNorm, with Fixup, with Fixup +
Embedding L2 and with Fixup + Functional L2, then prints test accuracy and the embedding/output
norms (NormMonitor) at init and after training. It measures; it is not tuned to reproduce the
paper's conclusion.
"""
import time

from absl import flags

from bnreg_tf.cli.errors import run_main
from bnreg_tf.run.config import ConfigError

FLAGS = flags.FLAGS
VARIANTS = {
    "batchnorm": dict(norm="batchnorm"),
    "fixup": dict(norm="fixup"),
    "fixup+el2": dict(norm="fixup", embedding_l2=0.5),
    "fixup+fl2": dict(norm="fixup", functional_l2=0.5),
}


def define_flags():
    from bnreg_tf.run.flags import set_group

    flags.DEFINE_integer("epochs", 15, "Training length [epochs]")
    flags.DEFINE_integer("batch_size", 64, "Training batch [images]")
    flags.DEFINE_integer("seed", 0, "Seed of init, data order and dropout [integer]")
    set_group("optimisation", "epochs", "batch_size")
    set_group("execution", "seed")


def train_variant(variant, epochs, batch_size, seed):
    """(NormMonitor, test accuracy) of one variant, trained with Keras' own loop."""
    import keras
    import numpy as np

    from bnreg_tf.data.digits import digits_arrays
    from bnreg_tf.nn import NormMonitor
    from bnreg_tf.run import models

    (x, y), (x_test, y_test) = (digits_arrays(split) for split in ("train", "test"))
    x, x_test = x.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0
    model = models.build("wrn10_1", num_classes=10, input_shape=(8, 8, 1), seed=seed,
                         **VARIANTS[variant])
    steps = epochs * int(np.ceil(len(x) / batch_size))
    model.compile(
        keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.05, steps), momentum=0.9),
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    monitor = NormMonitor(x_test[:256])
    keras.utils.set_random_seed(seed)
    model.fit(x, {"logits": y}, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=[monitor])
    # Scored from predict: Keras 3.15 compiled metrics need a target for every output.
    logits = model.predict(x_test, batch_size=256, verbose=0)["logits"]
    return monitor, float(np.mean(np.argmax(logits, axis=1) == y_test))


def main():
    from bnreg_tf.cli import initialize_devices

    if FLAGS.epochs < 1 or FLAGS.batch_size < 1:
        bad = "epochs" if FLAGS.epochs < 1 else "batch_size"
        raise ConfigError(f"--{bad}: expected an integer >= 1, got {FLAGS[bad].value}")
    if not 0 <= FLAGS.seed < 2 ** 32:
        raise ConfigError(f"--seed: expected an integer in [0, 2^32), got {FLAGS.seed}")
    initialize_devices()
    print(f"WRN-10-1 on sklearn digits, {FLAGS.epochs} epochs, batch {FLAGS.batch_size}, "
          f"seed {FLAGS.seed}")
    print("| variant | test acc | E‖Emb‖² init | E‖Emb‖² end | E‖NN‖² init | E‖NN‖² end | s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for variant in VARIANTS:
        start = time.time()
        monitor, accuracy = train_variant(variant, FLAGS.epochs, FLAGS.batch_size, FLAGS.seed)
        init, end = monitor.initial, monitor.history[-1]
        print(f"| {variant} | {accuracy:.3f} | {init['probe_embedding_norm_sq']:.3g} | "
              f"{end['probe_embedding_norm_sq']:.3g} | {init['probe_output_norm_sq']:.3g} | "
              f"{end['probe_output_norm_sq']:.3g} | {time.time() - start:.0f} |", flush=True)
    return 0


def run(argv=None):
    define_flags()
    run_main(main, argv, "bnreg-demo")


if __name__ == "__main__":
    run()
