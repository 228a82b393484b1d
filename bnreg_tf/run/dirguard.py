"""A run directory is untrusted input: nothing bnreg removes, replaces or writes in place may lead
out of it, and each of bnreg's names must be of the kind bnreg makes.

- `inside(root, path)`: `path`, resolved (every symbolic link followed), lies in `root`, resolved.
- `check_inside(root, path, flag)`: the same, or a one-line ConfigError naming the first link on
  the way that leads out. Called on every path bnreg removes or replaces, and on the folders it
  hands to `tf.train.CheckpointManager` (which deletes old checkpoints in them).
- `check_run_dir(root, flag)`: the whole of bnreg's part of a run dir, before anything is written:
  its names of the right kind (`checkpoints` a folder, `bnreg.lock` a file, ...) and no symbolic
  link among them or below its folders that leads outside the dir. Entries bnreg does not know
  are never touched, so they are not looked at.

Links that stay inside the run dir are allowed (and followed); links that lead out are refused,
never followed and never deleted: the message names the link and asks to replace it.
- `undo_on_failure(root)`: a fresh run dir's start-up is all or nothing.
"""
import contextlib
import os
import shutil
import stat

from bnreg_tf.run import layout
from bnreg_tf.run.config import ConfigError

FILES = (layout.CONFIG, layout.LOCK, layout.LOG, layout.NORMALIZATION, layout.INITIAL_NORMS,
         layout.BEST_FILE, layout.RESULTS, layout.STUDY_RECORD)
FOLDERS = (layout.CHECKPOINTS, layout.TENSORBOARD, layout.BEST_DIR, layout.EXPORT,
           f"{layout.EXPORT}.previous")


def _real(path):
    return os.path.realpath(os.path.abspath(path))


def inside(root, path):
    """True when `path`, with every symbolic link resolved, is `root` or lies below it."""
    real_root, real = _real(root), _real(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _first_escaping_link(root, path):
    """The first component of `path` below `root` that is a symbolic link leading out, or None."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    current = os.path.abspath(root)
    for part in relative.split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current) and not inside(root, current):
            return current
    return None


def _refuse_link(root, link, flag):
    target = os.readlink(link)
    name = os.path.relpath(link, root)
    raise ConfigError(f"{flag}={root}: {name} is a symbolic link to {target}, outside the run "
                      "dir; bnreg never writes or deletes through such a link: replace it by "
                      "a folder or file of its own (or remove the link) and repeat the command")


def check_inside(root, path, flag="--model_dir"):
    """Returns `path` if it resolves inside `root`; else ConfigError naming the link (one line)."""
    if inside(root, path):
        return path
    link = _first_escaping_link(root, path)
    if link is None:   # `root` itself is fine; `path` was given outside it
        raise ConfigError(f"{flag}={root}: {path} lies outside the run dir; bnreg will not "
                          "touch it")
    _refuse_link(root, link, flag)


def _check_kind(root, name, flag):
    path = os.path.join(root, name)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:   # absent, or a dangling link (then written as a new file)
        return
    want_folder = name in FOLDERS
    if want_folder and not stat.S_ISDIR(mode):
        raise ConfigError(f"{flag}={root}: {name} is a file, not bnreg's {name}/ folder; move "
                          "it aside and repeat the command")
    if not want_folder and not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"{flag}={root}: {name} is {kind}, not bnreg's {name}; move it aside "
                          "and repeat the command")


def _links_below(root, folder):
    """Symbolic links anywhere below `folder` (not followed)."""
    for directory, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                yield path


def check_run_dir(root, flag="--model_dir"):
    """Raises ConfigError (one line) unless bnreg's part of `root` is safe to write: its names of
    the right kind, and no symbolic link among them, below its folders or among the leftovers
    (`*.partial`) that leads out of `root`. Reads only."""
    if not os.path.isdir(root):
        return
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        ours = name in FILES or name in FOLDERS or name.endswith(".partial")
        if not ours:
            continue
        if os.path.islink(path) and not inside(root, path):
            _refuse_link(root, path, flag)
        if name in FILES or name in FOLDERS:
            _check_kind(root, name, flag)
        if name in FOLDERS and os.path.isdir(path):
            for link in _links_below(root, path):
                if not inside(root, link):
                    _refuse_link(root, link, flag)


def _created_names(root, before):
    try:
        now = set(os.listdir(root))
    except OSError:
        return []
    return sorted(name for name in now - before if name != layout.LOCK and
                  (name in FILES or name in FOLDERS or name.endswith(".partial")))


@contextlib.contextmanager
def undo_on_failure(root, active=True):
    """A fresh run dir's start-up, all or nothing: if the block raises (a refused --init_from,
    bad data, a signal, a full disk), each of bnreg's entries it created in `root` is removed
    again (a link as a link), so the same command can be repeated once the cause is fixed. The
    lock file stays (it is never deleted: `runlock.RunLock`). Inactive unless `active`."""
    if not active:
        yield
        return
    before = set(os.listdir(root)) if os.path.isdir(root) else set()
    try:
        yield
    except BaseException:
        for name in _created_names(root, before):
            path = os.path.join(root, name)
            try:
                if os.path.islink(path) or not os.path.isdir(path):
                    os.remove(path)
                elif inside(root, path):
                    shutil.rmtree(path)
            except OSError:
                pass   # the original error is the one to report
        raise
