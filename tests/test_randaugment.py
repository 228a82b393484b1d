"""RandAugment's 16 ops against independent NumPy derivations of the reference's arithmetic
(tensorflow/tpu autoaugment.py, 2020) and, under `corrected`, against PIL itself.

Every op runs through `op_functions(M, variant)`, so the level-to-argument mapping is checked
with the op, at M = 5, 10, 28 and both signs where the op has one, on a gradient image and a
crop of scikit-learn's `china.jpg`. Agreement is exact (0 grey levels).
"""
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps, ImageEnhance
from sklearn.datasets import load_sample_image

from efficientnet import augment_ops as ra
from tests.test_randaugment_reference import reference_grayscale, reference_smooth

MAGNITUDES = (5, 10, 28)
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}


def _gradient():
    y, x = np.mgrid[0:40, 0:56]
    return np.stack([x * 255 // 55, y * 255 // 39, (x + y) * 255 // 94], -1).astype(np.uint8)


IMAGES = {"gradient": _gradient(), "photo": load_sample_image("china.jpg")[150:198, 300:364]}


# NumPy derivations of the reference's formulas, written from its code's arithmetic: float64,
# except where the reference's own float32 arithmetic decides a grey level (the blend,
# autocontrast's scale, and since issue 25 the greyscale and the smoothing convolution, in TF's
# float32 op order), which IEEE float32 in NumPy reproduces exactly.

def np_blend(degenerate, image, factor):
    """`d + f (x - d)` in float32, as the reference's `tf.to_float` blend computes it (in float64
    the enhance factor 1.8 + 0.1 = 1.9000000000000001 puts ties such as 62 - 1.9 * 30 one level
    lower); clipped to 0..255 and truncated (for 0 < f < 1 the reference skips the clip, which
    changes nothing there)."""
    d = degenerate.astype(np.float32)
    return np.clip(d + np.float32(factor) * (image.astype(np.float32) - d), 0, 255).astype(np.uint8)


def np_rgb_to_grayscale(image):
    """TF's rgb_to_grayscale: to [0, 1], weights (0.2989, 0.5870, 0.1140), back times 255.5, in
    its float32 op order (issue 25; tests/test_randaugment_reference.py)."""
    return reference_grayscale(image)[..., 0]


def np_solarize(image, threshold):
    threshold = np.array(threshold).astype(np.uint8)  # a uint8 comparison: the constant wraps
    return np.where(image < threshold, image, 255 - image)


def np_posterize(image, bits):
    shift = np.uint8(np.int64(8 - bits) & 0xFF)  # the shift is a uint8 tensor too
    shift = min(int(shift), 7)  # TF's shift kernels clamp the shift to [0, bits - 1]
    return ((image >> shift) << shift).astype(np.uint8)


def np_contrast(image, factor):
    grey = np_rgb_to_grayscale(image)
    histogram, _ = np.histogram(grey, bins=256, range=(0, 255))
    mean = histogram.sum() / 256.0  # the reference's slip: a pixel count, not a mean
    return np_blend(np.full_like(image, np.uint8(np.clip(mean, 0, 255))), image, factor)


def np_sharpness(image, factor):
    """The kernel / 13 convolution in the reference's float32 op order (issue 25)."""
    degenerate = image.copy()
    degenerate[1:-1, 1:-1] = reference_smooth(image)
    return np_blend(degenerate, image, factor)


def np_autocontrast(image):
    out = image.copy()
    for c in range(3):
        x = image[..., c].astype(np.float64)
        lo, hi = x.min(), x.max()
        if hi > lo:
            scale = np.float32(255.0) / np.float32(hi - lo)  # float32 scale and offset, as TF
            offset = -np.float32(lo) * scale
            out[..., c] = np.clip(x.astype(np.float32) * scale + offset, 0, 255).astype(np.uint8)
    return out


def np_equalize(image):
    out = image.copy()
    for c in range(3):
        channel = image[..., c]
        histogram = np.bincount(channel.ravel(), minlength=256)
        nonzero = histogram[histogram > 0]
        step = (nonzero.sum() - nonzero[-1]) // 255
        if step:
            lut = (np.cumsum(histogram) + step // 2) // step
            out[..., c] = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255)[channel]
    return out


def np_transform(image, matrix):
    """Nearest-neighbour projective transform: output (x, y) reads input (a0 x + a1 y + a2,
    b0 x + b1 y + b2), float32 coordinates rounded half away from zero; outside -> 128."""
    h, w = image.shape[:2]
    a = np.asarray(matrix, np.float32)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    in_x = a[0] * x + a[1] * y + a[2]
    in_y = a[3] * x + a[4] * y + a[5]
    ix = (np.sign(in_x) * np.floor(np.abs(in_x) + 0.5)).astype(np.int64)
    iy = (np.sign(in_y) * np.floor(np.abs(in_y) + 0.5)).astype(np.int64)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    out = np.full_like(image, 128)
    out[inside] = image[iy[inside], ix[inside]]
    return out


def np_rotate(image, degrees):
    """contrib.image.rotate: counter-clockwise about the centre, offsets in float32."""
    radians = np.float32(degrees) * np.float32(math.pi / 180.0)
    cos, sin = np.cos(radians), np.sin(radians)
    h, w = np.float32(image.shape[0] - 1), np.float32(image.shape[1] - 1)
    x_offset = (w - (cos * w - sin * h)) / np.float32(2)
    y_offset = (h - (sin * w + cos * h)) / np.float32(2)
    return np_transform(image, [cos, -sin, x_offset, sin, cos, y_offset])


def np_reference_op(name, image, magnitude, sign):
    """The reference's `level_to_arg` and op, for the deterministic ops."""
    level = magnitude / 10.0
    enhance = level * 1.8 + 0.1
    grey = np.repeat(np_rgb_to_grayscale(image)[..., None], 3, -1)
    return {
        "AutoContrast": lambda: np_autocontrast(image),
        "Equalize": lambda: np_equalize(image),
        "Invert": lambda: 255 - image,
        "Rotate": lambda: np_rotate(image, sign * level * 30.0),
        "Posterize": lambda: np_posterize(image, int(level * 4)),
        "Solarize": lambda: np_solarize(image, int(level * 256)),
        "Color": lambda: np_blend(grey, image, enhance),
        "Contrast": lambda: np_contrast(image, enhance),
        "Brightness": lambda: np_blend(np.zeros_like(image), image, enhance),
        "Sharpness": lambda: np_sharpness(image, enhance),
        "ShearX": lambda: np_transform(image, [1, sign * level * 0.3, 0, 0, 1, 0]),
        "ShearY": lambda: np_transform(image, [1, 0, 0, sign * level * 0.3, 1, 0]),
        "TranslateX": lambda: np_transform(image, [1, 0, sign * level * 100, 0, 1, 0]),
        "TranslateY": lambda: np_transform(image, [1, 0, 0, 0, 1, sign * level * 100]),
        "SolarizeAdd": lambda: np.where(image < 128, np.clip(image.astype(np.int64) + int(
            level * 110), 0, 255), image).astype(np.uint8),
    }[name]()


def _run(name, image, magnitude, variant, sign=1.0, seed=(1, 2)):
    fn = ra.op_functions(float(magnitude), variant)[ra.OPS.index(name)]
    return fn(tf.constant(image), tf.constant(sign), tf.constant(seed, tf.int64)).numpy()


def _cases():
    for name in ra.OPS:
        if name == "Cutout":
            continue
        for magnitude in MAGNITUDES:
            for sign in ((-1.0, 1.0) if name in SIGNED else (1.0,)):
                yield name, magnitude, sign


@pytest.mark.parametrize("picture", sorted(IMAGES))
def test_reference_ops_equal_numpy_derivation(picture):
    image = IMAGES[picture]
    for name, magnitude, sign in _cases():
        got = _run(name, image, magnitude, "reference", sign)
        want = np_reference_op(name, image, magnitude, sign)
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() == 0, (name, magnitude, sign, int(diff.max()), int((diff > 0).sum()))


def test_reference_slips_at_m28_and_m10():
    image = IMAGES["photo"]
    level = 28 / 10
    # Solarize M=10: threshold 256 wraps to 0, every pixel inverts; M=28: 716 -> 204.
    np.testing.assert_array_equal(_run("Solarize", image, 10, "reference"), 255 - image)
    np.testing.assert_array_equal(_run("Solarize", image, 28, "reference"),
                                  np.where(image < 204, image, 255 - image))
    # Posterize M=28: shift 8 - 11 = -3 -> 253 as uint8 -> clamped to 7: only the top bit.
    assert set(np.unique(_run("Posterize", image, 28, "reference"))) <= {0, 128}
    # Contrast: the degenerate grey is pixel count / 256, here 48 * 64 / 256 = 12.
    factor = level * 1.8 + 0.1
    np.testing.assert_array_equal(_run("Contrast", image, 28, "reference"),
                                  np_blend(np.full_like(image, 12), image, factor))
    # Corrected: saturating, both identities at M = 28.
    np.testing.assert_array_equal(_run("Solarize", image, 28, "corrected"), image)
    np.testing.assert_array_equal(_run("Posterize", image, 28, "corrected"), image)


def _pil(name, image, magnitude):
    level = magnitude / 10.0
    enhance = level * 1.8 + 0.1
    picture = Image.fromarray(image)
    out = {
        "AutoContrast": lambda: ImageOps.autocontrast(picture),
        "Equalize": lambda: ImageOps.equalize(picture),
        "Invert": lambda: ImageOps.invert(picture),
        "Posterize": lambda: ImageOps.posterize(picture, min(8, int(level * 4))),
        "Solarize": lambda: ImageOps.solarize(picture, int(level * 256)),
        "Color": lambda: ImageEnhance.Color(picture).enhance(enhance),
        "Contrast": lambda: ImageEnhance.Contrast(picture).enhance(enhance),
        "Brightness": lambda: ImageEnhance.Brightness(picture).enhance(enhance),
        "Sharpness": lambda: ImageEnhance.Sharpness(picture).enhance(enhance),
    }[name]()
    return np.asarray(out)


PIL_OPS = ("AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "Color", "Contrast",
           "Brightness", "Sharpness")


@pytest.mark.parametrize("picture", sorted(IMAGES))
def test_corrected_ops_equal_pil(picture):
    image = IMAGES[picture]
    for name in PIL_OPS:
        for magnitude in MAGNITUDES:
            got = _run(name, image, magnitude, "corrected")
            diff = np.abs(got.astype(int) - _pil(name, image, magnitude).astype(int))
            assert diff.max() == 0, (name, magnitude, int(diff.max()), int((diff > 0).sum()))


def test_corrected_geometric_and_additive_ops_are_the_reference_ones():
    image = IMAGES["photo"]
    for name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "SolarizeAdd"):
        for sign in (-1.0, 1.0):
            np.testing.assert_array_equal(_run(name, image, 28, "corrected", sign),
                                          _run(name, image, 28, "reference", sign))


def test_greyscale_variants_on_every_colour_sample(rng):
    colours = rng.integers(0, 256, size=(64, 1024, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ra.grayscale(colours, "reference")[..., 0],
                                  np_rgb_to_grayscale(colours))
    np.testing.assert_array_equal(ra.grayscale(colours, "corrected")[..., 0],
                                  np.asarray(Image.fromarray(colours).convert("L")))


def test_float32_kernels_of_the_reference_differ_only_at_exact_ties():
    """What running the reference's TF code itself gives here: its float32 conv and
    rgb_to_grayscale land at most one level below the exact value, only where that value is
    (within float32 precision of) an integer."""
    image = IMAGES["gradient"]
    kernel = tf.tile(tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32)[:, :, None, None]
                     / 13.0, [1, 1, 3, 1])
    literal = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1],
                                     "VALID")[0]
    literal = tf.cast(tf.clip_by_value(literal, 0.0, 255.0), tf.uint8).numpy().astype(int)
    x = image.astype(int)
    total = sum(x[i:i + 38, j:j + 54] for i in range(3) for j in range(3)) + 4 * x[1:-1, 1:-1]
    diff = literal - total // 13
    assert set(np.unique(diff)) <= {-1, 0} and np.all(total[diff != 0] % 13 == 0)
    grey = tf.image.rgb_to_grayscale(image).numpy().astype(int)
    assert np.abs(grey - ra.grayscale(image, "reference").numpy()).max() <= 1


