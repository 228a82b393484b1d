"""RandAugment (Cubuk et al. 2020) with the EfficientNet TPU reference's 16 ops and magnitudes.

Two variants of the pixel arithmetic (`--randaugment_variant`):

- `reference` (the EfficientNet presets' default): what tensorflow/tpu's `autoaugment.py` (2020)
  computes, slips included, so a reproduction trains on the images the published B7/B8 models
  saw. Its uint8 comparisons wrap the Solarize threshold modulo 256 (M=10 inverts every pixel,
  M=28 thresholds at 204); its uint8 shift wraps Posterize's `8 - bits` and TF clamps the shift
  to 7 (M=28 keeps only the top bit); Contrast blends with `pixel count / 256` instead of the
  mean grey; greyscale is TF's `rgb_to_grayscale`; Sharpness smooths with the kernel divided by
  13 in float32 and truncates; AutoContrast computes in float32.
- `corrected`: the same ops with PIL's definitions (`ImageOps` / `ImageEnhance`): saturating
  levels (posterize keeps min(8, bits) bits, a threshold above 255 changes nothing), Contrast with
  PIL's rounded mean grey, PIL's "L" greyscale, rounded SMOOTH filter, float64 AutoContrast.

Shared by both: the blend `d + f (x - d)` in float32, clipped to 0..255 and truncated (PIL and
the reference agree); geometric ops with nearest-neighbour sampling through core TF's
`ImageProjectiveTransformV3` and the reference's fill value 128; level `M/10` unclipped.
Each of `num_layers` layers picks one op uniformly through `tf.switch_case`, so only the chosen
op runs. Randomness is stateless: the same `seed` gives the same image eagerly and in `tf.data`.
Under `reference`, greyscale and smoothing are the reference's own float32 ops (TF's
`rgb_to_grayscale`, a depthwise convolution with the kernel / 13), which land one level lower
than exact arithmetic where a value is an integer just missed; `corrected` computes PIL's in exact
integer arithmetic (BUILD_NOTES.md "Issue 25", docs/references.md §5.13).
"""
from bnreg_tf.nn.backends import require_tensorflow

require_tensorflow(__name__)   # one line under another Keras backend (issue 24)

import functools
import math

import tensorflow as tf

FILL = 128
VARIANTS = ("reference", "corrected")
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
       "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
       "Cutout", "SolarizeAdd")


def _check(variant):
    if variant not in VARIANTS:
        raise ValueError(f"randaugment variant must be one of {VARIANTS}, got {variant!r}")


