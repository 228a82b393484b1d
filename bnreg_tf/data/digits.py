"""scikit-learn's bundled 8x8 handwritten digits (1,797 real images, UCI optdigits test set).

The offline default dataset: it ships inside scikit-learn, so nothing is downloaded. Images come
as tfds-style `{"image": uint8 [8, 8, 1], "label": int64}`, the 0..16 grey levels mapped onto
0..255. The split is a fixed permutation (seed 0), the same on every machine.
"""
import numpy as np

DIGITS_SPLITS = {"train": 1257, "validation": 180, "test": 360}
_SPLIT_SEED = 0


def digits_indices(split):
    """Indices into `sklearn.datasets.load_digits()` of `split` (disjoint, covering all 1,797)."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"digits split must be one of {sorted(DIGITS_SPLITS)}, got {split!r}")
    order = np.random.default_rng(_SPLIT_SEED).permutation(sum(DIGITS_SPLITS.values()))
    names = list(DIGITS_SPLITS)
    start = sum(DIGITS_SPLITS[name] for name in names[: names.index(split)])
    return order[start : start + DIGITS_SPLITS[split]]


def digits_arrays(split):
    """Returns `(images uint8 [N, 8, 8, 1], labels int64 [N])` of `split`."""
    from sklearn.datasets import load_digits

    index = digits_indices(split)
    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images[index], bunch.target.astype(np.int64)[index]


def digits_dataset(split):
    """The split as an unbatched `tf.data.Dataset` of tfds-style feature dicts."""
    import tensorflow as tf

    images, labels = digits_arrays(split)
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
