"""Callbacks of the training binaries: checkpoints, the non-finite-loss stop, run statistics,
log.csv (`bnreg_tf.run.history`, re-exported here) and TensorBoard.

Epochs are counted from 1 everywhere a person reads them (log.csv, the console, TensorBoard's
`epoch` scalar); TensorBoard's x axis is the global step.
"""
import dataclasses
import math
import os
import time

import keras

from bnreg_tf.run.history import EpochLog, RunHistory, check_epoch_log  # noqa: F401


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/Inf loss; the message names the step and the last good checkpoint."""


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first step whose loss is not finite, before anything is saved.

    Place it before `Checkpointer`: the checkpointer skips saving once `tripped` is set, so the
    last checkpoint on disk is the last good one.
    """

    def __init__(self):
        super().__init__()
        self.tripped = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.tripped = int(self.model.optimizer.iterations.numpy())
            self.model.stop_training = True


class Checkpointer(keras.callbacks.Callback):
    """Saves `checkpoint` through `manager` at each epoch end and every `every_steps` steps.

    tf.train.CheckpointManager writes the new checkpoint before it updates the index and deletes
    the oldest, so a kill at any moment leaves the previous checkpoint restorable.
    """

    def __init__(self, manager, guard, every_steps=0):
        super().__init__()
        self.manager, self.guard, self.every_steps = manager, guard, int(every_steps)

    def _save(self):
        if self.guard.tripped is None:
            from bnreg_tf.run.checkpoints import save_once

            save_once(self.manager, int(self.model.optimizer.iterations.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        # An epoch's last step is saved at the epoch's end, after its row of log.csv (the
        # checkpoint carries the history: bnreg_tf.run.history).
        last = batch + 1 == (self.params or {}).get("steps")
        if self.every_steps and not last and \
                int(self.model.optimizer.iterations.numpy()) % self.every_steps == 0:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save()


class RunStats(keras.callbacks.Callback):
    """Adds the learning rate and `images_per_second` (training steps only) to the logs.

    Each batch's logs get the learning rate of that step; each epoch's logs get the mean
    learning rate of its steps (a 1-epoch cosine run logs about half the peak, not its final 0).
    """

    def __init__(self, global_batch_size):
        super().__init__()
        self.global_batch_size = global_batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.steps, self.seconds, self._start, self.rate_sum = 0, 0.0, None, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        rate = self.model.optimizer.learning_rate   # the schedule at this step
        self._rate = float(rate.numpy() if hasattr(rate, "numpy") else rate)
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.steps += 1
            self.rate_sum += self._rate
            if logs is not None:
                logs["learning_rate"] = self._rate

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self.steps:
            logs["learning_rate"] = self.rate_sum / self.steps
        if self.seconds > 0:
            logs["images_per_second"] = self.steps * self.global_batch_size / self.seconds


class AveragedEvaluation(keras.callbacks.Callback):
    """Evaluates with the optimizer's averaged weights (EfficientNet's EMA), training with the raw."""

    def __init__(self, optimizer):
        super().__init__()
        self.optimizer, self._context = optimizer, None

    def on_test_begin(self, logs=None):
        self._context = self.optimizer.averaged_weights()
        self._context.__enter__()

    def on_test_end(self, logs=None):
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None


class TensorBoardLog(keras.callbacks.Callback):
    """TensorBoard runs `train/` and `validation/` under `log_dir`, x axis = global step.

    train/: the learning rate at every step; loss, accuracy and penalties (the epoch's running
    means, as Keras reports them) every `every` steps and at each epoch end; then the epoch's
    probe norms, images/s and `epoch` (1-based). validation/: the holdout's metrics at each
    epoch end, under the same names as in train/, so TensorBoard overlays the two.
    `log_dir` itself holds the run's HParams (every RunConfig field; the validation and
    training metrics as the session's metrics).
    """

    def __init__(self, log_dir, config, every=None):
        super().__init__()
        self.log_dir, self.config, self.every = log_dir, config, every
        self.writers = {}

    def _writer(self, run):
        import tensorflow as tf

        if run not in self.writers:
            self.writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run)
                                                              if run else self.log_dir)
        return self.writers[run]

    def _write(self, run, step, values):
        import tensorflow as tf

        with self._writer(run).as_default(step=step):
            for key, value in values.items():
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    continue
                if abs(value) > 3e38:  # beyond float32 (a diverging norm): log it as inf
                    value = math.copysign(math.inf, value)
                tf.summary.scalar(key, value)

    def on_train_begin(self, logs=None):
        self.every = self.every or max(1, self.params.get("steps", 100) // 20)
        if not os.path.isdir(self.log_dir) or not any(
                name.startswith("events.") for name in os.listdir(self.log_dir)):
            self._write_hparams()

    def _write_hparams(self):
        from tensorboard.plugins.hparams import api as hp

        values = {k: v for k, v in dataclasses.asdict(self.config).items()
                  if isinstance(v, (bool, int, float, str))}
        metrics = [hp.Metric(name, group=group, display_name=f"{group}/{name}")
                   for group in ("validation", "train") for name in ("accuracy", "cross_entropy")]
        with self._writer("").as_default(step=0):
            hp.hparams_config(hparams=[hp.HParam(name) for name in values], metrics=metrics)
            hp.hparams(values, trial_id=os.path.basename(os.path.abspath(self.config.model_dir)))
        self._writer("").flush()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        step = int(self.model.optimizer.iterations.numpy())
        values = {"learning_rate": logs["learning_rate"]} if "learning_rate" in logs else {}
        if step % self.every == 0:
            values.update({k: v for k, v in logs.items() if k != "learning_rate"})
        if values:
            self._write("train", step, values)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = int(self.model.optimizer.iterations.numpy())
        train = {k: v for k, v in logs.items()
                 if not k.startswith("val_") and k != "learning_rate"}
        self._write("train", step, {**train, "epoch": epoch + 1})
        validation = {k[len("val_"):]: v for k, v in logs.items() if k.startswith("val_")}
        if validation:
            self._write("validation", step, validation)
        for writer in self.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


class RestoreEpochMetrics(keras.callbacks.Callback):
    """Puts back the checkpointed running means of an epoch resumed mid-way.

    `fit` resets the metrics before each epoch's `on_epoch_begin`; this callback (first in the
    list) then assigns the values the step checkpoint held, so the resumed epoch's logged loss
    and accuracy average all its steps, as an unbroken epoch's do.
    """

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_begin(self, epoch, logs=None):
        if self.values is None:
            return
        variables = [v for m in self.model.metrics for v in m.variables]
        for variable, value in zip(variables, self.values, strict=True):
            variable.assign(value)
        self.values = None
