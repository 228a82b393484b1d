"""`--dataset=folder --data_dir=DIR`: a folder of labelled images, ImageNet-style.

    DIR/train/<class>/*.jpg|*.jpeg|*.png      (required)
    DIR/test/<class>/*.jpg|*.jpeg|*.png       (optional; else a test share is carved off train)

Classes are the sorted sub-folder names of `train/` (label = index); `test/` may lack classes but
not add any. Files are listed in sorted order and then put in one fixed pseudo-random order
(seed 0), so the holdout and the carved test share, which are slices of that order
(`train[a:b]`, as TFDS writes them), hold every class. Images are decoded in tf.data; grey and
colour files may mix: the channel count is that of the first image in sorted order (1 or 3) and
every image is decoded to it.
"""
import functools
import os
import re

import numpy as np

from bnreg_tf.data.spec import DataError, DatasetSpec, default_recipe

NAME = "folder"   # the --dataset value

EXTENSIONS = (".jpg", ".jpeg", ".png")
_SLICE = re.compile(r"^(train|test)(?:\[(\d*):(\d*)\])?$")
_ORDER_SEED = 0
_SIZE_SAMPLE = 16   # files whose shape decides the recipe (see catalog.default_recipe)


def _listing(data_dir, part, classes=None):
    """`(paths, labels)` of DIR/part in sorted order; `classes` given for test/."""
    root = os.path.join(data_dir, part)
    found = sorted(entry for entry in os.listdir(root) if os.path.isdir(os.path.join(root, entry)))
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"--data_dir={data_dir}: {part}/ has classes that train/ lacks: "
                        f"{', '.join(unknown[:5])}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        directory = os.path.join(root, name)
        if not os.path.isdir(directory):
            continue
        for file in sorted(os.listdir(directory)):
            if file.lower().endswith(EXTENSIONS):
                paths.append(os.path.join(directory, file))
                labels.append(label)
    return classes, paths, labels


def _check_dir(data_dir):
    if not data_dir:
        raise DataError("--data_dir: --dataset=folder needs --data_dir=DIR with DIR/train/<class>/")
    if not os.path.isdir(os.path.join(data_dir, "train")):
        raise DataError(f"--data_dir={data_dir}: expected DIR/train/<class>/*.jpg|png "
                        "(and optionally DIR/test/<class>/)")


def listing(data_dir, part):
    """`(class_names, paths, labels)` of `part` ("train" or "test"), in the fixed order."""
    _check_dir(data_dir)
    classes, paths, labels = _listing(data_dir, "train")
    if part == "test":
        _, paths, labels = _listing(data_dir, "test", classes)
    order = np.random.default_rng(_ORDER_SEED).permutation(len(paths))
    return tuple(classes), [paths[i] for i in order], [labels[i] for i in order]


def image_shape(path):
    """`(height, width, channels)` from a PNG or JPEG header (channels 1 = grey, else 3).

    Read without TensorFlow: the spec is made while flags are checked, before the binaries
    configure TensorFlow's devices (which any TF op would initialise).
    """
    with open(path, "rb") as f:
        head = f.read(26)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            return height, width, 1 if head[25] in (0, 4) else 3
        if head[:2] != b"\xff\xd8":
            raise ValueError(f"{path} is neither a PNG nor a JPEG file")
        f.seek(2)
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                raise ValueError(f"{path}: no JPEG frame header found")
            length = int.from_bytes(f.read(2), "big")
            if marker[1] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                             0xCE, 0xCF):   # start of frame: precision, height, width, components
                frame = f.read(6)
                height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
                return height, width, 1 if frame[5] == 1 else 3
            f.seek(length - 2, 1)


@functools.lru_cache(maxsize=None)
def folder_spec(data_dir):
    """The DatasetSpec of an image folder (see the module docstring)."""
    classes, paths, _ = listing(data_dir, "train")
    if len(classes) < 2 or not paths:
        raise DataError(f"--data_dir={data_dir}: train/ needs at least 2 class folders with "
                        f"{'/'.join(EXTENSIONS)} images (found {len(classes)} classes, "
                        f"{len(paths)} images)")
    has_test = os.path.isdir(os.path.join(data_dir, "test"))
    test_examples = len(listing(data_dir, "test")[1]) if has_test else 0
    try:
        step = max(1, len(paths) // _SIZE_SAMPLE)
        shapes = {image_shape(path) for path in paths[::step][:_SIZE_SAMPLE]}
        channels = image_shape(sorted(paths)[0])[2]
    except (OSError, ValueError) as error:  # unreadable or not an image
        raise DataError(f"--data_dir={data_dir}: cannot read an image header "
                        f"({str(error).strip().splitlines()[0][:160]})") from None
    heights, widths = {s[0] for s in shapes}, {s[1] for s in shapes}
    height = heights.pop() if len(heights) == 1 else 0
    width = widths.pop() if len(widths) == 1 else 0
    image_size, augment, _ = default_recipe(height, width, channels)
    return DatasetSpec(NAME, len(classes), image_size, channels, len(paths), 0,
                       "test" if has_test else "", test_examples, augment, None,
                       variable_size=True, source="folder", class_names=classes)


def load(data_dir, split):
    """`{"image": uint8 [H, W, C], "label": int64}` of `split` (`train`, `test`, `train[a:b]`)."""
    import tensorflow as tf

    match = _SLICE.match(split.replace(" ", ""))
    if not match:
        raise DataError(f"--dataset=folder: unknown split {split!r} (expected train, test or "
                        "train[a:b])")
    part, start, stop = match.groups()
    channels = folder_spec(data_dir).channels
    _, paths, labels = listing(data_dir, part)
    begin = int(start) if start else 0
    end = int(stop) if stop else len(paths)
    paths, labels = paths[begin:end], labels[begin:end]

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                   expand_animations=False)
        image.set_shape([None, None, channels])
        return {"image": image, "label": label}

    files = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(labels, tf.int64)))
    return files.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
