"""Input pipelines: augmentation geometry, normalisation, deterministic and resumable order, tfds."""
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bnreg_tf.data import catalog
from bnreg_tf.data.digits import digits_arrays
from bnreg_tf.run.presets import PRESETS
from bnreg_tf.run import inputs


def _digits_config(**changes):
    return PRESETS["digits"].replace(model_dir="/tmp/unused", **changes)


def _batches(dataset, count):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_digits_normalisation_constants_match_the_training_images():
    images = np.concatenate([digits_arrays("train")[0], digits_arrays("validation")[0]])
    (mean,), (std,) = catalog.DATASETS["digits"].normalization
    assert mean == pytest.approx(images.mean(), abs=0.1)
    assert std == pytest.approx(images.std(), abs=0.1)


def test_train_stream_is_deterministic_and_resumes_at_any_step():
    config = _digits_config(epochs=3)
    prep = inputs.preprocessing_for(config, 8)
    full = _batches(inputs.train_dataset(config, prep, "train", 5, 16), 15)
    again = _batches(inputs.train_dataset(config, prep, "train", 5, 16), 15)
    for (x1, y1), (x2, y2) in zip(full, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    for start in (3, 5, 7):  # mid-epoch, epoch boundary, mid second epoch
        resumed = _batches(inputs.train_dataset(config, prep, "train", 5, 16, start), 15 - start)
        assert len(resumed) == 15 - start
        for (x1, y1), (x2, y2) in zip(full[start:], resumed):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
    # Epochs are shuffled differently, and a different seed gives a different order.
    assert not np.array_equal(full[0][1], full[5][1])
    other = _batches(inputs.train_dataset(_digits_config(epochs=3, seed=1), prep, "train", 5, 16), 1)
    assert not np.array_equal(other[0][1], full[0][1])


def test_each_epoch_is_a_permutation_of_the_split():
    config = _digits_config(epochs=2)
    prep = inputs.preprocessing_for(config, 8)
    labels = np.concatenate([y for _, y in _batches(
        inputs.train_dataset(config, prep, "train", 1257, 1), 1257)])
    np.testing.assert_array_equal(np.sort(labels), np.sort(digits_arrays("train")[1]))


def test_crop_flip_is_a_window_of_the_zero_padded_image(rng):
    config = PRESETS["wrn28_10_cifar10"].replace(model_dir="/tmp/unused")
    prep = inputs.preprocessing_for(config, 32)
    assert prep.augment == "crop_flip" and prep.eval_kind == "plain"
    image = rng.integers(1, 256, size=(32, 32, 3), dtype=np.uint8)
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)]).astype(np.float32)
    seen_flip = seen_plain = False
    for i in range(12):
        out = prep.train(tf.constant(image), tf.constant([i, 0], tf.int64)).numpy()
        raw = out * np.array(prep.std) + np.array(prep.mean)
        matches = []
        for flip in (False, True):
            source = padded[:, ::-1] if flip else padded
            for y in range(9):
                for x in range(9):
                    if np.allclose(source[y:y + 32, x:x + 32], raw, atol=1e-3):
                        matches.append(flip)
        assert matches, "output is not a (flipped) 32x32 window of the padded image"
        seen_flip |= True in matches
        seen_plain |= False in matches
    assert seen_flip and seen_plain


def test_goyal_eval_resizes_the_short_side_then_center_crops(rng):
    config = PRESETS["resnet50_imagenet"].replace(model_dir="/tmp/unused")
    prep = inputs.preprocessing_for(config, 224)
    image = rng.integers(0, 256, size=(300, 450, 3), dtype=np.uint8)
    out = prep.evaluate(tf.constant(image)).numpy()
    resized = tf.image.resize(image, [256, 384]).numpy()
    want = (resized[16:240, 80:304] - np.array(prep.mean)) / np.array(prep.std)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
    crops = [prep.train(tf.constant(image), tf.constant([i, 2], tf.int64)).numpy()
             for i in range(3)]
    assert all(c.shape == (224, 224, 3) for c in crops)
    assert not np.allclose(crops[0], crops[1])


def test_efficientnet_runs_use_the_reference_preprocessing():
    config = PRESETS["efficientnet_b8_imagenet"].replace(model_dir="/tmp/unused")
    prep = inputs.preprocessing_for(config, 672)
    assert (prep.augment, prep.eval_kind, prep.randaugment) == \
        ("randaugment", "efficientnet", (2, 28, "reference"))


def test_missing_tfds_data_fails_fast_with_instructions():
    empty = tempfile.mkdtemp()
    with pytest.raises(catalog.DataError) as error:
        catalog.load("cifar10", "train", empty)
    assert f"tfds build cifar10 --data_dir={empty}" in str(error.value)
    with pytest.raises(catalog.DataError) as error:
        catalog.load("imagenet2012", "train", empty)
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar" in message and f"{empty}/downloads/manual" in message
    assert "\n" not in message


@pytest.mark.parametrize("name,size", [("cifar10", 32), ("svhn_cropped", 32)])
def test_tfds_pipelines_on_mocked_data(name, size):
    config = PRESETS["digits"].replace(model_dir="/tmp/unused", dataset=name, epochs=1,
                                       augment="auto")
    prep = inputs.preprocessing_for(config, size)
    with tfds.testing.mock_data(num_examples=20):
        splits = catalog.plan(name)[1]
        train, holdout = splits.train, splits.validation
        batches = _batches(inputs.train_dataset(config, prep, train, 2, 8), 2)
        evaluation = list(inputs.eval_dataset(config, prep, holdout, 8))
    assert [b[0].shape for b in batches] == [(8, size, size, 3)] * 2
    assert all(b[0].dtype == np.float32 and np.all(np.isfinite(b[0])) for b in batches)
    assert sum(len(y) for _, y in evaluation) == 20  # mock_data ignores the slice
