"""Runs `bnreg-train` with one fault injected, to test how the binary stops (tests only).

    python tests/fault_run.py hang_step K [flags...]     # training element K and later never come
    python tests/fault_run.py slow_eval MARKER [flags...]    # the final evaluation takes a minute
    python tests/fault_run.py slow_export MARKER [flags...]  # the export takes a minute

`hang_step` blocks inside TensorFlow: the step waits in C++ for an input element that a
`tf.py_function` never returns, so Python's signal handler cannot run in the main thread (the
case of a step that never ends). `slow_*` write MARKER when the phase starts and then wait in
Python before doing the real work, so a test can send a signal during that phase.
"""
import os
import sys
import time


def _hang_from(k):
    import tensorflow as tf

    from bnreg_tf.run import inputs

    real = inputs.train_dataset

    def hang(index):
        while int(index) >= k:
            time.sleep(3600)
        return index

    def train_dataset(*args, **kwargs):
        stream = real(*args, **kwargs).enumerate()
        return stream.map(lambda i, batch: (tf.py_function(hang, [i], tf.int64), batch)[1])

    inputs.train_dataset = train_dataset


def _slow(name, marker):
    from bnreg_tf.run import trainer

    real = getattr(trainer, name)

    def slow(*args, **kwargs):
        with open(marker, "w") as f:
            f.write(name)
        time.sleep(60)
        return real(*args, **kwargs)

    setattr(trainer, name, slow)


def main():
    import bnreg_tf  # noqa: F401  (first: TensorFlow loads with its C++ lines kept off stderr)

    fault, value, *flags = sys.argv[1:]
    if fault == "hang_step":
        _hang_from(int(value))
    elif fault == "slow_eval":
        _slow("evaluate_split", value)
    elif fault == "slow_export":
        _slow("export_saved_model", value)
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    from bnreg_tf.cli import train

    train.run([os.path.join(os.path.dirname(train.__file__), "train.py"), *flags])


if __name__ == "__main__":
    main()
