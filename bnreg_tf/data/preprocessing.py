"""What turns a uint8 image into a network input: each recipe's augmentation and its eval
transform, then the per-channel normalisation (docs/references.md §3 and §5.11).

Augmentations:
- `crop_flip` / `crop`: 4-px zero pad and random crop of the image's size (+ horizontal flip),
  CIFAR / SVHN;
- `goyal`: random-resized crop (area 0.08..1, aspect 3/4..4/3) + flip; eval resize of the shorter
  side to size * 256/224 then centre crop (Goyal et al.);
- `randaugment` and every EfficientNet run: `efficientnet.input_pipeline.preprocess` (reference
  crop, bicubic resize, flip, RandAugment; eval centre crop of the `eval_crop` era);
- `none`: resize only when the resolution differs.
`train` and `evaluate` take decoded uint8 pixels or, for data read as JPEG bytes (ImageNet from
revision 2, `bnreg_tf.data.catalog.load(encoded=True)`), the bytes: the random crops and the
EfficientNet eval crop then decode their window only (`decode_and_crop_jpeg`, as the reference),
Goyal's eval decodes the whole image. The same `Preprocessing.evaluate_batch`, on decoded
images, is baked into the SavedModel export.
"""
import dataclasses

import tensorflow as tf

from efficientnet.input_pipeline import crop, image_shape, is_encoded, preprocess

GOYAL_RESIZE_RATIO = 256 / 224


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What turns a uint8 image into a network input: the augmentation and the eval transform."""

    augment: str          # none, crop, crop_flip, goyal, randaugment (resolved, never "auto")
    eval_kind: str        # plain, goyal or efficientnet
    image_size: int
    mean: tuple
    std: tuple
    randaugment: tuple = ()   # (num_layers, magnitude, variant) when augment == "randaugment"
    eval_crop: str = "crop_fraction"   # the EfficientNet eval crop's era (input_pipeline)

    def normalize(self, image):
        image = tf.cast(image, tf.float32)
        return (image - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    def train(self, image, seed):
        """uint8 [H, W, C] or JPEG bytes -> float32 [S, S, C]; `seed` a [2] int64 tensor."""
        size = self.image_size
        if self.augment == "randaugment" or self.eval_kind == "efficientnet":
            augment = ("randaugment", *self.randaugment) if self.augment == "randaugment" else None
            return preprocess(image, True, size, augment, seed,  # normalises with ImageNet's
                              eval_crop=self.eval_crop)
        seeds = tf.random.experimental.stateless_split(seed, 2)
        if self.augment == "goyal":
            image = _random_resized_crop(image, size, seeds[0])
            image = tf.image.stateless_random_flip_left_right(image, seeds[1])
            return self.normalize(image)
        image = _resize_if_needed(image, size)
        if self.augment in ("crop", "crop_flip"):
            padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
            image = tf.image.stateless_random_crop(padded, tf.shape(image), seeds[0])
            if self.augment == "crop_flip":
                image = tf.image.stateless_random_flip_left_right(image, seeds[1])
        return self.normalize(image)

    def evaluate(self, image):
        """uint8 [H, W, C] or JPEG bytes -> float32 [S, S, C], deterministic."""
        size = self.image_size
        if self.eval_kind == "efficientnet":
            return preprocess(image, False, size, eval_crop=self.eval_crop)
        if is_encoded(image):   # Goyal's eval resizes the whole image first
            image = tf.io.decode_jpeg(image, channels=3)
        if self.eval_kind == "goyal":
            return self.normalize(_resize_and_center_crop(image, size))
        return self.normalize(_resize_if_needed(image, size))

    def evaluate_batch(self, images):
        """uint8 [B, H, W, C] -> float32 [B, S, S, C]; batched where the transform allows."""
        if self.eval_kind == "plain":
            images = tf.cast(images, tf.float32)
            if images.shape[1] != self.image_size or images.shape[2] != self.image_size:
                images = tf.image.resize(images, [self.image_size, self.image_size])
            return self.normalize(images)
        return tf.map_fn(self.evaluate, images,
                         fn_output_signature=tf.TensorSpec([self.image_size, self.image_size,
                                                            images.shape[-1]], tf.float32))


def _resize_if_needed(image, size):
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return tf.image.resize(image, [size, size])


def _random_resized_crop(image, size, seed):
    """Goyal's crop of decoded pixels or, from JPEG bytes, of its window decoded alone."""
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
    image = crop(image, window) if is_encoded(image) else tf.slice(image, begin, extent)
    return tf.image.resize(image, [size, size])


def _resize_and_center_crop(image, size):
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = round(size * GOYAL_RESIZE_RATIO) / tf.reduce_min(shape)
    resized = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
    return tf.image.resize_with_crop_or_pad(resized, size, size)