@pytest.mark.parametrize("variant", ra.VARIANTS)
def test_cutout_fills_a_clipped_square_with_128(variant):
    image = IMAGES["photo"].copy()
    image[image == 128] = 127
    h, w = image.shape[:2]
    for magnitude in MAGNITUDES:
        pad = int(magnitude / 10 * 40)
        for seed in range(4):
            out = _run("Cutout", image, magnitude, variant, seed=(seed, 7))
            filled = np.all(out == 128, axis=-1)
            rows, cols = np.nonzero(filled.any(1))[0], np.nonzero(filled.any(0))[0]
            # The centre (cy, cx) that explains the rows and columns must exist in the image.
            cy = [c for c in range(h) if (max(0, c - pad), min(h, c + pad)) ==
                  (rows.min(), rows.max() + 1)]
            cx = [c for c in range(w) if (max(0, c - pad), min(w, c + pad)) ==
                  (cols.min(), cols.max() + 1)]
            assert cy and cx
            want = image.copy()
            want[max(0, cy[0] - pad):cy[0] + pad, max(0, cx[0] - pad):cx[0] + pad] = 128
            np.testing.assert_array_equal(out, want)


def test_geometric_ops_move_a_point_where_the_reference_says():
    image = np.zeros((41, 41, 3), np.uint8)
    image[20, 35] = 255
    out = _run("Rotate", image, 30, "reference", sign=1.0)  # +90 degrees, counter-clockwise
    ys, xs = np.nonzero(out[..., 0] == 255)
    assert (ys.tolist(), xs.tolist()) == ([5], [20])
    out = _run("TranslateX", image, 1, "reference", sign=1.0)  # reads x + 10: moves left
    assert np.argwhere(out[..., 0] == 255).tolist() == [[20, 25]]
    assert np.all(out[:, -10:] == ra.FILL)


