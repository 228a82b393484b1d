"""Crop + resize of the EfficientNet eval transform in tf.data: TF1 `resize_bicubic` (what
bnreg uses, the reference's op) vs TF2 `tf.image.resize(method="bicubic")` (what it used before).

    python -m benchmarks.resize_throughput

Both crop the reference's centre square of 375x500 uint8 images and resize it to 224 px, per
image inside `Dataset.map`; best of `rounds` alternating rounds each.
"""
import numpy as np
import tensorflow as tf

from benchmarks.timing import machine, map_images_per_second
from efficientnet import input_pipeline


def _crop(image, size):
    window = input_pipeline.center_crop_window(tf.shape(image), size)
    return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])


def rows(size=224, shape=(375, 500), count=2560, rounds=5, seed=0):
    """Yields `(resize, images/s, ratio to tf.image.resize)` rows."""
    images = np.random.default_rng(seed).integers(0, 256, size=(64, *shape, 3), dtype=np.uint8)
    resizes = {
        "tf.image.resize bicubic (TF2)": lambda i, im: tf.image.resize(
            _crop(im, size), [size, size], method="bicubic"),
        "ResizeBicubic, half_pixel_centers=False (TF1, bnreg)": lambda i, im: (
            input_pipeline.resize_bicubic(_crop(im, size), size)),
    }
    best = dict.fromkeys(resizes, 0.0)
    for _ in range(rounds):
        for name, resize in resizes.items():
            best[name] = max(best[name], map_images_per_second(images, resize, count))
    baseline = best["tf.image.resize bicubic (TF2)"]
    for name, rate in best.items():
        yield name, rate, rate / baseline


if __name__ == "__main__":
    print(f"Machine: {machine()}\nCommand: python -m benchmarks.resize_throughput\n")
    print("| crop + resize 375x500 -> 224 | images/s | ratio |\n|---|---:|---:|")
    for name, rate, ratio in rows():
        print(f"| {name} | {rate:.0f} | {ratio:.2f}x |")
