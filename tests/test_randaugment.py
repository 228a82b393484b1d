"""RandAugment ops against NumPy implementations of the reference's formulas."""
import numpy as np
import pytest
import tensorflow as tf

from efficientnet import augment_ops as ra


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    base = rng.integers(20, 200, size=(24, 20, 3))
    return (base + rng.integers(0, 40, size=(24, 20, 3))).astype(np.uint8)


def np_blend(degenerate, image, factor):
    d = degenerate.astype(np.float64)
    return np.clip(d + factor * (image.astype(np.float64) - d), 0, 255).astype(np.uint8)


def np_gray(image):
    return np.round(image.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)


def np_equalize_channel(c):
    hist = np.bincount(c.ravel(), minlength=256)
    nonzero = hist[hist > 0]
    step = (nonzero.sum() - nonzero[-1]) // 255
    if step == 0:
        return c
    lut = (np.cumsum(hist) + step // 2) // step
    lut = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255)
    return lut[c].astype(np.uint8)


def close(a, b, factor=1.0):
    """Truncation to uint8 after float32 (here) or float64 (NumPy) arithmetic can differ by one
    grey level, in the result and in a degenerate image; the blend scales the latter by |1-f|."""
    diff = np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int))
    assert diff.max() <= 1 + np.ceil(abs(1 - factor)) and np.mean(diff > 0) < 0.03


@pytest.mark.parametrize("magnitude", [0, 5, 10, 28, 30])
def test_pixel_ops_match_numpy(image, magnitude):
    level = magnitude / 10
    factor = 1.8 * level + 0.1
    x = image.astype(np.int64)
    np.testing.assert_array_equal(ra.invert(image), 255 - image)
    threshold = int(256 * level)
    np.testing.assert_array_equal(ra.solarize(image, threshold), np.where(x < threshold, x, 255 - x))
    add = int(110 * level)
    np.testing.assert_array_equal(ra.solarize_add(image, add),
                                  np.where(x < 128, np.clip(x + add, 0, 255), x))
    bits = min(8, int(4 * level))
    np.testing.assert_array_equal(ra.posterize(image, int(4 * level)),
                                  (x >> (8 - bits)) << (8 - bits) if bits else np.zeros_like(x))
    close(ra.brightness(image, factor), np_blend(np.zeros_like(image), image, factor), factor)
    gray = np.repeat(np_gray(image)[..., None], 3, axis=-1)
    close(ra.color(image, factor), np_blend(gray, image, factor), factor)
    mean = np.full_like(image, int(np_gray(image).astype(np.float64).mean()))
    close(ra.contrast(image, factor), np_blend(mean, image, factor), factor)
    smooth = image.astype(np.float64).copy()
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
    inner = sum(kernel[i, j] * image[i:i + 22, j:j + 18].astype(np.float64)
                for i in range(3) for j in range(3))
    smooth[1:-1, 1:-1] = np.clip(inner, 0, 255).astype(np.uint8)
    close(ra.sharpness(image, factor), np_blend(smooth.astype(np.uint8), image, factor), factor)


def test_autocontrast_and_equalize_match_numpy(image):
    x = image.astype(np.float64)
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    expected = np.clip((x - lo) * (255 / (hi - lo)), 0, 255).astype(np.uint8)
    close(ra.autocontrast(image), expected)
    flat = image.copy()
    flat[..., 1] = 77  # a constant channel is left alone by both ops
    assert np.all(ra.autocontrast(flat).numpy()[..., 1] == 77)
    np.testing.assert_array_equal(
        ra.equalize(flat), np.stack([np_equalize_channel(flat[..., c]) for c in range(3)], -1))


def test_posterize_and_solarize_out_of_range_are_identity(image):
    np.testing.assert_array_equal(ra.posterize(image, 11), image)  # M = 28
    np.testing.assert_array_equal(ra.solarize(image, int(256 * 2.8)), image)


def bright_point(h=31, w=41, y=10, x=28):
    image = np.zeros((h, w, 3), np.uint8)
    image[y, x] = 255
    return image, y, x


def moved_to(output):
    ys, xs = np.nonzero(np.asarray(output)[..., 0] == 255)
    assert len(ys) == 1
    return ys[0], xs[0]


@pytest.mark.parametrize("op,arg,matrix", [
    (ra.translate_x, 7.0, lambda a: [1, 0, a, 0, 1, 0]),
    (ra.translate_y, -4.0, lambda a: [1, 0, 0, 0, 1, a]),
    (ra.shear_x, 0.3, lambda a: [1, a, 0, 0, 1, 0]),
    (ra.shear_y, -0.2, lambda a: [1, 0, 0, a, 1, 0]),
])
def test_geometric_ops_move_a_point_where_the_matrix_says(op, arg, matrix):
    image, y, x = bright_point()
    a0, a1, a2, b0, b1, b2 = matrix(arg)
    # Output (u, v) samples input (a0 u + a1 v + a2, b0 u + b1 v + b2): invert for the point.
    inverse = np.linalg.inv(np.array([[a0, a1], [b0, b1]], np.float64))
    u, v = inverse @ np.array([x - a2, y - b2])
    out = op(tf.constant(image), arg).numpy()
    assert moved_to(out) == (round(v), round(u))
    assert out[..., 0].max() == 255 and (out == ra.FILL).any() == (arg != 0)


def test_rotate_turns_about_the_centre():
    image, y, x = bright_point(h=41, w=41, y=20, x=35)
    out = ra.rotate(tf.constant(image), 90.0).numpy()  # counter-clockwise by 90 degrees
    assert moved_to(out) == (5, 20)
    assert out[0, 0, 0] == 0 and out[20, 20, 0] == 0
    assert (ra.rotate(tf.constant(image), 45.0).numpy() == ra.FILL).any()  # corners filled


def test_cutout_fills_a_clipped_square():
    image = np.zeros((30, 30, 3), np.uint8)
    out = ra.cutout(tf.constant(image), 4, tf.constant([3, 4])).numpy()
    ys, xs = np.nonzero(out[..., 0] == ra.FILL)
    assert 1 <= np.ptp(ys) + 1 <= 8 and 1 <= np.ptp(xs) + 1 <= 8
    assert len(ys) == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # one rectangle
    assert np.all(out[ys, xs] == ra.FILL)


@pytest.mark.parametrize("magnitude", [0, 10, 28, 30])
def test_every_op_keeps_dtype_and_shape(image, magnitude):
    for fn in ra.op_functions(float(magnitude)):
        for sign in (-1.0, 1.0):
            out = fn(tf.constant(image), tf.constant(sign), tf.constant([1, 2]))
            assert out.dtype == tf.uint8 and tuple(out.shape) == image.shape


def test_same_seed_same_image_eagerly_and_in_tf_data(image):
    eager = [ra.randaugment(tf.constant(image), 2, 28, seed=s).numpy() for s in range(6)]
    seeds = tf.data.Dataset.range(6).map(lambda s: tf.stack([s, 0]))
    mapped = seeds.map(lambda s: ra.randaugment(tf.constant(image), 2, 28, seed=s))
    for a, b in zip(eager, mapped):
        np.testing.assert_array_equal(a, b.numpy())
    assert len({a.tobytes() for a in eager}) > 1  # different seeds differ
    with pytest.raises(ValueError, match="uint8"):
        ra.randaugment(tf.constant(image, tf.float32), 2, 10, 0)
