"""SIGTERM and SIGINT as a preemption notice: stop within a bounded grace, with one line
(the handler, its modes and the watchdog; the training loop's callbacks are in `preemption`).

Cloud VMs, TPU pods, Kubernetes and Slurm send SIGTERM some seconds before they kill a process;
Ctrl-C sends SIGINT. The binaries `install` bnreg's handler at their start; from then on:

- in the training loop (`stop_signals()`, "defer" mode) the first signal only sets a flag: the
  loop (`StopOnSignal`) finishes the current step, saves a checkpoint and raises `Preempted`;
- everywhere else ("raise" mode: start-up, the final evaluation, the export, a study's scoring;
  `interruptible(phase)`) the first signal raises `Preempted` at once, naming the phase;
- a second signal exits at once (status 128 + signal number), as a user pressing Ctrl-C twice
  expects;
- a grace period bounds it all: if the process has not ended `grace` seconds after the first
  signal (a step that never ends, a hung read, a signal swallowed by a library), a watchdog
  thread prints one line naming the last checkpoint and exits with status 75. The watchdog
  learns of signals through `signal.set_wakeup_fd`, so it also acts while the main thread is
  stuck inside TensorFlow, where Python's own handler cannot run.

The binary exits with `Preempted`'s one line and status 75 (EX_TEMPFAIL: repeat the command to
resume). `Preempted` derives from BaseException, like KeyboardInterrupt, so that no `except
Exception` on the way (bnreg's, TensorFlow's, TFDS') takes a stop for an ordinary failure.
Under MultiWorkerMirroredStrategy a signal reaches one worker only, so `CoordinatedStop` lets
tf.distribute's PreemptionCheckpointHandler agree on one step at which every worker saves and stops.
"""
import _thread
import collections
import contextlib
import gc
import os
import select
import signal
import threading
import time

from bnreg_tf.run.checkpoints import checkpoint_paths
from bnreg_tf.startup import stderr_fd

EXIT_STATUS = 75
DEFAULT_GRACE = 120.0   # seconds; BUILD_NOTES "Issue 27" compares it with the clouds' notices
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(BaseException):
    """A stop signal ended the run early; the message says what holds its state."""


class State:
    depth = 0              # stop_signals/install nesting; handlers installed while > 0
    previous = {}          # the handlers before ours
    received = None        # the first signal's name
    session = 0            # counts installs: a watchdog timer belongs to one session
    mode = "raise"         # "raise": Preempted at once; "defer": set the flag only
    phase = "during start-up"
    name = "bnreg"         # the binary's name, for the watchdog's line
    grace = DEFAULT_GRACE
    checkpoints = None     # the run's checkpoint folder, for the lines that name the last one
    exit_status = None     # set when the binary reports the stop: the watchdog stays silent
    wakeup = None          # (read fd, write fd) of the wakeup pipe
    redeliver = None       # a signal whose raise waits for `_unsafe_to_raise` code to end
    redelivered = collections.deque()   # its trips, which the wakeup pipe reports again
    redelivered_count = 0  # how many trips `_redeliver` made (for the tests)
    exiting = threading.Lock()


def _last_checkpoint():
    paths = checkpoint_paths(State.checkpoints) if State.checkpoints else []
    return paths[-1] if paths else None


def _resume_hint():
    if State.phase == "during start-up":   # start-up writes nothing that stays (trainer)
        return "nothing was written: repeat the command"
    last = _last_checkpoint()
    if last:
        return f"the last checkpoint is {last}: repeat the command to resume from it"
    return "no checkpoint was saved yet: repeat the command to start again"


def _exit_now(text, status):
    """Writes `text` as the binary's one line (unless it already reported) and exits at once."""
    with State.exiting:
        if State.exit_status is None:
            os.write(stderr_fd(), f"{State.name}: {text}\n".encode())
        os._exit(status if State.exit_status is None else State.exit_status)


# Python code that C code calls and whose exception it may not pass on: isinstance's and
# issubclass's hooks (TensorFlow's C++ `nest.flatten` turns one raised there into a printed
# SystemError and goes on) and the import machinery (C code imports too).
_CALLED_FROM_C = ("abc", "_collections_abc", "_weakrefset", "importlib._bootstrap",
                  "importlib._bootstrap_external")


def _unsafe_to_raise(frame):
    """Whether an exception raised in `frame` may be printed and dropped instead of reaching
    the binary: inside one of `gc.callbacks` ("Exception ignored in ..."; TensorFlow imports
    JAX when it is installed, and JAX's callback runs at every collection) or inside Python code
    that C code called (`_CALLED_FROM_C`). Such a stop is raised again a moment later."""
    codes = {getattr(callback, "__code__", None) for callback in gc.callbacks} - {None}
    while frame is not None:
        if frame.f_code in codes or frame.f_globals.get("__name__") in _CALLED_FROM_C:
            return True
        frame = frame.f_back
    return False


def handler(signum, frame):
    name = signal.Signals(signum).name
    if State.redeliver == signum:   # the same signal, after the code it landed in
        State.redeliver = None
    elif State.received is not None:
        _exit_now(f"second {name}: exiting now without a checkpoint", 128 + signum)
    State.received = name
    if State.mode == "raise":
        if _unsafe_to_raise(frame) and State.wakeup is not None:
            State.redeliver = signum   # the watchdog trips it again once that code is over
            os.write(State.wakeup[1], b"\0")
            return
        raise Preempted(f"stopped by {name} {State.phase}; {_resume_hint()}")


