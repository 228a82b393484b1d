"""SIGTERM and SIGINT as a preemption notice: finish the step, checkpoint, exit with one line.

Cloud VMs, TPU pods, Kubernetes and Slurm send SIGTERM some seconds before they kill a process;
Ctrl-C sends SIGINT. Inside `stop_signals()` the first such signal only sets a flag: the training
loop (`StopOnSignal`) finishes the current step, saves a checkpoint and stops, and the binary exits
with `Preempted`'s one line and status 75 (EX_TEMPFAIL: repeat the command to resume). A second
signal exits at once (status 128 + signal number), as a user pressing Ctrl-C twice expects.
"""
import contextlib
import os
import signal
import threading

import keras

EXIT_STATUS = 75
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A stop signal ended the run early; a checkpoint holds its state."""


class _State:
    depth = 0
    received = None
    previous = {}


def received():
    """The name of the stop signal received ("SIGTERM"), or None."""
    return _State.received


def _handler(signum, _frame):
    name = signal.Signals(signum).name
    if _State.received is not None:
        os.write(2, f"bnreg: second {name}: exiting now without a checkpoint\n".encode())
        os._exit(128 + signum)
    _State.received = name


@contextlib.contextmanager
def stop_signals(strategy=None):
    """Within the block SIGTERM/SIGINT set `received()` instead of killing (re-entrant).

    Not under MultiWorkerMirroredStrategy: there a checkpoint is saved collectively, by every
    worker at once, and a signal reaches one worker only, so one worker stopping to save would
    wait forever for the others. Multi-worker runs resume from their last periodic checkpoint
    (`--checkpoint_steps`); BUILD_NOTES says what was tested.
    """
    from bnreg_tf.strategies import is_multi_worker

    if threading.current_thread() is not threading.main_thread() or \
            (strategy is not None and is_multi_worker(strategy)):
        yield
        return
    if _State.depth == 0:
        _State.received = None
        _State.previous = {s: signal.signal(s, _handler) for s in _SIGNALS}
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0:
            for s, handler in _State.previous.items():
                signal.signal(s, handler)


def raise_if_received(where):
    if _State.received is not None:
        raise Preempted(f"stopped by {_State.received} {where}; repeat the command to resume")


class StopOnSignal(keras.callbacks.Callback):
    """After the step during which a stop signal arrived: save a checkpoint and raise Preempted.

    Raising (rather than `stop_training`) skips the epoch's validation pass, which could outlast
    the grace period between SIGTERM and SIGKILL (30 s on Kubernetes by default).
    """

    def __init__(self, manager, save=True):
        super().__init__()
        self.manager, self.save = manager, save

    def on_train_batch_end(self, batch, logs=None):
        if _State.received is None:
            return
        step = int(self.model.optimizer.iterations.numpy())
        if self.save and (self.manager.latest_checkpoint is None or
                          not self.manager.latest_checkpoint.endswith(f"-{step}")):
            self.manager.save(checkpoint_number=step)
        raise Preempted(f"stopped by {_State.received} at step {step}; checkpoint saved; "
                        "repeat the command to resume")
