"""A run directory's rules: one writer, its config as its identity, foreign dirs left alone.

- `RunLock`: an exclusive `flock` on `<dir>/bnreg.lock`, holding host, PID and start time. The
  kernel (or the NFS server) drops the lock when its process dies, even by SIGKILL, so a stale
  lock is simply taken over (with a log line naming the dead holder). The file itself is never
  deleted (deleting a lock file races with a process about to lock it); releasing empties it.
- `check_model_dir`: the dir can be written, holds nothing foreign, and its `config.json` (the
  run's identity) equals the config asked, except for the fields that say where and how it runs.
- `remove_leftovers`: what a kill or a full disk left half-written (`bnreg_tf.files.write_atomically`
  writes every file so that nothing else can be).
"""
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import socket
import time

from bnreg_tf.run import layout
from bnreg_tf.run.config import ConfigError, RunConfig

LOCK_NAME = layout.LOCK
# Fields that may differ when a run is resumed: where data/outputs live and how it is executed.
RESUMABLE_FIELDS = ("data_dir", "download", "export", "model_dir", "strategy", "tpu",
                    "virtual_cpus", "eval_batch_size", "checkpoint_steps", "compilation",
                    "worker_timeout")


class RunDirBusy(ConfigError):
    """Another live process holds the run directory's lock."""


def _holder_text(info):
    if not info:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"PID {info.get('pid')} on {info.get('host')} (since {started})"


class RunLock:
    """`with RunLock(dir):` holds the directory exclusively; raises RunDirBusy when it is held.

    Re-entrant within a process (the study claims a run dir, then the trainer takes it again).
    """

    _held = {}   # realpath -> [fd, depth], this process's locks

    def __init__(self, directory, log=print, flag="--model_dir"):
        self.directory, self.log, self.flag = directory, log, flag
        self.path = os.path.join(directory, LOCK_NAME)
        self._key = None

    def _read(self, fd):
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            return json.loads(os.read(fd, 4096).decode() or "null")
        except ValueError:
            return None

    def acquire(self):
        os.makedirs(self.directory, exist_ok=True)
        self._key = os.path.realpath(self.path)
        if self._key in RunLock._held:
            RunLock._held[self._key][1] += 1
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = self._read(fd)
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirBusy(f"{self.flag}={self.directory} is in use by "
                                 f"{_holder_text(holder)}; wait for it, or stop it first") from None
            raise ConfigError(f"{self.flag}={self.directory}: cannot lock {self.path} "
                              f"({error.strerror}); use a local or NFS directory") from None
        previous = self._read(fd)
        if previous:
            self.log(f"bnreg: taking over {self.path} from {_holder_text(previous)}, which "
                     "ended without releasing it")
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                     "started": time.time()}).encode())
            os.fsync(fd)
        except OSError as error:   # a full disk, a quota: let go of the lock, say it in one line
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise ConfigError(f"{self.flag}={self.directory}: cannot write {self.path} "
                              f"({error.strerror})") from None
        RunLock._held[self._key] = [fd, 1]
        return self

    def release(self):
        held = RunLock._held.get(self._key)
        if held is None:
            return
        held[1] -= 1
        if held[1]:
            return
        del RunLock._held[self._key]
        try:
            os.ftruncate(held[0], 0)
        finally:
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *_):
        self.release()


def check_writable(path, flag):
    """Creates directory `path` if needed and proves a file can be written there (one-line error)."""
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"{flag}={path}: exists and is not a directory")
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".bnreg-write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ConfigError(f"{flag}={path}: cannot write there "
                          f"({error.strerror or type(error).__name__})") from None


def check_output_file(path, flag):
    """Checks that file `path` can be written (its directory is created; '' means the cwd)."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"{flag}={path}: is a directory; expected a file path")
    try:
        check_writable(directory, flag)
    except ConfigError as error:
        detail = str(error).split(": ", 1)[1]
        raise ConfigError(f"{flag}={path}: {detail}") from None


def read_config(model_dir):
    """The RunConfig of `model_dir/config.json`, None without one; ConfigError if unreadable."""
    path = os.path.join(model_dir, layout.CONFIG)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return RunConfig.from_json(f.read())
    except (ValueError, TypeError, OSError) as error:
        detail = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise ConfigError(f"{path}: unreadable ({detail}); restore it or use a new "
                          "--model_dir") from None


def first_difference(previous, config):
    """(field, old, new) of the first field that makes `config` a different run, or None."""
    for field in dataclasses.fields(RunConfig):
        if field.name in RESUMABLE_FIELDS:
            continue
        old, new = getattr(previous, field.name), getattr(config, field.name)
        if old != new:
            return field.name, old, new
    return None


def check_model_dir(config, writable=True, compare=True):
    """Raises ConfigError unless `config.model_dir` can hold this run; True if it holds it already.

    Refuses a non-empty dir without bnreg's config.json (never writes into someone else's files),
    checkpoints without config.json (their config is unknown: `--init_from` branches from them),
    and (with `compare`) a config.json of a different run. Writes nothing but a removed probe.
    """
    model_dir = config.model_dir
    if writable:
        check_writable(model_dir, "--model_dir")
    elif not os.path.isdir(model_dir):
        return False
    previous = read_config(model_dir)
    if previous is None:
        # study.json alone: the study's record of a run that failed before it wrote anything
        entries = set(os.listdir(model_dir)) - {LOCK_NAME, layout.STUDY_RECORD}
        if layout.CHECKPOINTS in entries:
            raise ConfigError(
                f"--model_dir={model_dir} holds checkpoints but no config.json, so the run they "
                f"belong to is unknown; start a new --model_dir with --init_from={model_dir}")
        if entries:
            raise ConfigError(
                f"--model_dir={model_dir} is not empty and holds no bnreg config.json "
                f"({len(entries)} entries, e.g. {sorted(entries)[0]!r}); use an empty or new dir")
        return False
    difference = compare and first_difference(previous, config)
    if difference:
        name, old, new = difference
        raise ConfigError(
            f"--model_dir={model_dir} holds a run with a different config (--{name}={old!r} "
            f"there, {new!r} asked); repeat that run's flags, or branch it: "
            f"--init_from={model_dir} --model_dir=NEW_DIR starts a new run from its weights")
    return True


def remove_leftovers(model_dir, log=print):
    """Removes what a kill or a full disk left half-written: `*.partial`, `checkpoints/*_temp`
    and `best/*_temp` (early stopping's checkpoint)."""
    found = []
    for root in (model_dir, os.path.join(model_dir, layout.CHECKPOINTS),
                 os.path.join(model_dir, layout.BEST_DIR)):
        if not os.path.isdir(root):
            continue
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if name.endswith(".partial") or (root != model_dir and name.endswith("_temp")):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                found.append(os.path.relpath(path, model_dir))
    export = os.path.join(model_dir, layout.EXPORT)
    previous = f"{export}.previous"
    if os.path.isdir(previous):  # killed while swapping in a new export: keep the older one
        if os.path.exists(export):
            shutil.rmtree(previous)
        else:
            os.replace(previous, export)
        found.append("export.previous")
    if found:
        log(f"bnreg: removed leftovers of an interrupted write: {', '.join(sorted(found))}")
    return found
