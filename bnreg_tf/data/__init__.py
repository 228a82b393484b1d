"""Datasets: the offline scikit-learn digits (`digits`); tfds pipelines come with the trainer."""
from bnreg_tf.nn.backends import require_tensorflow

require_tensorflow(__name__)   # one line under another Keras backend (issue 24)

from bnreg_tf.data.digits import DIGITS_SPLITS, digits_arrays, digits_dataset, digits_indices

__all__ = ["DIGITS_SPLITS", "digits_arrays", "digits_dataset", "digits_indices"]
