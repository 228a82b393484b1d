"""Early stopping as the EfficientNet recipe has it (docs/references.md §3.4 and §5.14):
keep the checkpoint with the best holdout accuracy, and export and score that one.

Training runs all its epochs (the learning-rate schedule is the recipe's); `BestCheckpoint`
saves the full training state to `<model_dir>/best/` whenever the epoch's `val_accuracy` (the
holdout's: `--early_stopping` requires `--holdout`) beats every earlier epoch's, then writes
`best.json` (epoch, step, accuracy). At the end `restore_best` puts those weights (and the
weight averages, where the recipe keeps them) back before the final evaluation and export.

Kill-safety: the best checkpoint is written before the epoch's regular checkpoint and before
`best.json`, so a run killed in between repeats that epoch, reaches the same accuracy (exact
resume) and saves it again; `best.json` never names a checkpoint that is not there.
"""
import json
import os

import keras
import tensorflow as tf

from bnreg_tf.files import write_atomically
from bnreg_tf.run import layout

BEST_DIR = layout.BEST_DIR
BEST_FILE = layout.BEST_FILE


def read_best(directory):
    """`best.json` of `directory` as a dict, or None."""
    path = os.path.join(directory, BEST_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            best = json.load(f)
        if not isinstance(best, dict) or not {"epoch", "step", "val_accuracy"} <= set(best):
            raise ValueError
        return best
    except (ValueError, UnicodeDecodeError):
        return None   # rewritten at the next better epoch; restore_best then falls back


class BestCheckpoint(keras.callbacks.Callback):
    """Saves `checkpoint` to `<directory>/best/` at each epoch whose `monitor` beats all earlier.

    Place it before the regular `Checkpointer` (see the module docstring). Every worker saves
    (saving may all-reduce); `directory` is the chief's model dir or a worker's scratch dir.
    """

    def __init__(self, checkpoint, directory, guard, monitor="val_accuracy"):
        super().__init__()
        self.directory, self.guard, self.monitor = directory, guard, monitor
        self.manager = tf.train.CheckpointManager(checkpoint, os.path.join(directory, BEST_DIR),
                                                  max_to_keep=1)
        best = read_best(directory)
        self.best = best["val_accuracy"] if best and self.manager.latest_checkpoint else None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or self.guard.tripped is not None:
            return
        value = float(value)
        if self.best is not None and not value > self.best:   # ties keep the earlier epoch
            return
        step = int(self.model.optimizer.iterations.numpy())
        path = self.manager.save(checkpoint_number=step)
        self.best = value
        write_atomically(os.path.join(self.directory, BEST_FILE), json.dumps(
            {"epoch": epoch + 1, "step": step, "val_accuracy": value,
             "checkpoint": os.path.basename(path)}, indent=2) + "\n")


def restore_best(run):
    """Puts the best epoch's weights into `run`'s model and optimizer state (its step counter
    keeps the trained steps); returns `{"best_epoch", "best_step", "best_val_accuracy"}` or
    None when no best checkpoint was kept (e.g. no epoch was evaluated)."""
    best = read_best(run.write_dir)
    path = tf.train.latest_checkpoint(os.path.join(run.write_dir, BEST_DIR))
    if best is None or path is None or not path.endswith(f"-{best['step']}"):
        return None
    optimizer = run.trainer.optimizer
    steps = int(optimizer.iterations.numpy())
    run.checkpoint_manager.checkpoint.restore(path).expect_partial()
    optimizer.iterations.assign(steps)
    return {"best_epoch": best["epoch"], "best_step": best["step"],
            "best_val_accuracy": best["val_accuracy"]}
