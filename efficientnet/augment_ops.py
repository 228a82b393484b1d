"""RandAugment (Cubuk et al. 2020) with the EfficientNet TPU reference's 16 ops and magnitudes.

Core TF only (no tensorflow-addons): geometric ops use `ImageProjectiveTransformV3` with
nearest-neighbour sampling and the reference's fill value 128. Each of `num_layers` layers picks
one op uniformly through `tf.switch_case`, so only the chosen op runs. Randomness is stateless:
the same `seed` gives the same image eagerly and inside `tf.data`.

Magnitude M maps as in the reference (level M/10, unclipped). Where M > 10 leaves an op's usual
range (M = 28 for B7/B8) bnreg's behaviour is: posterize keeps min(8, int(4M/10)) bits (8 bits is
the identity); solarize with a threshold above 255 changes nothing; solarize-add saturates at 255;
enhance factors above 2 extrapolate and are clipped to [0, 255]; translations beyond the image
fill it with 128. Contrast blends with the image's mean grey level (PIL's definition); the
reference used `pixel count / 256` there, a known slip.
"""
import functools
import math

import tensorflow as tf

FILL = 128
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
       "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
       "Cutout", "SolarizeAdd")


def blend(degenerate, image, factor):
    """`degenerate + factor * (image - degenerate)`, clipped to [0, 255] and truncated to uint8."""
    degenerate, image = tf.cast(degenerate, tf.float32), tf.cast(image, tf.float32)
    return tf.cast(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0), tf.uint8)


def grayscale(image):
    """ITU-R 601 luma, rounded (PIL's "L"), as uint8 [H, W, 1]."""
    luma = tf.tensordot(tf.cast(image, tf.float32), [0.299, 0.587, 0.114], axes=1)
    return tf.cast(tf.round(luma), tf.uint8)[..., None]


def invert(image):
    return 255 - image


def solarize(image, threshold):
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def posterize(image, bits):
    shift = 2 ** (8 - min(8, max(0, bits)))
    return tf.cast(tf.cast(image, tf.int32) // shift * shift, tf.uint8)


def autocontrast(image):
    """Per channel, stretch [min, max] to [0, 255]; constant channels are left alone."""
    x = tf.cast(image, tf.float32)
    lo = tf.reduce_min(x, axis=(0, 1))
    hi = tf.reduce_max(x, axis=(0, 1))
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
    offset = tf.where(hi > lo, -lo * scale, 0.0)
    return tf.cast(tf.clip_by_value(x * scale + offset, 0.0, 255.0), tf.uint8)


def _equalize_channel(channel):
    channel = tf.cast(channel, tf.int32)
    histogram = tf.histogram_fixed_width(channel, [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

    def equalized():
        lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        return tf.gather(lut, channel)

    return tf.cast(tf.cond(step > 0, equalized, lambda: channel), tf.uint8)


def equalize(image):
    """PIL's ImageOps.equalize, per channel."""
    return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


def color(image, factor):
    return blend(tf.image.grayscale_to_rgb(grayscale(image)), image, factor)


def contrast(image, factor):
    mean = tf.reduce_mean(tf.cast(grayscale(image), tf.float32))
    return blend(tf.fill(tf.shape(image), tf.cast(mean, tf.uint8)), image, factor)


def brightness(image, factor):
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """Blend with the image smoothed by [[1,1,1],[1,5,1],[1,1,1]]/13 (borders unchanged)."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], "VALID")
    smooth = tf.cast(tf.clip_by_value(smooth[0], 0.0, 255.0), tf.uint8)
    inner = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(inner, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(degenerate, image, factor)


def affine(image, matrix):
    """Output pixel (x, y) takes input (a0 x + a1 y + a2, b0 x + b1 y + b2); outside -> 128."""
    transform = tf.reshape(tf.cast(tf.stack(list(matrix) + [0.0, 0.0]), tf.float32), [1, 8])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=float(FILL), interpolation="NEAREST", fill_mode="CONSTANT")[0]


def rotate(image, degrees):
    """Counter-clockwise rotation about the image centre."""
    radians = degrees * math.pi / 180.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    h = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
    w = tf.cast(tf.shape(image)[1], tf.float32) - 1.0
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    return affine(image, [cos, -sin, x_offset, sin, cos, y_offset])


def shear_x(image, level):
    return affine(image, [1.0, level, 0.0, 0.0, 1.0, 0.0])


def shear_y(image, level):
    return affine(image, [1.0, 0.0, 0.0, level, 1.0, 0.0])


def translate_x(image, pixels):
    return affine(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0])


def translate_y(image, pixels):
    return affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels])


def cutout(image, pad_size, seed):
    """Fill a (2 pad_size)^2 square (clipped at the borders) centred uniformly with 128."""
    shape = tf.shape(image)
    centre = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    cy, cx = centre[0] % shape[0], centre[1] % shape[1]
    rows = tf.range(shape[0])[:, None]
    cols = tf.range(shape[1])[None, :]
    inside = (rows >= cy - pad_size) & (rows < cy + pad_size) & (cols >= cx - pad_size) & (
        cols < cx + pad_size)
    return tf.where(inside[..., None], tf.cast(FILL, image.dtype), image)


def op_functions(magnitude):
    """The 16 ops as `f(image, sign, seed)` at magnitude M (the reference's level_to_arg)."""
    level = magnitude / 10.0
    enhance = 1.8 * level + 0.1
    return [
        lambda im, sign, seed: autocontrast(im),
        lambda im, sign, seed: equalize(im),
        lambda im, sign, seed: invert(im),
        lambda im, sign, seed: rotate(im, sign * 30.0 * level),
        lambda im, sign, seed: posterize(im, int(4 * level)),
        lambda im, sign, seed: solarize(im, int(256 * level)),
        lambda im, sign, seed: color(im, enhance),
        lambda im, sign, seed: contrast(im, enhance),
        lambda im, sign, seed: brightness(im, enhance),
        lambda im, sign, seed: sharpness(im, enhance),
        lambda im, sign, seed: shear_x(im, sign * 0.3 * level),
        lambda im, sign, seed: shear_y(im, sign * 0.3 * level),
        lambda im, sign, seed: translate_x(im, sign * 100.0 * level),
        lambda im, sign, seed: translate_y(im, sign * 100.0 * level),
        lambda im, sign, seed: cutout(im, int(40 * level), seed),
        lambda im, sign, seed: solarize_add(im, int(110 * level)),
    ]


def randaugment(image, num_layers, magnitude, seed):
    """Applies `num_layers` uniformly chosen ops at magnitude `magnitude` to a uint8 HxWx3 image.

    `seed`: an int or a shape-[2] integer tensor (stateless randomness).
    """
    if image.dtype != tf.uint8:
        raise ValueError(f"randaugment expects a uint8 image, got {image.dtype.name}")
    # int64 always: stateless_split draws in the seed's dtype, so int32 and int64 seeds differ.
    seed = tf.cast([seed, 0] if isinstance(seed, int) else seed, tf.int64)
    functions = op_functions(float(magnitude))
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
        op_seed, sign_seed, cutout_seed = tf.unstack(
            tf.random.experimental.stateless_split(layer_seed, 3))
        index = tf.random.stateless_uniform([], op_seed, 0, len(OPS), dtype=tf.int32)
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        branches = [functools.partial(fn, image, sign, cutout_seed) for fn in functions]
        image = tf.ensure_shape(tf.switch_case(index, branches), image.shape)
    return image
