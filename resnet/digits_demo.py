"""`bnreg-demo`: the smallest real run of the paper's comparison, offline, in about a minute.

Trains WRN-10-1 on scikit-learn's bundled 8x8 digits with BatchNorm, with Fixup, and with
Fixup + Embedding L2, then prints test accuracy and the embedding/output norms (NormMonitor)
at init and after training. It measures; it is not tuned to reproduce the paper's conclusion.
"""
import argparse
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import resnet
from bnreg_tf import NormMonitor
from bnreg_tf.data import digits_arrays

VARIANTS = {
    "batchnorm": dict(norm="batchnorm"),
    "fixup": dict(norm="fixup"),
    "fixup+el2": dict(norm="fixup", embedding_l2=0.5),
    "fixup+fl2": dict(norm="fixup", functional_l2=0.5),
}


def train_variant(variant, epochs, batch_size, seed):
    (x, y), (x_test, y_test) = (digits_arrays(split) for split in ("train", "test"))
    x, x_test = x.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0
    model = resnet.build_model("wrn10_1", num_classes=10, input_shape=(8, 8, 1), seed=seed,
                               **VARIANTS[variant])
    steps = epochs * int(np.ceil(len(x) / batch_size))
    model.compile(
        keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.05, steps), momentum=0.9),
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    monitor = NormMonitor(x_test[:256])
    keras.utils.set_random_seed(seed)
    model.fit(x, {"logits": y}, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=[monitor])
    # Scored from predict: Keras 3.15 compiled metrics need a target for every output.
    logits = model.predict(x_test, batch_size=256, verbose=0)["logits"]
    return monitor, float(np.mean(np.argmax(logits, axis=1) == y_test))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch_size must be >= 1")
    print(f"WRN-10-1 on sklearn digits, {args.epochs} epochs, batch {args.batch_size}, "
          f"seed {args.seed}")
    print("| variant | test acc | E‖Emb‖² init | E‖Emb‖² end | E‖NN‖² init | E‖NN‖² end | s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for variant in VARIANTS:
        start = time.time()
        monitor, accuracy = train_variant(variant, args.epochs, args.batch_size, args.seed)
        init, end = monitor.initial, monitor.history[-1]
        print(f"| {variant} | {accuracy:.3f} | {init['probe_embedding_norm_sq']:.3g} | "
              f"{end['probe_embedding_norm_sq']:.3g} | {init['probe_output_norm_sq']:.3g} | "
              f"{end['probe_output_norm_sq']:.3g} | {time.time() - start:.0f} |", flush=True)
    return 0


def run():
    sys.exit(main())


if __name__ == "__main__":
    run()
