"""Issue 25, items 10-11: the EfficientNet TPU reference's two eval-crop eras and ImageNet read from
JPEG bytes with only the crop window decoded (tensorflow/tpu `models/official/efficientnet/
preprocessing.py`: `_decode_and_random_crop`, `_decode_and_center_crop`)."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_sample_image

from bnreg_tf.data import catalog
from bnreg_tf.run import inputs
from bnreg_tf.run.presets import PRESETS
from efficientnet import input_pipeline as ip


def reference_center_window(height, width, image_size, padding):
    """`_decode_and_center_crop`'s window: side `int32(float32(size / (size + padding)) *
    float32(min(h, w)))`, offsets `((dim - side) + 1) // 2`."""
    side = int(np.float32(image_size / (image_size + padding)) * np.float32(min(height, width)))
    return [(height - side + 1) // 2, (width - side + 1) // 2, side, side]


@pytest.mark.parametrize("image_size", [224, 240, 260, 300, 380, 456, 528, 600, 672])
def test_both_eval_crop_eras_are_the_references_windows(image_size):
    """Item 10: CROP_PADDING = 32 (the paper's time) and CROP_FRACTION = 0.875 (since 2021)."""
    for height, width in [(375, 500), (500, 333), (1024, 768), (257, 911), (64, 64)]:
        shape = tf.constant([height, width, 3])
        era_2020 = ip.center_crop_window(shape, image_size, "crop_padding").numpy().tolist()
        era_2021 = ip.center_crop_window(shape, image_size, "crop_fraction").numpy().tolist()
        assert era_2020 == reference_center_window(height, width, image_size, 32)
        assert era_2021 == reference_center_window(height, width, image_size,
                                                   round(image_size * (1 / 0.875 - 1)))
    side = ip.center_crop_window(tf.constant([672, 1000, 3]), 672, "crop_padding")[2]
    assert int(side) == int(np.float32(672 / 704) * np.float32(672))   # 0.955 of the side
    with pytest.raises(ValueError, match="eval_crop"):
        ip.center_crop_window(tf.constant([8, 8, 3]), 8, "crop_half")


def jpeg(height, width, channels=3, seed=0):
    photo = load_sample_image("flower.jpg")
    pixels = tf.image.resize(photo, [height, width]).numpy().clip(0, 255).astype(np.uint8)
    if channels == 1:
        pixels = pixels[..., :1]
    noise = np.random.default_rng(seed).integers(-20, 21, pixels.shape)
    return tf.io.encode_jpeg((pixels + noise).clip(0, 255).astype(np.uint8), quality=90)


def reference_decode(data, window, image_size):
    return ip.normalize(ip.resize_bicubic(
        tf.image.decode_and_crop_jpeg(data, window, channels=3), image_size))


@pytest.mark.parametrize("eval_crop", ip.EVAL_CROPS)
def test_bytes_path_decodes_the_references_window(eval_crop):
    """Item 11: eval and training crops from JPEG bytes equal `decode_and_crop_jpeg` of the
    reference's window, then the same resize (0 levels)."""
    for height, width in [(375, 500), (333, 500), (480, 360)]:
        data = jpeg(height, width)
        window = reference_center_window(height, width, 240, 32 if eval_crop == "crop_padding"
                                          else round(240 / 7))
        got = ip.preprocess(data, False, 240, eval_crop=eval_crop)
        np.testing.assert_array_equal(got, reference_decode(data, window, 240))
        seeds = tf.random.experimental.stateless_split(tf.constant([3, height], tf.int64), 3)
        window = ip.random_crop_window(tf.image.extract_jpeg_shape(data), seeds[0])
        assert int(window[2]) < height or int(window[3]) < width   # a real random crop
        want = tf.image.stateless_random_flip_left_right(ip.resize_bicubic(
            tf.image.decode_and_crop_jpeg(data, window, channels=3), 240), seeds[1])
        np.testing.assert_array_equal(ip.preprocess(data, True, 240, seed=[3, height]),
                                      ip.normalize(want))


def test_a_crop_the_sampler_cannot_fit_falls_back_as_the_reference():
    """No 3/4..4/3 crop of 8% fits a 12x600 strip: the sampler returns the whole image and the
    reference takes its eval crop, except for greyscale JPEGs, whose channel count (1) differs
    from the decoded crop's (3) in its `_at_least_x_are_equal(..., 3)` test."""
    for channels in (3, 1):
        data = jpeg(12, 600, channels)
        whole = [0, 0, 12, 600]
        centre = reference_center_window(12, 600, 32, 4)
        want = reference_decode(data, centre if channels == 3 else whole, 32)
        got = ip.preprocess(data, True, 32, seed=[0, 1])
        flipped = tf.image.flip_left_right(want)
        assert np.array_equal(got, want) or np.array_equal(got, flipped), channels


def test_the_decoded_path_is_unchanged():
    """Decoded pixels (every dataset but ImageNet from revision 2) take the cut-then-resize of
    before: crop_to_bounding_box of the same window."""
    image = load_sample_image("china.jpg")
    window = ip.center_crop_window(tf.shape(image), 224)
    cut = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    want = ip.normalize(tf.raw_ops.ResizeBicubic(images=cut[None], size=[224, 224],
                                                  align_corners=False,
                                                  half_pixel_centers=False)[0])
    np.testing.assert_array_equal(ip.preprocess(image, False, 224), want)
    for name, revision in (("cifar10", 2), ("digits", 2), ("imagenet2012", 1)):
        config = PRESETS["digits"].replace(dataset=name, revision=revision)
        assert not inputs.reads_jpeg_bytes(config)
    assert inputs.reads_jpeg_bytes(PRESETS["efficientnet_b0_imagenet"])


def test_imagenet_is_read_as_bytes_through_the_run(tmp_path):
    config = PRESETS["efficientnet_b0_imagenet"].replace(model_dir=str(tmp_path), image_size=64,
                                                         eval_crop="crop_padding")
    spec = catalog.DATASETS["imagenet2012"]
    with tfds.testing.mock_data(num_examples=6):
        example = next(iter(inputs.load(config, "validation")))
        assert example["image"].dtype == tf.string and example["image"].shape == ()
        prep = inputs.preprocessing_for(config, 64, spec, None)
        assert prep.eval_crop == "crop_padding"
        images, _ = next(iter(inputs.eval_dataset(config, prep, "validation", 3)))
        data = example["image"]
        shape = tf.image.extract_jpeg_shape(data).numpy()
        window = reference_center_window(shape[0], shape[1], 64, 32)
        np.testing.assert_array_equal(images[0], reference_decode(data, window, 64))
        legacy = next(iter(inputs.load(config.replace(revision=1), "validation")))
        assert legacy["image"].dtype == tf.uint8
