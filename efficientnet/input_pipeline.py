"""EfficientNet TPU reference input preprocessing (docs/references.md §5.11).

Train: random crop (min object covered 0.1, aspect 3/4..4/3, area 0.08..1, 10 attempts; when no
attempt succeeds, i.e. the sampler returns the whole image, the eval centre crop instead), bicubic
resize, horizontal flip, then RandAugment on uint8. Eval: a centred square of the shorter side,
bicubic resize. The resize is TF1's `resize_bicubic` (the `ResizeBicubic` op, no half-pixel
centres: a = -0.75 cubic convolution, edge pixels repeated), not TF2's
`tf.image.resize(method="bicubic")`. Both end with the ImageNet mean/std normalisation. All
randomness is stateless: one `seed` ([2] int) gives one result.

The image is a decoded uint8 [H, W, 3] or, as the reference reads ImageNet, the JPEG's bytes (a
scalar string): then only the crop window is decoded (`tf.image.decode_and_crop_jpeg`), for the
training crop and the eval crop alike, as the reference's `_decode_and_random_crop` and
`_decode_and_center_crop`.

The eval crop's side (`center_crop_window`) has two eras of the reference's `preprocessing.py`:
`crop_padding`, `int(size / (size + 32) * min(h, w))` (CROP_PADDING = 32, the code until Nov.
2021 and so of the paper's time: 0.875 at 224, 0.955 at B8's 672), and `crop_fraction`,
`size / (size + round(size / 7))` (CROP_FRACTION = 0.875 at every size, the code since).
"""
from bnreg_tf.nn.backends import require_tensorflow

require_tensorflow(__name__)   # one line under another Keras backend (issue 24)

import tensorflow as tf

from efficientnet.augment_ops import randaugment

MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CROP_FRACTION = 0.875
CROP_PADDING = 32
EVAL_CROPS = ("crop_fraction", "crop_padding")


def normalize(image):
    """`(image - mean) / std` with the ImageNet statistics on the 0..255 scale, float32."""
    image = tf.cast(image, tf.float32)
    return (image - tf.constant(MEAN_RGB)) / tf.constant(STDDEV_RGB)


def is_encoded(image):
    """Whether `image` is a JPEG's bytes (a string tensor) rather than decoded pixels."""
    return tf.convert_to_tensor(image).dtype == tf.string


def image_shape(image):
    """[height, width, channels] of decoded pixels, or of the JPEG whose bytes `image` is."""
    return tf.image.extract_jpeg_shape(image) if is_encoded(image) else tf.shape(image)


def crop(image, window):
    """The [y, x, h, w] `window` of `image`, uint8 [h, w, 3]: cut from decoded pixels, or decoded
    from the JPEG's bytes for that window alone (`decode_and_crop_jpeg`, three channels)."""
    if is_encoded(image):
        return tf.image.decode_and_crop_jpeg(image, window, channels=3)
    return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])


def center_crop_window(shape, image_size, eval_crop="crop_fraction"):
    """[y, x, h, w] of the reference eval crop: a centred square of side `int(image_size /
    (image_size + padding) * min(h, w))`, offsets `(dim - side + 1) // 2`, with padding 32
    (`crop_padding`) or `round(image_size / 7)` (`crop_fraction`: 0.875; module docstring)."""
    if eval_crop not in EVAL_CROPS:
        raise ValueError(f"eval_crop must be one of {', '.join(EVAL_CROPS)}; got {eval_crop!r}")
    height, width = shape[0], shape[1]
    padding = CROP_PADDING if eval_crop == "crop_padding" else round(
        image_size * (1 / CROP_FRACTION - 1))   # reference since 2021: 32 at 224, 96 at 672
    fraction = image_size / (image_size + padding)
    side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])


def random_crop_window(shape, seed):
    """[y, x, h, w] from the reference's distorted-bounding-box sampler (`shape` [H, W, C])."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def training_window(image, seed, image_size, eval_crop="crop_fraction"):
    """The training crop's window, or the eval crop's when the sampler returned the whole image
    (none of its 10 attempts fit), as the reference. From JPEG bytes the reference's test is
    `_at_least_x_are_equal(jpeg_shape, decoded_crop_shape, 3)`, which also compares the JPEG's
    channel count with the decoded 3: a greyscale JPEG never falls back; bnreg follows it."""
    shape = image_shape(image)
    window = random_crop_window(shape, seed)
    whole = tf.reduce_all(tf.equal(window[2:], shape[:2]))
    if is_encoded(image):
        whole = tf.logical_and(whole, tf.equal(shape[2], 3))
    return tf.where(whole, center_crop_window(shape, image_size, eval_crop), window)


def resize_bicubic(image, image_size):
    """TF1 `resize_bicubic` (the reference's resize): float32 [image_size, image_size, C]."""
    return tf.raw_ops.ResizeBicubic(images=image[None], size=[image_size, image_size],
                                    align_corners=False, half_pixel_centers=False)[0]


def preprocess(image, is_training, image_size, augment=None, seed=(0, 0),
               eval_crop="crop_fraction"):
    """uint8 [H, W, 3], or a JPEG's bytes -> normalised float32 [image_size, image_size, 3].

    augment: None, or ("randaugment", num_layers, magnitude[, variant]), applied in training
    only; variant "reference" (default) or "corrected" (`efficientnet.augment_ops`).
    eval_crop: the eval crop's era, "crop_fraction" or "crop_padding" (module docstring).
    """
    image = tf.convert_to_tensor(image)
    if image.dtype not in (tf.uint8, tf.string):
        raise ValueError(f"preprocess expects a uint8 image or JPEG bytes, got {image.dtype.name}")
    if not is_training:
        window = center_crop_window(image_shape(image), image_size, eval_crop)
        return normalize(resize_bicubic(crop(image, window), image_size))
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    window = training_window(image, seeds[0], image_size, eval_crop)
    image = resize_bicubic(crop(image, window), image_size)
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if augment is not None:
        name, num_layers, magnitude, *variant = augment
        if name != "randaugment":
            raise ValueError(f"unknown augmentation {name!r}; expected 'randaugment' or None")
        image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)  # reference: truncates
        image = randaugment(image, num_layers, magnitude, seeds[2], *variant)
    return normalize(image)