def blend(degenerate, image, factor):
    """`degenerate + factor * (image - degenerate)` in float32, clipped to [0, 255], truncated."""
    degenerate, image = tf.cast(degenerate, tf.float32), tf.cast(image, tf.float32)
    blended = degenerate + factor * (image - degenerate)
    return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def grayscale(image, variant="reference"):
    """uint8 [H, W, 1] grey level.

    reference: TF's `rgb_to_grayscale` itself, the reference's op: float32 `x * (1/255)`, the
    dot product with (0.2989, 0.5870, 0.1140), times 255.5, truncated. In exact arithmetic this
    is `(2989 r + 5870 g + 1140 b) * 511 // 5_100_000`; float32 rounding puts some colours one
    level lower (BUILD_NOTES.md "Issue 25").
    corrected: PIL's "L", `(19595 r + 38470 g + 7471 b + 2^15) >> 16`.
    """
    if variant == "reference":
        return tf.image.rgb_to_grayscale(tf.convert_to_tensor(image, tf.uint8))
    x = tf.cast(image, tf.int32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    grey = (19595 * r + 38470 * g + 7471 * b + 32768) // 65536
    return tf.cast(grey, tf.uint8)[..., None]


def invert(image):
    return 255 - image


def solarize(image, threshold, variant="reference"):
    """Pixels at or above `threshold` are inverted."""
    if variant == "reference":
        threshold %= 256  # reference: the int threshold is compared with a uint8 image, so it wraps
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
    """Pixels below `threshold` get `addition`, saturating at 255 (the same in both variants)."""
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def posterize(image, bits, variant="reference"):
    """Keeps the top `bits` bits of each pixel."""
    if variant == "reference":
        # reference: `8 - bits` becomes a uint8 shift (wraps) and TF clamps shifts to 7
        shift = min(7, (8 - bits) % 256)
    else:
        shift = 8 - min(8, max(0, bits))  # PIL: 0 bits gives black, 8 or more the identity
    x = tf.cast(image, tf.int32)
    return tf.cast(x // 2**shift * 2**shift, tf.uint8)


def autocontrast(image, variant="reference"):
    """Per channel, stretch [min, max] to [0, 255]; constant channels are left alone.

    `x * scale + offset`, scale = 255 / (max - min), offset = -min * scale, truncated: in float32
    (reference, `tf.to_float`) or float64 (corrected: PIL's Python-float lookup table).
    """
    x = tf.cast(image, tf.float32 if variant == "reference" else tf.float64)
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
    """PIL's ImageOps.equalize, per channel (the reference's is the same algorithm)."""
    return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


def color(image, factor, variant="reference"):
    return blend(tf.image.grayscale_to_rgb(grayscale(image, variant)), image, factor)


def contrast(image, factor, variant="reference"):
    """Blend with a constant grey image."""
    if variant == "reference":
        # reference: `sum(histogram) / 256` is the pixel count over 256 (a slip), clipped, truncated
        count = tf.shape(image)[0] * tf.shape(image)[1]
        mean = tf.minimum(count // 256, 255)
    else:
        grey = tf.cast(grayscale(image, variant), tf.int32)
        count = tf.size(grey)
        mean = (2 * tf.reduce_sum(grey) + count) // (2 * count)  # PIL: int(mean + 0.5)
    return blend(tf.fill(tf.shape(image), tf.cast(mean, tf.uint8)), image, factor)


def brightness(image, factor):
    return blend(tf.zeros_like(image), image, factor)


def smooth(image, variant="reference"):
    """uint8 [H-2, W-2, 3]: the image smoothed by [[1,1,1],[1,5,1],[1,1,1]]/13, valid part.

    reference: the reference's float32 arithmetic, a depthwise convolution with the kernel
    divided by 13 (each weight rounded to float32), clipped and truncated to uint8, so a value
    that is an integer in exact arithmetic can land just under it and one level lower.
    corrected: PIL's SMOOTH filter, the integer 3x3 sum divided by 13 and rounded (exact).
    """
    x = tf.cast(image, tf.float32)[None]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32)[:, :, None, None]
    if variant == "reference":
        kernel = tf.tile(kernel / 13.0, [1, 1, 3, 1])
        total = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")[0]
        return tf.cast(tf.clip_by_value(total, 0.0, 255.0), tf.uint8)
    total = tf.nn.depthwise_conv2d(x, tf.tile(kernel, [1, 1, 3, 1]), [1, 1, 1, 1], "VALID")
    return tf.cast((tf.cast(total[0], tf.int32) + 6) // 13, tf.uint8)  # integer sums: exact


def sharpness(image, factor, variant="reference"):
    """Blend with the image smoothed by [[1,1,1],[1,5,1],[1,1,1]]/13 (`smooth`; borders
    unchanged)."""
    smooth_image = smooth(image, variant)
    inner = tf.pad(tf.ones_like(smooth_image, tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(inner, tf.pad(smooth_image, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(degenerate, image, factor)


def affine(image, matrix):
    """Output pixel (x, y) takes input (a0 x + a1 y + a2, b0 x + b1 y + b2); outside -> 128."""
    transform = tf.reshape(tf.cast(tf.stack(list(matrix) + [0.0, 0.0]), tf.float32), [1, 8])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=float(FILL), interpolation="NEAREST", fill_mode="CONSTANT")[0]


def rotate(image, degrees):
    """Counter-clockwise rotation about the image centre (the reference's contrib `rotate`)."""
    radians = degrees * (math.pi / 180.0)
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
    """Fill a (2 pad_size)^2 square, clipped at the borders, centred uniformly, with 128."""
    shape = tf.shape(image)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    cy = tf.random.stateless_uniform([], seeds[0], 0, shape[0], dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seeds[1], 0, shape[1], dtype=tf.int32)
    rows = tf.range(shape[0])[:, None]
    cols = tf.range(shape[1])[None, :]
    inside = (rows >= cy - pad_size) & (rows < cy + pad_size) & (cols >= cx - pad_size) & (
        cols < cx + pad_size)
    return tf.where(inside[..., None], tf.cast(FILL, image.dtype), image)


def op_functions(magnitude, variant="reference"):
    """The 16 ops as `f(image, sign, seed)` at magnitude M (the reference's `level_to_arg`).

    `sign` (+-1) is the reference's `_randomly_negate_tensor`, used by the ops that have a sign.
    """
    _check(variant)
    level = magnitude / 10.0
    enhance = level * 1.8 + 0.1
    return [
        lambda im, sign, seed: autocontrast(im, variant),
        lambda im, sign, seed: equalize(im),
        lambda im, sign, seed: invert(im),
        lambda im, sign, seed: rotate(im, sign * (level * 30.0)),
        lambda im, sign, seed: posterize(im, int(level * 4), variant),
        lambda im, sign, seed: solarize(im, int(level * 256), variant),
        lambda im, sign, seed: color(im, enhance, variant),
        lambda im, sign, seed: contrast(im, enhance, variant),
        lambda im, sign, seed: brightness(im, enhance),
        lambda im, sign, seed: sharpness(im, enhance, variant),
        lambda im, sign, seed: shear_x(im, sign * (level * 0.3)),
        lambda im, sign, seed: shear_y(im, sign * (level * 0.3)),
        lambda im, sign, seed: translate_x(im, sign * (level * 100.0)),
        lambda im, sign, seed: translate_y(im, sign * (level * 100.0)),
        lambda im, sign, seed: cutout(im, int(level * 40), seed),
        lambda im, sign, seed: solarize_add(im, int(level * 110)),
    ]


def randaugment(image, num_layers, magnitude, seed, variant="reference"):
    """Applies `num_layers` uniformly chosen ops at magnitude `magnitude` to a uint8 HxWx3 image.

    `seed`: an int or a shape-[2] integer tensor (stateless randomness). `variant`: "reference"
    or "corrected" (module docstring).
    """
    if image.dtype != tf.uint8:
        raise ValueError(f"randaugment expects a uint8 image, got {image.dtype.name}")
    # int64 always: stateless_split draws in the seed's dtype, so int32 and int64 seeds differ.
    seed = tf.cast([seed, 0] if isinstance(seed, int) else seed, tf.int64)
    functions = op_functions(float(magnitude), variant)
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
        op_seed, sign_seed, cutout_seed = tf.unstack(
            tf.random.experimental.stateless_split(layer_seed, 3))
        index = tf.random.stateless_uniform([], op_seed, 0, len(OPS), dtype=tf.int32)
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        branches = [functools.partial(fn, image, sign, cutout_seed) for fn in functions]
        image = tf.ensure_shape(tf.switch_case(index, branches), image.shape)
    return image
