"""Issue 25, item 9: Sharpness and Color as the EfficientNet TPU reference computes them
(tensorflow/tpu `models/official/efficientnet/autoaugment.py`): its float32 op order, against
NumPy float32 reproductions of that order (0 grey levels at M = 5, 10, 28); `corrected` stays
PIL's."""
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_sample_image

from efficientnet import augment_ops as ops


def reference_grayscale(image):
    """TF's `rgb_to_grayscale` as the reference calls it, in its float32 op order: `x * (1/255)`,
    the dot product with (0.2989, 0.5870, 0.1140) as ((r wr + g wg) + b wb), each step rounded
    to float32, times 255.5, truncated."""
    x = image.astype(np.float32) * np.float32(1 / 255)
    w = np.array([0.2989, 0.5870, 0.1140], np.float32)
    grey = ((x[..., 0] * w[0] + x[..., 1] * w[1]) + x[..., 2] * w[2]).astype(np.float32)
    return (grey * np.float32(255.5)).astype(np.uint8)[..., None]


def reference_smooth(image):
    """The reference's depthwise convolution with [[1,1,1],[1,5,1],[1,1,1]] / 13 (each weight a
    float32 quotient), as TF's CPU kernel accumulates it: the 9 taps in row-major order, each
    a fused multiply-add rounded to float32 (emulated exactly in float64), then clipped and
    truncated to uint8."""
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13)
    x = image.astype(np.float64)
    h, w = image.shape[0] - 2, image.shape[1] - 2
    total = np.zeros((h, w, image.shape[2]), np.float32)
    for i in range(3):
        for j in range(3):
            total = (np.float64(kernel[i, j]) * x[i:i + h, j:j + w] + total).astype(np.float32)
    return np.clip(total, 0, 255).astype(np.uint8)


def reference_blend(degenerate, image, factor):
    """`blend`: image1 + factor * (image2 - image1) in float32 (factor 0 and 1 return an input;
    clipped unless 0 < factor < 1), truncated."""
    if factor in (0.0, 1.0):
        return (degenerate if factor == 0.0 else image).astype(np.uint8)
    a, b = degenerate.astype(np.float32), image.astype(np.float32)
    out = a + np.float32(factor) * (b - a)
    return (out if 0 < factor < 1 else np.clip(out, 0, 255)).astype(np.uint8)


def reference_sharpness(image, factor):
    degenerate = image.copy()
    degenerate[1:-1, 1:-1] = reference_smooth(image)
    return reference_blend(degenerate, image, factor)


def reference_color(image, factor):
    return reference_blend(np.repeat(reference_grayscale(image), 3, axis=-1), image, factor)


def sample_images():
    rng = np.random.default_rng(0)
    yield "china", load_sample_image("china.jpg")[100:260, 200:420]
    yield "noise", rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    yield "gradient", (np.arange(48 * 64 * 3).reshape(48, 64, 3) % 256).astype(np.uint8)


@pytest.mark.parametrize("magnitude", [5, 10, 28])
def test_sharpness_and_color_are_the_references_float32_arithmetic(magnitude):
    """Item 9: 0 grey levels from the reference's op order, where exact arithmetic (bnreg
    before issue 25) was up to 5 levels away at M=28."""
    factor = magnitude / 10 * 1.8 + 0.1
    functions = ops.op_functions(magnitude, "reference")
    sharpness, color = functions[ops.OPS.index("Sharpness")], functions[ops.OPS.index("Color")]
    exact_gaps = []
    for _, image in sample_images():
        got = sharpness(tf.constant(image), 1.0, None).numpy()
        np.testing.assert_array_equal(got, reference_sharpness(image, factor))
        np.testing.assert_array_equal(color(tf.constant(image), 1.0, None).numpy(),
                                      reference_color(image, factor))
        exact = image.astype(np.int64)
        total = sum(int(k) * exact[i:i + exact.shape[0] - 2, j:j + exact.shape[1] - 2]
                    for (i, j), k in np.ndenumerate([[1, 1, 1], [1, 5, 1], [1, 1, 1]]))
        exact_gaps.append(int(np.sum(reference_smooth(image).astype(np.int64) != total // 13)))
    assert sum(exact_gaps) > 0   # the float32 order differs from exact arithmetic somewhere


def test_corrected_stays_pils():
    image = dict(sample_images())["china"]
    r, g, b = (image[..., c].astype(np.int64) for c in range(3))
    np.testing.assert_array_equal(ops.grayscale(tf.constant(image), "corrected").numpy()[..., 0],
                                  (19595 * r + 38470 * g + 7471 * b + 32768) >> 16)


def test_color_on_the_colours_where_float32_and_exact_greyscale_differ():
    """TF's float32 greyscale is one level below exact arithmetic on a few colours of the cube
    (237 on this project's CPU); Color at M = 10 and 28 follows the reference there too."""
    v = np.arange(256, dtype=np.int64)
    r, g, b = (a.ravel() for a in np.meshgrid(v, v, v, indexing="ij"))
    cube = np.stack([r, g, b], -1).astype(np.uint8)
    exact = (2989 * r + 5870 * g + 1140 * b) * 511 // 5_100_000
    differ = cube[reference_grayscale(cube[None])[0, :, 0] != exact]
    assert 0 < len(differ) < 1000
    image = np.resize(differ, (16, 16, 3)).astype(np.uint8)
    np.testing.assert_array_equal(ops.grayscale(tf.constant(image)).numpy(),
                                  reference_grayscale(image))
    for magnitude in (10, 28):
        color = ops.op_functions(magnitude, "reference")[ops.OPS.index("Color")]
        np.testing.assert_array_equal(color(tf.constant(image), 1.0, None).numpy(),
                                      reference_color(image, magnitude / 10 * 1.8 + 0.1))
