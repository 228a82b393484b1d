"""A run directory's one writer: an exclusive lock on `<dir>/bnreg.lock` (`RunLock`).

The lock is a `flock` holding host, PID and start time. The kernel (or the NFS server) drops it
when its process dies, even by SIGKILL, so a stale lock is simply taken over (with a log line
naming the dead holder). The file itself is never deleted (deleting a lock file races with a
process about to lock it); releasing empties it. A lock path that is a link, a directory, a FIFO
or a hard link is refused in one line (the run dir is untrusted input, `bnreg_tf.run.dirguard`).
"""
import errno
import fcntl
import json
import os
import socket
import stat
import time

from bnreg_tf.run import layout
from bnreg_tf.run.config import ConfigError

LOCK_NAME = layout.LOCK


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

    def _open(self):
        """The lock file's descriptor: a regular file of its own (never a link, a folder, a FIFO
        or a hard link shared with another name: its content is written in place)."""
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ConfigError(f"{self.flag}={self.directory}: exists and is not a directory "
                              "(not a bnreg run dir); move it aside and repeat the command")
        os.makedirs(self.directory, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as error:
            kind = {errno.ELOOP: "is a symbolic link", errno.EISDIR: "is a directory"}.get(
                error.errno, f"cannot be opened ({error.strerror})")
            raise ConfigError(f"{self.flag}={self.directory}: {self.path} {kind}, not bnreg's "
                              "lock file; move it aside and repeat the command") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            os.close(fd)
            kind = "is not a regular file" if not stat.S_ISREG(info.st_mode) else \
                f"is a hard link ({info.st_nlink} names; bnreg writes it in place)"
            raise ConfigError(f"{self.flag}={self.directory}: {self.path} {kind}, not bnreg's "
                              "lock file; move it aside and repeat the command")
        return fd

    def acquire(self):
        """Takes the lock (RunDirBusy when another live process holds it; ConfigError, one line,
        when the dir or its lock file is not what bnreg makes or cannot be written)."""
        self._key = os.path.realpath(self.path)
        if self._key in RunLock._held:
            RunLock._held[self._key][1] += 1
            return self
        fd = self._open()
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