@pytest.mark.parametrize("magnitude", [0, 10, 28, 30])
def test_every_op_keeps_dtype_and_shape(magnitude):
    image = IMAGES["photo"]
    for variant in ra.VARIANTS:
        for fn in ra.op_functions(float(magnitude), variant):
            for sign in (-1.0, 1.0):
                out = fn(tf.constant(image), tf.constant(sign), tf.constant([1, 2], tf.int64))
                assert out.dtype == tf.uint8 and tuple(out.shape) == image.shape


@pytest.mark.parametrize("variant", ra.VARIANTS)
def test_same_seed_same_image_eagerly_and_in_tf_data(variant):
    image = IMAGES["photo"]
    eager = [ra.randaugment(tf.constant(image), 2, 28, s, variant).numpy() for s in range(6)]
    seeds = tf.data.Dataset.range(6).map(lambda s: tf.stack([s, 0]))
    mapped = seeds.map(lambda s: ra.randaugment(tf.constant(image), 2, 28, s, variant))
    for a, b in zip(eager, mapped):
        np.testing.assert_array_equal(a, b.numpy())
    assert len({a.tobytes() for a in eager}) > 1  # different seeds differ
    with pytest.raises(ValueError, match="uint8"):
        ra.randaugment(tf.constant(image, tf.float32), 2, 10, 0)
    with pytest.raises(ValueError, match="variant"):
        ra.randaugment(tf.constant(image), 2, 10, 0, "pil")
