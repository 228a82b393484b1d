"""`--dataset=folder --data_dir=DIR`: a folder of labelled images, ImageNet-style.

    DIR/train/<class>/*.jpg|*.jpeg|*.png      (required)
    DIR/test/<class>/*.jpg|*.jpeg|*.png       (optional; else a test share is carved off train)

Classes are the sorted sub-folders of `train/` (label = index); `test/` may lack classes but
not add any. Before anything trains, one pass reads every file's header (`folder_scan`: what is
listed, symbolic links, bad files, empty classes). Files are listed in sorted order and then put
in one fixed pseudo-random order (seed 0), so the holdout and the carved test share, which are
slices of that order (`train[a:b]`, as TFDS writes them), hold every class. Images are decoded
in tf.data; grey and colour files may mix: the channel count is that of the first image in
sorted order (1 or 3) and every image is decoded to it.

The recipe (`recipe`): images of one size train at it (pad-and-crop up to 64 px, ImageNet's
random-resized crops above); images of varying sizes up to 64 px are resized to the largest
side and padded-and-cropped; larger varying images take random-resized crops of 224 px.
"""
import re

import numpy as np

from bnreg_tf.data import folder_scan
from bnreg_tf.data.images import read_header
from bnreg_tf.data.spec import LARGE_IMAGE_SIZE, SMALL_IMAGE, DataError, DatasetSpec, default_recipe

NAME = "folder"   # the --dataset value
EXTENSIONS = folder_scan.EXTENSIONS
_SLICE = re.compile(r"^(train|test)(?:\[(\d*):(\d*)\])?$")
_ORDER_SEED = 0
_AUGMENTS = {"crop": "4-px pad-and-crop", "crop_flip": "4-px pad-and-crop and flips",
             "goyal": "random-resized crops and flips (ImageNet's recipe)"}


def listing(data_dir, part):
    """`(class_names, paths, labels)` of `part` ("train" or "test"), in the fixed order."""
    scanned = folder_scan.scan(data_dir)
    entries = scanned.test if part == "test" else scanned.train
    order = np.random.default_rng(_ORDER_SEED).permutation(len(entries))
    return scanned.classes, [entries[i][0] for i in order], [entries[i][1] for i in order]


def image_shape(path):
    """`(height, width, channels)` from a PNG or JPEG header (channels 1 = grey, else 3)."""
    header = read_header(path)
    return header.height, header.width, header.channels


def recipe(shapes, channels):
    """`(image_size, augment, variable_size, why)` of images of `shapes` ((h, w, c), ...).

    A folder's spec is always `variable_size` all the same: test/ may hold other sizes, so raw
    batches (bnreg-eval, the study's test scores) hold one image."""
    heights, widths = {s[0] for s in shapes}, {s[1] for s in shapes}
    largest = max(max(heights), max(widths))
    if len(heights) == 1 and len(widths) == 1:
        height, width = heights.pop(), widths.pop()
        size, augment, variable = default_recipe(height, width, channels)
        why = f"all {height}x{width} px: trained at {size}x{size}"
    elif largest <= SMALL_IMAGE:
        size, augment, variable = largest, "crop_flip" if channels == 3 else "crop", True
        why = (f"varying sizes ({min(min(heights), min(widths))}..{largest} px), all small: "
               f"each resized to {size}x{size} (the largest side)")
    else:
        size, augment, variable = LARGE_IMAGE_SIZE, "goyal", True
        why = (f"varying sizes ({min(min(heights), min(widths))}..{largest} px): crops of "
               f"{size}x{size}")
    why += (f", {_AUGMENTS.get(augment, augment)}; change with --image_size=N and "
            "--augment=none|crop|crop_flip|goyal|randaugment")
    return size, augment, variable, why


def folder_spec(data_dir):
    """The DatasetSpec of an image folder (see the module docstring)."""
    scanned = folder_scan.scan(data_dir)
    if len(scanned.classes) < 2 or not scanned.train:
        raise DataError(f"--data_dir={data_dir}: train/ needs at least 2 class folders with "
                        f"{'/'.join(EXTENSIONS)} images (found {len(scanned.classes)} classes, "
                        f"{len(scanned.train)} images)")
    image_size, augment, _, why = recipe(scanned.shapes, scanned.channels)
    grey = sum(1 for shape in scanned.shapes if shape[2] == 1)
    if 0 < grey < len(scanned.shapes):
        why += (f"; {grey} grey and {len(scanned.shapes) - grey} colour images, all decoded to "
                f"{scanned.channels} channel{'s' if scanned.channels > 1 else ''} (the first "
                "image's)")
    return DatasetSpec(NAME, len(scanned.classes), image_size, scanned.channels,
                       len(scanned.train), 0, "test" if scanned.has_test else "",
                       len(scanned.test), augment, None, variable_size=True, source="folder",
                       class_names=scanned.classes, recipe_note=why, skipped=scanned.skipped,
                       dropped_classes=scanned.dropped, ignored_files=scanned.ignored)


def check(data_dir, skip_bad=False, drop_empty=False):
    """One line (DataError) for bad files or empty classes, unless the flags allow them."""
    folder_scan.check(folder_scan.scan(data_dir), skip_bad, drop_empty)


def load(data_dir, split):
    """`{"image": uint8 [H, W, C], "label": int64}` of `split` (`train`, `test`, `train[a:b]`)."""
    import tensorflow as tf

    match = _SLICE.match(split.replace(" ", ""))
    if not match:
        raise DataError(f"--dataset=folder: unknown split {split!r} (expected train, test or "
                        "train[a:b])")
    part, start, stop = match.groups()
    channels = folder_scan.scan(data_dir).channels
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
