"""The offline digits dataset: deterministic, disjoint splits of the real 1,797 images."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from bnreg_tf.data import DIGITS_SPLITS, digits_arrays, digits_dataset, digits_indices


def test_splits_partition_all_1797_images():
    index = np.concatenate([digits_indices(split) for split in DIGITS_SPLITS])
    assert len(index) == 1797
    np.testing.assert_array_equal(np.sort(index), np.arange(1797))


def test_arrays_are_the_sklearn_images_rescaled():
    bunch = load_digits()
    images, labels = digits_arrays("validation")
    index = digits_indices("validation")
    assert images.shape == (180, 8, 8, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, bunch.target[index])
    np.testing.assert_array_equal(images[..., 0], np.round(bunch.images[index] * 255 / 16))
    assert images.max() == 255 and images.min() == 0


def test_dataset_is_tfds_shaped_and_deterministic():
    first = [ex["label"].numpy() for ex in digits_dataset("test")]
    again = [ex["label"].numpy() for ex in digits_dataset("test")]
    assert len(first) == DIGITS_SPLITS["test"] and first == again
    spec = digits_dataset("train").element_spec
    assert spec["image"].shape == (8, 8, 1) and spec["image"].dtype.name == "uint8"


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="digits split"):
        digits_indices("extra")
