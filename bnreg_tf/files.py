"""Writing files so that a kill or a full disk never leaves half of one (the lowest floor:
standard library only, used by every floor that writes)."""
import os


class WriteFailed(Exception):
    """The machine refused a write (a full disk, a quota, a read-only or lost mount); the message
    is one line saying what failed, what is intact and how to go on (the binaries exit 1)."""


def staging_path(path):
    """The name `write_atomically` writes `path`'s text to before the rename: beside it, hidden,
    ending in `.partial` (a leftover the run dir's cleanup knows), and never longer than a file
    name may be whenever `path`'s own name fits (its base name is cut to 100 characters)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name[:100]}.{os.getpid()}.partial")


def write_atomically(path, text):
    """Writes `text` beside `path` and renames it into place.

    Guarantees: `path` holds either its old content or all of `text`, whatever happens (a kill, a
    full disk, a signal raised mid-write); on any failure the staging file is removed and the
    error raised. `path` itself is replaced, never written through: a symbolic link or hard
    link at `path` is replaced by the new file and whatever it pointed to is left untouched.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    staging = staging_path(path)
    try:
        with open(staging, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    except BaseException:
        try:
            os.remove(staging)
        except OSError:
            pass
        raise


def json_kind(value):
    """What a parsed JSON value is, in JSON's words ("a list", "null", ...), for messages."""
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "a list"),
                       (str, "a string"), ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return type(value).__name__
