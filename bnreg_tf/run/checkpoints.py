"""Finding the checkpoint to resume from, from the checkpoint files themselves.

`tf.train.CheckpointManager` keeps an index file (`checkpoints/checkpoint`); when that is lost or
names deleted files, `tf.train.latest_checkpoint` answers None and a run would silently start
again from step 0 over intact checkpoints. `restore_latest` instead lists `ckpt-N.index` files,
tries them newest first, skips (with one line each) those that fail to restore, rewrites the
index to the ones that remain, and refuses to start from scratch while checkpoint files exist.
"""
import os
import re

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

    lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in paths]
    write_atomically(os.path.join(directory, "checkpoint"), "\n".join(lines) + "\n")


def restore_latest(checkpoint, directory, log=print, repair_index=True):
    """Restores the newest checkpoint of `directory` that restores; returns its path or None.

    Raises ConfigError (one line, naming the files) if checkpoint files exist and none restores.
    """
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


def save_once(manager, step):
    """Saves `manager`'s checkpoint at `step` unless its newest one is already that step's."""
    latest = manager.latest_checkpoint
    if latest is None or not latest.endswith(f"-{step}"):
        manager.save(checkpoint_number=step)
