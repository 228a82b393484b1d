"""ImageNet's input pipeline from JPEG bytes (revision 2: only the crop window is decoded, as the
EfficientNet reference's `decode_and_crop_jpeg`) against decoding the whole image and then
cropping (revision 1, TFDS's decoded images), in images/s (issue 25, item 11).

    python -m benchmarks.run --only jpeg        (or: python -m benchmarks.jpeg_pipeline)

The images are JPEGs of ImageNet's typical sizes (500x375 and the like, quality 90) cut from
scikit-learn's two sample photographs, held in memory as bytes. Both pipelines run bnreg's own
`Preprocessing` (`bnreg_tf.run.inputs.preprocessing_for`, the EfficientNet preset at each size)
per image in `Dataset.map` with AUTOTUNE parallelism; the decode-then-crop pipeline first decodes
the whole JPEG (`tf.io.decode_jpeg`, as TFDS does) and hands the pixels over. Rows: the training
crop (random crop, bicubic resize, flip), the same with RandAugment (N=2, M=28), and the eval
crop; best of `rounds` alternating rounds. A second table times each step of one image alone,
which says where the time goes at each size.
"""
import time

import numpy as np
import tensorflow as tf

from benchmarks.timing import machine, map_images_per_second
from bnreg_tf.run import inputs
from bnreg_tf.run.presets import PRESETS
from efficientnet import input_pipeline
from efficientnet.augment_ops import randaugment

SIZES = (224, 380, 672)
SHAPES = ((375, 500), (500, 375), (333, 500), (480, 640), (300, 400), (600, 800), (500, 500),
          (427, 640))


def jpeg_images(count=48, quality=90, seed=0):
    """`count` JPEG files (bytes) of ImageNet-like sizes cut from the sample photographs."""
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(seed)
    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    files = []
    for i in range(count):
        height, width = SHAPES[i % len(SHAPES)]
        photo = photos[i % 2]
        scale = max(height / photo.shape[0], width / photo.shape[1]) * rng.uniform(1.0, 1.3)
        resized = tf.image.resize(photo, [int(photo.shape[0] * scale) + 1,
                                          int(photo.shape[1] * scale) + 1])
        y = rng.integers(0, resized.shape[0] - height + 1)
        x = rng.integers(0, resized.shape[1] - width + 1)
        pixels = tf.cast(tf.clip_by_value(resized[y:y + height, x:x + width], 0, 255), tf.uint8)
        files.append(tf.io.encode_jpeg(pixels, quality=quality).numpy())
    return np.array(files, dtype=object)


def _preprocessing(size, randaugment):
    config = PRESETS["efficientnet_b8_imagenet"].replace(
        model_dir="-", image_size=size, randaugment_magnitude=28.0,
        augment="randaugment" if randaugment else "none")
    spec = inputs.catalog.DATASETS["imagenet2012"]
    return inputs.preprocessing_for(config, size, spec, None)


def _pipelines(prep, mode):
    seed = tf.constant(0, tf.int64)

    def run(image, i):
        if mode == "eval":
            return prep.evaluate(image)
        return prep.train(image, tf.stack([seed, i]))

    return {
        "decode whole, then crop (revision 1)": lambda i, data: run(
            tf.io.decode_jpeg(data, channels=3), i),
        "bytes, crop window decoded (revision 2)": lambda i, data: run(data, i),
    }


def rows(sizes=SIZES, count=320, rounds=5):
    """Yields `(size, pipeline, decode-then-crop images/s, bytes images/s, speed-up)`."""
    files = jpeg_images()
    for size in sizes:
        for mode, randaugment in (("train", False), ("train + RandAugment(2, 28)", True),
                                  ("eval", False)):
            prep = _preprocessing(size, randaugment)
            pipelines = _pipelines(prep, "eval" if mode == "eval" else "train")
            best = dict.fromkeys(pipelines, 0.0)
            for _ in range(rounds):
                for name, fn in pipelines.items():
                    best[name] = max(best[name], map_images_per_second(files, fn, count))
            whole, window = best.values()
            yield size, mode, whole, window, window / whole


def _median_ms(fn, *args, repeats=40):
    """Median wall time of `fn(*args)` (a `tf.function`; the inputs are arguments, not captured
    constants, which grappler could fold away)."""
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def op_rows(sizes=SIZES):
    """Yields `(step, ms per image)`: where one 500x375 image's time goes (median of 40 calls of
    each step alone as a `tf.function`, one at a time)."""
    data = tf.constant(jpeg_images(count=1)[0])
    shape = tf.image.extract_jpeg_shape(data)
    eval_window = input_pipeline.center_crop_window(shape, 224)
    random = tf.constant([40, 90, 260, 300])   # about half the area, as a random crop's mean
    decode = tf.function(lambda d: tf.io.decode_jpeg(d, channels=3))
    window = tf.function(lambda d, w: tf.image.decode_and_crop_jpeg(d, w, channels=3))
    yield "decode the whole JPEG", _median_ms(decode, data)
    yield "decode the eval window (0.875)", _median_ms(window, data, eval_window)
    yield "decode a 260x300 window", _median_ms(window, data, random)
    crop = window(data, random)
    resize = tf.function(input_pipeline.resize_bicubic)
    finish = tf.function(lambda x: input_pipeline.normalize(tf.image.flip_left_right(x)))
    augment = tf.function(lambda x: randaugment(x, 2, 28.0, tf.constant([1, 2], tf.int64)))
    for size in sizes:
        resized = resize(crop, size)
        pixels = tf.cast(tf.clip_by_value(resized, 0, 255), tf.uint8)
        yield f"bicubic resize to {size}", _median_ms(resize, crop, size)
        yield f"flip + normalise at {size}", _median_ms(finish, resized)
        yield f"RandAugment(2, 28) at {size}", _median_ms(augment, pixels)


def print_table(args=None):
    print("\n### ImageNet input pipeline from JPEG bytes, images/s (issue 25; best of 5 "
          "alternating rounds)\n")
    print("| size | pipeline | decode whole, then crop | bytes, window decoded | speed-up |")
    print("|---:|---|---:|---:|---:|")
    for size, mode, whole, window, ratio in rows():
        print(f"| {size} | {mode} | {whole:.0f} | {window:.0f} | {ratio:.2f}x |")
    print("\n| one 500x375 JPEG, step alone | ms |\n|---|---:|")
    for name, ms in op_rows():
        print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    print(f"Machine: {machine()}\nCommand: python -m benchmarks.jpeg_pipeline")
    print_table()
