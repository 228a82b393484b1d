"""Image folders checked before training (issue 26): every header read, the bad files named, the
rules for hidden files, symbolic links, duplicates and empty classes, and the size recipe.
In-process and fast; the binaries' side is in tests/test_own_data.py."""
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bnreg_tf.data import catalog, folder, folder_scan
from bnreg_tf.data.images import BadImage, read_header
from bnreg_tf.data.spec import DataError


def _save(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _encode(array, fmt, **options):
    return _save(Image.fromarray(array), fmt, **options)


def _rgb(height=12, width=20, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


GOOD = {
    "rgb.png": (_encode(_rgb(), "PNG"), (12, 20, 3)),
    "grey.png": (_encode(_rgb()[..., 0], "PNG"), (12, 20, 1)),
    "grey16.png": (_encode(_rgb()[..., 0].astype(np.uint16) * 200, "PNG"), (12, 20, 1)),
    "palette.png": (_save(Image.fromarray(_rgb()).convert("P"), "PNG"), (12, 20, 3)),
    "rgb.jpg": (_encode(_rgb(), "JPEG"), (12, 20, 3)),
    "progressive.jpg": (_encode(_rgb(), "JPEG", progressive=True), (12, 20, 3)),
    "grey.jpg": (_encode(_rgb()[..., 0], "JPEG"), (12, 20, 1)),
    "trailing.jpg": (_encode(_rgb(), "JPEG") + b"camera notes after EOI", (12, 20, 3)),
    "trailing.png": (_encode(_rgb(), "PNG") + b"xx", (12, 20, 3)),
}
_png, _jpg = _encode(_rgb(), "PNG"), _encode(_rgb(), "JPEG")
BAD = {
    "truncated.png": (_png[:132], "truncated PNG"),
    "cut_before_iend.png": (_png[:-5], "truncated PNG"),
    "garbage_header.png": (_png[:8] + os.urandom(64), "IHDR"),
    "bad_crc.png": (_png[:29] + bytes([_png[29] ^ 0xFF]) + _png[30:], "CRC"),
    "no_eoi.jpg": (_jpg[:-2], "no end-of-image marker"),
    "truncated.jpg": (_jpg[:len(_jpg) // 2], "corrupt JPEG"),
    "text.jpg": (b"<html>not found</html>", "neither PNG nor JPEG"),
    "empty.png": (b"", "empty file"),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_headers_give_the_shape_tensorflow_decodes(tmp_path, name):
    data, shape = GOOD[name]
    path = tmp_path / name
    path.write_bytes(data)
    header = read_header(str(path))
    assert (header.height, header.width, header.channels) == shape
    decoded = tf.io.decode_image(data, channels=header.channels, expand_animations=False)
    assert tuple(decoded.shape) == shape


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_named_before_tensorflow_would_fail_on_them(tmp_path, name):
    data, reason = BAD[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(BadImage, match=reason):
        read_header(str(path))
    with pytest.raises(tf.errors.InvalidArgumentError):   # what training would have met
        tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


def test_other_formats_under_an_image_name_are_bad_files_by_rule(tmp_path):
    """TensorFlow decodes a GIF named .png, but bnreg reads PNG and JPEG only (documented)."""
    path = tmp_path / "gif.png"
    path.write_bytes(_encode(_rgb(), "GIF"))
    with pytest.raises(BadImage, match=r"neither PNG nor JPEG data \(starts with b'GIF8'\)"):
        read_header(str(path))


def make_folder(root, classes=("ant", "bee", "cow"), per_class=4, test=2, sizes=(10,)):
    """PNG images, class i saturating channel i; sizes cycle through `sizes`."""
    rng = np.random.default_rng(0)
    for part, count in (("train", per_class), ("test", test)):
        for label, name in enumerate(classes):
            os.makedirs(os.path.join(root, part, name), exist_ok=True)
            for i in range(count):
                side = sizes[i % len(sizes)]
                image = rng.integers(0, 200, (side, side, 3), dtype=np.uint8)
                image[..., label % 3] = 255
                Image.fromarray(image).save(os.path.join(root, part, name, f"{i}.png"))
    return root


def test_hidden_and_non_image_entries_are_ignored_and_counted(tmp_path):
    root = make_folder(str(tmp_path / "d"))
    os.makedirs(os.path.join(root, "train", ".ipynb_checkpoints"))
    (tmp_path / "d" / "train" / "ant" / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (tmp_path / "d" / "train" / "ant" / "notes.txt").write_text("labels checked")
    os.makedirs(os.path.join(root, "train", "bee", "extra"))
    scanned = folder_scan.scan(root)
    assert scanned.classes == ("ant", "bee", "cow") and not scanned.skipped
    assert scanned.ignored == 3 and len(scanned.train) == 12


def test_symbolic_links_are_followed_and_one_file_is_one_image(tmp_path):
    store = make_folder(str(tmp_path / "store"), classes=("dog",), per_class=3, test=0)
    root = make_folder(str(tmp_path / "d"), classes=("ant", "bee"))
    os.symlink(os.path.join(store, "train", "dog"), os.path.join(root, "train", "dog"))
    os.symlink(os.path.join(store, "train", "dog", "0.png"),
               os.path.join(root, "train", "ant", "linked.png"))
    scanned = folder_scan.scan(root)
    assert scanned.classes == ("ant", "bee", "dog")   # the linked class folder
    assert sum(1 for _, label in scanned.train if label == 2) == 2   # dog/0.png is ant's now
    # The same file twice (a link in ant/ and the file in dog/): the second entry is bad.
    assert scanned.skipped == (("train/dog/0.png", "the same file as train/ant/linked.png "
                                "(one image, two entries)"),)
    with pytest.raises(DataError, match=r"train/dog/0.png: the same file as"):
        folder.check(root)
    folder.check(root, skip_bad=True)
    # A test image that is a link to a training image would be scored after training on it.
    os.symlink(os.path.join(root, "train", "bee", "1.png"),
               os.path.join(root, "test", "bee", "leak.png"))
    os.symlink(os.path.join(root, "missing.png"), os.path.join(root, "test", "ant", "gone.png"))
    folder_scan.scan.cache_clear()
    bad = dict(folder_scan.scan(root).skipped)
    assert bad["test/bee/leak.png"].startswith("the same file as train/bee/1.png")
    assert bad["test/ant/gone.png"].startswith("unreadable (No such file")


def test_empty_classes_are_refused_or_dropped_with_their_test_images(tmp_path):
    root = make_folder(str(tmp_path / "d"), classes=("ant", "bee", "cow", "dog"))
    for name in os.listdir(os.path.join(root, "train", "bee")):
        os.remove(os.path.join(root, "train", "bee", name))
    with pytest.raises(DataError, match=r"train/bee/ holds no .jpg/.jpeg/.png images.*"
                                        "--drop_empty_classes"):
        folder.check(root)
    folder.check(root, drop_empty=True)
    spec = catalog.spec("folder", root)
    assert spec.class_names == ("ant", "cow", "dog") and spec.num_classes == 3
    assert spec.dropped_classes == ("bee",) and spec.test_examples == 6   # bee's test images out
    labels = sorted(int(example["label"]) for example in catalog.load("folder", "test", root))
    assert labels == [0, 0, 1, 1, 2, 2]


def test_mixed_sizes_pick_a_recipe_and_say_why():
    small = folder.recipe([(24, 24, 3), (64, 40, 3), (30, 30, 3)], 3)
    assert small[:3] == (64, "crop_flip", True)
    assert "varying sizes (24..64 px), all small: each resized to 64x64" in small[3]
    assert "--image_size=N" in small[3] and "--augment=" in small[3]
    large = folder.recipe([(100, 300, 3), (500, 400, 3)], 3)
    assert large[:3] == (224, "goyal", True) and "random-resized crops" in large[3]
    assert folder.recipe([(10, 10, 1)] * 3, 1)[:2] == (10, "crop")


def test_cmyk_jpegs_in_a_grey_folder_are_bad_files(tmp_path):
    root = make_folder(str(tmp_path / "d"), classes=("ant", "bee"), test=0)
    grey = np.random.default_rng(1).integers(0, 255, (10, 10), dtype=np.uint8)
    Image.fromarray(grey).save(os.path.join(root, "train", "ant", "0.png"))   # first: grey
    cmyk = Image.fromarray(_rgb()).convert("CMYK")
    cmyk.save(os.path.join(root, "train", "bee", "cmyk.jpg"))
    scanned = folder_scan.scan(root)
    assert scanned.channels == 1
    assert scanned.skipped == (("train/bee/cmyk.jpg", "a CMYK JPEG in a grey folder "
                                "(TensorFlow decodes CMYK to colour only)"),)
