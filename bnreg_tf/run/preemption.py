"""The training loop's side of a stop signal: `StopOnSignal` saves at the step's end and raises
`Preempted`; `CoordinatedStop` does it on every worker of MultiWorkerMirroredStrategy at one step.
The handler, its modes ("defer" in the loop, "raise" elsewhere), the grace period and its
watchdog are in `bnreg_tf.run.stop` (re-exported here).
"""
import os
import shutil
import signal
import threading

import keras

from bnreg_tf.run.checkpoints import save_once
from bnreg_tf.run import stop
from bnreg_tf.run.stop import (DEFAULT_GRACE, EXIT_STATUS, Preempted, install,  # noqa: F401
                               interruptible, raise_if_received, received, reported, set_grace,
                               stop_signals, watch_checkpoints)


class StopOnSignal(keras.callbacks.Callback):
    """After the step during which a stop signal arrived: save a checkpoint and raise Preempted.

    Raising (rather than `stop_training`) skips the epoch's validation pass, which could outlast
    the grace period between SIGTERM and SIGKILL (30 s on Kubernetes by default), except at an
    epoch's last step: there it stops at the epoch's end (see `on_train_batch_end`).
    """

    def __init__(self, manager):
        super().__init__()
        self.manager = manager

    def _stop(self):
        step = int(self.model.optimizer.iterations.numpy())
        save_once(self.manager, step)
        raise Preempted(f"stopped by {stop.State.received} at step {step}; checkpoint saved; "
                        "repeat the command to resume")

    def on_train_batch_end(self, batch, logs=None):
        # At an epoch's last step the stop waits for the epoch's end (its validation, its row
        # of log.csv and its checkpoint), so a resume never lacks that epoch's row.
        if stop.State.received is not None and batch + 1 != (self.params or {}).get("steps"):
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        if stop.State.received is not None:
            self._stop()


_COORDINATION = {"handler": None, "current": None}   # this process's handler, the run it serves


class CoordinatedStop(keras.callbacks.Callback):
    """MultiWorkerMirroredStrategy: a stop signal to ANY worker stops ALL of them at one step.

    `tf.distribute.experimental.PreemptionCheckpointHandler` agrees on the step through the
    coordination service that MultiWorkerMirroredStrategy starts for its cluster: the signalled
    worker publishes "save after call k + 1" and waits until every worker's watcher thread has
    acknowledged it; at that call every worker saves (collectively, through the run's
    CheckpointManager: the chief into the model dir, the others into their scratch dirs) and
    raises Preempted (status 75), the signalled worker naming its signal.

    The handler only decides when; bnreg keeps its own checkpoints and restore path. It is given
    an empty throwaway Checkpoint (so it neither restores nor adds its call counter to bnreg's
    checkpoints: every worker counts calls from 0 in this process and resumes from the same
    model-dir checkpoint, so the counts agree) and saves through `save_fn` at the optimizer's
    step. Signals are caught here (SIGTERM and SIGINT; a second one exits at once, as
    `stop_signals` does) and reported through `termination_watcher_fn`, polled once a second.
    One handler per process: its coordination-service keys are set once for the cluster's life.
    """

    def __init__(self, strategy, manager):
        super().__init__()
        self.strategy, self.manager = strategy, manager
        self.handler, self.previous, self.step = None, {}, None

    def _save(self):
        self.step = int(self.model.optimizer.iterations.numpy())
        save_once(self.manager, self.step)

    def _exit(self):
        from bnreg_tf.run.strategies import is_chief

        self._restore_signals()
        if not is_chief(self.strategy):   # its save went to its scratch dir: not kept
            shutil.rmtree(os.path.dirname(self.manager.directory), ignore_errors=True)
        cause = f"stopped by {stop.State.received}" if stop.State.received else \
            "stopped because another worker was preempted"
        raise Preempted(f"{cause} at step {self.step}; checkpoint saved; repeat the command on "
                        "every worker to resume")

    def _restore_signals(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def on_train_begin(self, logs=None):
        import tensorflow as tf
        from tensorflow.python.distribute.failure_handling import failure_handling_util as util

        if threading.current_thread() is not threading.main_thread():
            return
        _COORDINATION["current"] = self   # the handler saves and exits through this run
        if _COORDINATION["handler"] is None:   # one per process, shared by a study's runs
            stop.State.received = None
            throwaway = tf.train.CheckpointManager(
                tf.train.Checkpoint(), os.path.join(self.manager.directory, "no-such-dir"), 1)
            config = tf.distribute.experimental.TerminationConfig(
                termination_watcher_fn=lambda: stop.State.received is not None,
                exit_fn=lambda: _COORDINATION["current"]._exit(), grace_period=0,
                save_fn=lambda: _COORDINATION["current"]._save())
            handler = tf.distribute.experimental.PreemptionCheckpointHandler(
                self.strategy.cluster_resolver, throwaway, termination_config=config)
            # On GCE CPU/TPU VMs the handler does nothing (TF 2.21): keep the default SIGTERM.
            if handler._platform_device in (util.PlatformDevice.GCE_CPU,  # pylint: disable=protected-access
                                            util.PlatformDevice.GCE_TPU):
                handler = False
            _COORDINATION["handler"] = handler
        self.handler = _COORDINATION["handler"]
        if self.handler:
            self.previous = {s: signal.signal(s, stop.handler) for s in stop.SIGNALS}

    def on_train_batch_end(self, batch, logs=None):
        from tensorflow.python.util import deprecation

        if self.handler:
            with deprecation.silence():   # its save reads its own deprecated total_run_calls
                self.handler.save_checkpoint_if_preempted()

    def on_train_end(self, logs=None):
        self._restore_signals()


def stop_callback(strategy, manager):
    """The training loop's stop-signal callback: `CoordinatedStop` across workers, else
    `StopOnSignal` (inert outside `stop_signals`)."""
    from bnreg_tf.run.strategies import is_multi_worker

    if is_multi_worker(strategy):
        return CoordinatedStop(strategy, manager)
    return StopOnSignal(manager)
