"""One pass over an image folder before anything trains on it: every file listed, every header
read (`bnreg_tf.data.images`, no pixel is decoded), every problem found at once.

The rules (also in README.md, "Your own images"):
- classes are the sub-folders of `train/`, sorted; names starting with "." (`.ipynb_checkpoints`,
  `.DS_Store`, macOS `._x.jpg` files) are ignored, in `train/` and `test/` and in class folders;
- images are the files named `*.jpg`, `*.jpeg` or `*.png` (any case) of a class folder; other
  files and sub-folders are ignored (and counted);
- symbolic links are followed, for class folders and for images, wherever they point (bnreg
  only reads them); a link that points nowhere is an unreadable file;
- one file is one image: a file reached twice (by links, or hard links, anywhere in `train/`
  and `test/`) is a bad entry, since it would put one image in two splits (a test image that
  was trained on);
- a bad entry (unreadable, corrupt, truncated, not PNG/JPEG, a duplicate, a CMYK JPEG in a grey
  folder) is refused with one line naming it (`check`); with `skip_bad` (`--skip_bad_images`)
  it is left out and counted;
- a class folder of `train/` without images is refused with one line (it would still get an
  output); with `drop_empty` (`--drop_empty_classes`) it is left out (with its `test/` images)
  and named.
`scan` always leaves bad entries and empty classes out of its listing (so every reader of the
folder sees the same images and labels); `check`, called by each run's preflight and by
`bnreg-eval`, refuses them unless the run allows it.
"""
import dataclasses
import functools
import os

from bnreg_tf.data.images import BadImage, read_header
from bnreg_tf.data.spec import DataError

EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """What one pass over `DIR/train` (and `DIR/test`) found; paths are sorted, labels index
    `classes`."""

    data_dir: str
    classes: tuple          # the kept class names; label i is classes[i]
    train: tuple            # ((path, label), ...) of the good training images
    test: tuple             # the same for test/ (empty without test/)
    has_test: bool
    shapes: tuple           # (height, width, channels) of each training image, as `train`
    channels: int           # of the first training image in sorted order (1 or 3)
    skipped: tuple = ()     # ((path relative to DIR, reason), ...): the bad entries, left out
    dropped: tuple = ()     # the empty classes of train/, left out (with their test/ images)
    ignored: int = 0        # files that are not images by their name, hidden ones included


def check_dir(data_dir):
    if not data_dir:
        raise DataError("--data_dir: --dataset=folder needs --data_dir=DIR with DIR/train/<class>/")
    if not os.path.isdir(os.path.join(data_dir, "train")):
        raise DataError(f"--data_dir={data_dir}: expected DIR/train/<class>/*.jpg|png "
                        "(and optionally DIR/test/<class>/)")


def _visible(directory):
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def _class_folders(root):
    return [name for name in _visible(root) if os.path.isdir(os.path.join(root, name))]


def _files(directory):
    """`(image paths, ignored count)` of one class folder."""
    images, ignored = [], len(os.listdir(directory))
    for name in _visible(directory):
        path = os.path.join(directory, name)
        if name.lower().endswith(EXTENSIONS) and not os.path.isdir(path):
            images.append(path)
    return images, ignored - len(images)


def _read(path, seen, data_dir):
    """The header of `path`, or the reason it is a bad entry (str)."""
    try:
        stat = os.stat(path)
        first = seen.setdefault((stat.st_dev, stat.st_ino), path)
        if first != path:
            return f"the same file as {os.path.relpath(first, data_dir)} (one image, two entries)"
        return read_header(path)
    except BadImage as error:
        return str(error)
    except OSError as error:   # a dangling link, no permission, an I/O error
        return f"unreadable ({error.strerror or type(error).__name__})"


def _part(data_dir, part, classes, seen, bad):
    """{class: [(path, header), ...]} of `part`; bad entries go to `bad`; + ignored count."""
    root = os.path.join(data_dir, part)
    found, ignored = {}, 0
    for name in classes:
        directory = os.path.join(root, name)
        if not os.path.isdir(directory):
            continue
        paths, skipped = _files(directory)
        ignored += skipped
        found[name] = []
        for path in paths:
            header = _read(path, seen, data_dir)
            if isinstance(header, str):
                bad.append((os.path.relpath(path, data_dir), header))
            else:
                found[name].append((path, header))
    return found, ignored


def _grey_folder_cmyk(data_dir, train, test, bad):
    """The folder's channels (its first training image's); CMYK JPEGs of a grey folder become
    bad entries (TensorFlow decodes them to colour only: docs/references.md §8.13)."""
    first = min(((path, header) for entries in train.values() for path, header in entries),
                default=None)
    if first is None or first[1].channels == 3:
        return 3
    for entries in (*train.values(), *test.values()):
        for path, header in entries:
            if header.cmyk:
                bad.append((os.path.relpath(path, data_dir), "a CMYK JPEG in a grey folder "
                            "(TensorFlow decodes CMYK to colour only)"))
        entries[:] = [(path, header) for path, header in entries if not header.cmyk]
    return 1


def check(folder, skip_bad=False, drop_empty=False):
    """Refuses (DataError, one line) the bad entries and empty classes `folder` (a `FolderScan`)
    found, unless `skip_bad` / `drop_empty` allow leaving them out."""
    bad, empty = folder.skipped, folder.dropped
    if bad and not skip_bad:
        more = f" ({len(bad)} bad files in all)" if len(bad) > 1 else ""
        raise DataError(f"--data_dir={folder.data_dir}: {bad[0][0]}: {bad[0][1]}{more}; fix or "
                        "remove it, or pass --skip_bad_images to leave bad files out (counted "
                        "in the start-up summary and results.json)")
    if empty and not drop_empty:
        more = f" ({len(empty)} empty classes in all)" if len(empty) > 1 else ""
        raise DataError(f"--data_dir={folder.data_dir}: train/{empty[0]}/ holds no .jpg/.jpeg/"
                        f".png images{more}; its class would still get an output: add images, "
                        "remove the folder, or pass --drop_empty_classes")


@functools.lru_cache(maxsize=None)
def scan(data_dir):
    """The `FolderScan` of `data_dir` (module docstring): bad entries and empty classes are left
    out and recorded; `check` refuses them unless the run allows it."""
    check_dir(data_dir)
    classes = _class_folders(os.path.join(data_dir, "train"))
    has_test = os.path.isdir(os.path.join(data_dir, "test"))
    unknown = sorted(set(_class_folders(os.path.join(data_dir, "test"))) - set(classes)) \
        if has_test else []
    if unknown:
        raise DataError(f"--data_dir={data_dir}: test/ has classes that train/ lacks: "
                        f"{', '.join(unknown[:5])}")
    seen, bad = {}, []
    train, ignored = _part(data_dir, "train", classes, seen, bad)
    test, ignored_test = _part(data_dir, "test", classes, seen, bad) if has_test else ({}, 0)
    channels = _grey_folder_cmyk(data_dir, train, test, bad)
    empty = tuple(name for name in classes if not train[name])
    kept = tuple(name for name in classes if name not in empty)
    train_entries = [(path, label, header) for label, name in enumerate(kept)
                     for path, header in train[name]]
    test_entries = tuple((path, label) for label, name in enumerate(kept)
                         for path, _ in test.get(name, ()))
    return FolderScan(data_dir, kept, tuple((path, label) for path, label, _ in train_entries),
                      test_entries, has_test,
                      tuple((h.height, h.width, h.channels) for _, _, h in train_entries),
                      channels, tuple(bad), empty, ignored + ignored_test)
