"""Finding the checkpoint to resume from, from the checkpoint files themselves.

`tf.train.CheckpointManager` keeps an index file (`checkpoints/checkpoint`); when that is lost or
names deleted files, `tf.train.latest_checkpoint` answers None and a run would silently start
again from step 0 over intact checkpoints. `restore_latest` instead lists `ckpt-N.index` files,
tries them newest first, skips (with one line each) those that fail to restore, rewrites the
index to the ones that remain, and refuses to start from scratch while checkpoint files exist.

The index is untrusted too: TensorFlow's manager deletes what it names once newer checkpoints
push it out, so `check_index` rebuilds an index that names anything but this folder's own
`ckpt-N` files (a crafted path outside the run dir included) before a manager reads it.
A save the machine refuses (a full disk, a read-only mount) becomes `WriteFailed`, one line
naming the checkpoint that failed and the last one, intact (`writing`).
"""
import contextlib
import errno
import os
import re

import tensorflow as tf

from bnreg_tf.files import WriteFailed
from bnreg_tf.run.config import ConfigError

_NAME = re.compile(r"^ckpt-(\d+)\.index$")


def checkpoint_paths(directory):
    """The checkpoint prefixes in `directory`, oldest first (by their step number)."""
    if not os.path.isdir(directory):
        return []
    steps = sorted(int(m.group(1)) for m in map(_NAME.match, os.listdir(directory)) if m)
    return [os.path.join(directory, f"ckpt-{step}") for step in steps]


def _write_index(directory, latest, paths):
    """The CheckpointState text proto `tf.train.CheckpointManager` reads (names relative)."""
    from bnreg_tf.files import write_atomically

    if latest is None:   # no checkpoint of its own: no index (a manager then starts empty)
        index = os.path.join(directory, "checkpoint")
        if os.path.lexists(index):
            os.remove(index)
        return
    lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in paths]
    write_atomically(os.path.join(directory, "checkpoint"), "\n".join(lines) + "\n")


def _foreign_entries(directory):
    """The paths the index of `directory` names that are not `directory`'s own `ckpt-N`."""
    real = os.path.realpath(directory)
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception as error:  # a garbage text proto: ParseError, DecodeError, ...
        return [f"an unreadable index ({type(error).__name__})"]
    if state is None:
        return []
    named = [state.model_checkpoint_path, *state.all_model_checkpoint_paths]
    return [path for path in named
            if not re.match(r"^ckpt-\d+$", os.path.basename(path))
            or os.path.dirname(os.path.realpath(os.path.join(directory, path))) != real]


def check_index(directory, log=print):
    """Rebuilds `directory/checkpoint` from the folder's own `ckpt-N.index` files (or removes it
    when there are none) if it names anything else; returns True when it did (with a line).

    Guarantees that a `tf.train.CheckpointManager` made on `directory` afterwards knows no file
    outside it, so it can never delete one."""
    index = os.path.join(directory, "checkpoint")
    if not os.path.lexists(index):
        return False
    foreign = _foreign_entries(directory)
    if not foreign:
        return False
    own = checkpoint_paths(directory)
    _write_index(directory, own[-1] if own else None, own)
    log(f"bnreg: {index} named checkpoints that are not this run's own (e.g. {foreign[0]}); "
        f"ignored, and rebuilt from the run's {len(own)} checkpoint file(s)")
    return True


def restore_latest(checkpoint, directory, log=print, repair_index=True):
    """Restores the newest checkpoint of `directory` that restores; returns its path or None.

    With `repair_index` (the chief), the index is first checked (`check_index`) and afterwards
    names exactly the run's checkpoints up to the one restored.
    Raises ConfigError (one line, naming the files) if checkpoint files exist and none restores.
    """
    if repair_index:
        check_index(directory, log)
    paths = checkpoint_paths(directory)
    failed = []
    for path in reversed(paths):
        try:
            # Every object of `checkpoint` must be restored; the file may hold more (the epoch
            # metrics, restored separately), so the rest is expected to stay unused.
            checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
        except Exception as error:  # OpError, DataLoss, IndexError ("Read less bytes"), ...
            detail = str(error).strip().splitlines()[0][:100] if str(error).strip() else \
                type(error).__name__
            log(f"bnreg: skipping checkpoint {path}: it does not restore ({detail})")
            failed.append(os.path.basename(path))
            continue
        good = [p for p in paths if int(p.rsplit("-", 1)[1]) <= int(path.rsplit("-", 1)[1])]
        if repair_index:  # the manager made next reads this index
            _write_index(directory, path, good)
        return path
    if failed:
        raise ConfigError(f"{directory}: no checkpoint restores ({', '.join(failed)}); bnreg will "
                          "not start over them from step 0: move them aside or use a new --model_dir")
    return None


_MACHINE_ERRNOS = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
                   errno.EROFS: "Read-only file system", errno.EACCES: "Permission denied",
                   errno.EPERM: "Operation not permitted", errno.EIO: "Input/output error",
                   errno.EFBIG: "File too large"}


def _reason(error):
    """The machine's reason in a write error's text ('No space left on device', ...)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error)
    for reason in _MACHINE_ERRNOS.values():
        if reason in text:
            return reason
    return (text.strip().splitlines() or [type(error).__name__])[0][-120:]


@contextlib.contextmanager
def writing(what, last_checkpoint, remedy="repeat the command to resume from it",
            machine_only=False):
    """Inside the block, a write the machine refuses (TensorFlow's OpError, or an OSError with a
    machine's errno) raises `WriteFailed`: one line saying `what` failed and why, that the last
    checkpoint `last_checkpoint` (a path, None, or a function giving it) is intact, and `remedy`. With `machine_only`
    an OpError is taken only when its text names a machine's reason (a full disk, not an
    out-of-memory ResourceExhaustedError)."""
    try:
        yield
    except (tf.errors.OpError, OSError) as error:
        if isinstance(error, OSError) and error.errno not in _MACHINE_ERRNOS:
            raise
        if machine_only and isinstance(error, tf.errors.OpError) and not any(
                reason in str(error) for reason in _MACHINE_ERRNOS.values()):
            raise
        if callable(last_checkpoint):   # known only now (the loop saved on the way)
            last_checkpoint = last_checkpoint()
        last = os.path.basename(last_checkpoint) if last_checkpoint else None
        intact = (f"the last checkpoint, {last}, is intact" if last else
                  "no checkpoint was saved yet")
        raise WriteFailed(f"cannot write {what} ({_reason(error)}); {intact}: free space (or "
                          f"make the dir writable) and {remedy}") from None


def save_once(manager, step):
    """Saves `manager`'s checkpoint at `step` unless its newest one is already that step's.

    A write the machine refuses raises `WriteFailed` (the previous checkpoints stay intact: the
    manager writes a new one beside them and renames it into place)."""
    latest = manager.latest_checkpoint
    if latest is None or not latest.endswith(f"-{step}"):
        with writing(f"checkpoint ckpt-{step} in {manager.directory}", latest):
            manager.save(checkpoint_number=step)