def _grace_line(name):
    where = "the step in progress did not end" if State.mode == "defer" else \
        f"still busy {State.phase}"
    return (f"stopped by {name}: {where} within --stop_grace_secs={State.grace:g}; "
            f"exiting without a new checkpoint; {_resume_hint()}")


def _watch(read_fd):
    """The watchdog thread: counts the signals the wakeup pipe reports, exits at the second one,
    or when the grace period after the first has passed in the same session."""
    first, session, name = None, None, None
    while True:
        timeout = None if first is None else max(0.0, first + State.grace - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if session is not None and (session != State.session or State.depth == 0):
            first, session = None, None   # that session ended (a library caller's block)
        if ready:
            for signum in os.read(read_fd, 64):
                if signum == 0:   # `handler` asks: its signal landed in `_unsafe_to_raise` code
                    _redeliver()
                    continue
                if signum in SIGNALS and State.redelivered:   # `_redeliver` tripped it
                    State.redelivered.popleft()
                    continue
                if signum not in SIGNALS or State.depth == 0:
                    continue
                if first is None:   # (Python's handler may not have run: main may be stuck)
                    first, session = time.monotonic(), State.session
                    name = signal.Signals(signum).name
                else:
                    _exit_now(f"second {signal.Signals(signum).name}: exiting now without a "
                              "checkpoint", 128 + signum)
        elif first is not None:
            _exit_now(_grace_line(name), EXIT_STATUS)


def _redeliver(wait=0.01):
    """Trips the signal `handler` could not raise where it landed again, from the watchdog
    thread, once that (short) code has had time to return."""
    session = State.session
    time.sleep(wait)
    signum = State.redeliver
    if signum is not None and State.depth > 0 and State.session == session:
        State.redelivered.append(signum)   # the trip reaches the wakeup pipe too
        State.redelivered_count += 1
        _thread.interrupt_main(signum)


def _start_watchdog():
    if State.wakeup is None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        State.wakeup = (read_fd, write_fd)
        threading.Thread(target=_watch, args=(read_fd,), name="bnreg-stop-watchdog",
                         daemon=True).start()
    signal.set_wakeup_fd(State.wakeup[1], warn_on_full_buffer=False)


def _install():
    if State.depth == 0:
        State.received, State.exit_status, State.redeliver = None, None, None
        State.redelivered.clear()   # trips of an earlier session are not this one's signals
        State.session += 1
        State.previous = {s: signal.signal(s, handler) for s in SIGNALS}
        _start_watchdog()
    State.depth += 1


def uninstall():
    """Undoes one `install` (the handlers before it come back with the last one)."""
    if State.depth == 0 or threading.current_thread() is not threading.main_thread():
        return
    State.depth -= 1
    if State.depth == 0:
        for s, handler in State.previous.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(-1)
        State.mode, State.phase, State.checkpoints = "raise", "during start-up", None


def install(name, grace=DEFAULT_GRACE):
    """For the binaries, at their start: bnreg's handler for the process's whole life ("raise"
    mode until a training loop defers it), with the watchdog. Main thread only."""
    if threading.current_thread() is threading.main_thread():
        State.name = name
        set_grace(grace)
        _install()


def set_grace(seconds):
    """The grace period after the first signal [seconds, > 0]."""
    State.grace = float(seconds)


def reported(status):
    """The binary has printed its line and exits with `status`: the watchdog stays silent (and
    only bounds the exit, with the same status)."""
    State.exit_status = status


def watch_checkpoints(directory):
    """The run's checkpoint folder, named (its newest checkpoint) by the stop lines."""
    State.checkpoints = directory


@contextlib.contextmanager
def stop_signals(strategy=None):
    """Within the block SIGTERM/SIGINT only set a flag instead of stopping ("defer" mode;
    re-entrant); installs the handlers for the block when the binary has not.

    Not under MultiWorkerMirroredStrategy: there a checkpoint is saved collectively, by every
    worker at once, and a signal reaches one worker only, so one worker stopping to save would
    wait forever for the others. There `CoordinatedStop` (the training loop's callback, from
    `stop_callback`) catches the signals while training (in "defer" mode); BUILD_NOTES says what
    was tested.
    """
    from bnreg_tf.run.strategies import is_multi_worker

    main = threading.current_thread() is threading.main_thread()
    multi = strategy is not None and is_multi_worker(strategy)
    installs = main and not multi
    if installs:
        _install()
    mode, phase = State.mode, State.phase
    State.mode, State.phase = "defer", "during training"
    try:
        yield
    finally:
        State.mode, State.phase = mode, phase
        if installs:
            uninstall()


@contextlib.contextmanager
def interruptible(phase):
    """Within the block a stop signal raises `Preempted` at once ("raise" mode), its message
    naming `phase` (e.g. "during the export"); one received before the block raises on entry."""
    mode, before = State.mode, State.phase
    State.mode, State.phase = "raise", phase
    try:
        if State.received is not None:
            raise Preempted(f"stopped by {State.received} {phase}; {_resume_hint()}")
        yield
    finally:
        State.mode, State.phase = mode, before


def received():
    """The name of the stop signal received (None if none)."""
    return State.received


def raise_if_received(where):
    if State.received is not None:
        raise Preempted(f"stopped by {State.received} {where}; repeat the command to resume")
