"""Callbacks of the training binaries: checkpoints, the non-finite-loss stop, run statistics."""
import math
import time

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2


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
            step = int(self.model.optimizer.iterations.numpy())
            if self.manager.latest_checkpoint is None or \
                    not self.manager.latest_checkpoint.endswith(f"-{step}"):
                self.manager.save(checkpoint_number=step)

    def on_train_batch_end(self, batch, logs=None):
        if self.every_steps and int(self.model.optimizer.iterations.numpy()) % self.every_steps == 0:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save()


class RunStats(keras.callbacks.Callback):
    """Adds `learning_rate` and `images_per_second` (training steps only) to each epoch's logs."""

    def __init__(self, global_batch_size):
        super().__init__()
        self.global_batch_size = global_batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.steps, self.seconds, self._start = 0, 0.0, None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        rate = optimizer.learning_rate
        logs["learning_rate"] = float(rate.numpy() if hasattr(rate, "numpy") else rate)
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


class ScalarSummaries(keras.callbacks.Callback):
    """TensorBoard scalars of every epoch log (penalties, norms, lr, images/s), step = epoch.

    Written with core TF's `tf.summary.write` and the "scalars" plugin metadata, which is what
    `tf.summary.scalar` writes; that one needs the tensorboard package, which bnreg does not
    install (TensorBoard itself reads these files).
    """

    METADATA = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    ).SerializeToString()

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir, self.writer = log_dir, None

    def on_epoch_end(self, epoch, logs=None):
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.log_dir)
        with self.writer.as_default(step=epoch + 1):
            for key, value in (logs or {}).items():
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    continue
                tf.summary.write(key, tf.constant(value, tf.float32), metadata=self.METADATA)
        self.writer.flush()


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
