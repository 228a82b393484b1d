"""Which parts of bnreg run on which Keras 3 backend (issue 24; README, "Which parts run where").

The building blocks (`bnreg_tf.nn`) and the model code (`resnet`, `efficientnet.model`,
`efficientnet.params`) run on any backend. The floors above them are TensorFlow programs
(tf.data, tf.distribute, checkpoints, SavedModel; docs/architecture.md): `bnreg_tf.data`,
`bnreg_tf.run`, `bnreg_tf.study`, `bnreg_tf.cli` and the EfficientNet reference's TF recipe
(`efficientnet.optim`, `.input_pipeline`, `.augment_ops`). Each of those calls
`require_tensorflow(__name__)` before importing anything else, so that under another backend
the import stops with one line saying why and what runs there, instead of a failure deep in
TensorFlow or Keras.
"""
import keras

TENSORFLOW_ONLY = "the trainer, binaries, study, tf.data pipelines and SavedModel export"
ANY_BACKEND = "bnreg_tf.nn, resnet and efficientnet.model"


def require_tensorflow(module):
    """Raises ImportError (one line) unless Keras runs on TensorFlow; `module` is the importer's
    `__name__`."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            f"{module} runs on TensorFlow only and Keras runs on {backend!r} here "
            f"(KERAS_BACKEND): {TENSORFLOW_ONLY} need TensorFlow; on {backend} use "
            f"{ANY_BACKEND} (README, 'Which parts run where')")
