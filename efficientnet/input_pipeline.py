"""EfficientNet TPU reference input preprocessing (docs/references.md §5).

Train: random crop (min object covered 0.1, aspect 3/4..4/3, area 0.08..1, 10 attempts; when no
attempt succeeds, i.e. the sampler returns the whole image, the eval centre crop instead), bicubic
resize, horizontal flip, then RandAugment on uint8. Eval: centre crop of `image_size /
(image_size + round(image_size / 7))` (0.875 at every size) of the shorter side, bicubic resize.
The resize is TF1's `resize_bicubic` (the `ResizeBicubic` op, no half-pixel centres: a = -0.75
cubic convolution, edge pixels repeated), not TF2's `tf.image.resize(method="bicubic")`. Both
end with the ImageNet mean/std normalisation. All randomness is stateless: one `seed` ([2] int)
gives one result.
"""
from bnreg_tf.nn.backends import require_tensorflow

require_tensorflow(__name__)   # one line under another Keras backend (issue 24)

import tensorflow as tf

from efficientnet.augment_ops import randaugment

MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CROP_FRACTION = 0.875


def normalize(image):
    """`(image - mean) / std` with the ImageNet statistics on the 0..255 scale, float32."""
    image = tf.cast(image, tf.float32)
    return (image - tf.constant(MEAN_RGB)) / tf.constant(STDDEV_RGB)


def center_crop_window(shape, image_size):
    """[y, x, h, w] of the reference eval crop: a centred square, 0.875 of min(h, w) as the
    reference rounds it: `size / (size + round(size / 7))` (size/(size+32) at 224)."""
    height, width = shape[0], shape[1]
    padding = round(image_size * (1 / CROP_FRACTION - 1))  # reference: 32 at 224, 96 at 672 (B8)
    fraction = image_size / (image_size + padding)
    side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])


def random_crop_window(shape, seed):
    """[y, x, h, w] from the reference's distorted-bounding-box sampler, or the centre fallback.

    The sampler returns the whole image when none of its 10 attempts fits the constraints; the
    reference detects that and uses the centre crop, which this follows.
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def resize_bicubic(image, image_size):
    """TF1 `resize_bicubic` (the reference's resize): float32 [image_size, image_size, C]."""
    return tf.raw_ops.ResizeBicubic(images=image[None], size=[image_size, image_size],
                                    align_corners=False, half_pixel_centers=False)[0]


def _crop_and_resize(image, window, image_size):
    crop = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    return resize_bicubic(crop, image_size)


def preprocess(image, is_training, image_size, augment=None, seed=(0, 0)):
    """uint8 [H, W, 3] -> normalised float32 [image_size, image_size, 3].

    augment: None, or ("randaugment", num_layers, magnitude[, variant]), applied in training
    only; variant "reference" (default) or "corrected" (`efficientnet.augment_ops`).
    """
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"preprocess expects a uint8 image, got {image.dtype.name}")
    shape = tf.shape(image)
    if not is_training:
        return normalize(_crop_and_resize(image, center_crop_window(shape, image_size), image_size))
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    window = random_crop_window(shape, seeds[0])
    whole = tf.reduce_all(tf.equal(window[2:], shape[:2]))
    window = tf.where(whole, center_crop_window(shape, image_size), window)
    image = _crop_and_resize(image, window, image_size)
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if augment is not None:
        name, num_layers, magnitude, *variant = augment
        if name != "randaugment":
            raise ValueError(f"unknown augmentation {name!r}; expected 'randaugment' or None")
        image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)  # reference: truncates
        image = randaugment(image, num_layers, magnitude, seeds[2], *variant)
    return normalize(image)
