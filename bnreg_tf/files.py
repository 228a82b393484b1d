"""Writing files so that a kill or a full disk never leaves half of one (the lowest floor:
standard library only, used by every floor that writes)."""
import os


def write_atomically(path, text):
    """Writes `text` beside `path` and renames it into place (a kill never leaves half a file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    staging = f"{path}.{os.getpid()}.partial"
    try:
        with open(staging, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    except OSError:
        if os.path.exists(staging):
            os.remove(staging)
        raise
