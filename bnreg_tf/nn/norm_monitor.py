"""The norm diagnostics of paper section 4.2 and Figures 2-3 as a Keras callback (`NormMonitor`).

Its sibling at initialisation, the signal propagation plots, is `bnreg_tf.nn.signal_propagation`.
"""
import logging

import keras
import numpy as np

from bnreg_tf.nn import penalties


def _is_dataset(data):
    """A `tf.data.Dataset`, told by its methods (this floor does not import TensorFlow)."""
    return hasattr(data, "as_numpy_iterator") and hasattr(data, "cardinality")


def _infinite(dataset):
    return int(dataset.cardinality()) == -1   # tf.data.INFINITE_CARDINALITY


def probe_images(data, max_examples=None):
    """The images of `data` (array, `(images, labels)` or a `tf.data.Dataset` of either) as
    one NumPy array of at most `max_examples` rows."""
    if _is_dataset(data):
        if max_examples is None and _infinite(data):
            raise ValueError("NormMonitor: the probe dataset is infinite; pass max_examples")
        batches, count = [], 0
        for batch in data:
            images = np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch)
            batches.append(images)
            count += len(images)
            if max_examples is not None and count >= max_examples:
                break
        if not batches:
            raise ValueError("NormMonitor: the probe dataset is empty")
        data = np.concatenate(batches)
    elif isinstance(data, (tuple, list)):
        data = data[0]
    data = np.asarray(data)
    return data if max_examples is None else data[:max_examples]


def find_classifier(model, embedding_width, num_classes):
    """The unique Dense layer with a [H, K] kernel, or None (then no Dropout penalty is logged)."""
    found = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Dense)
        and tuple(layer.kernel.shape) == (embedding_width, num_classes)
    ]
    return found[0] if len(found) == 1 else None


class NormMonitor(keras.callbacks.Callback):
    """Logs the embedding and output norms of a fixed probe batch at each epoch end.

    `probe_data`: the probe images, at the scale the model expects (what `fit` gets), as a
    NumPy array or tensor [N, ...], an `(images, labels)` tuple (labels ignored), or a
    `tf.data.Dataset` of such batches, whose batches are read once, when the monitor is made,
    and concatenated (`max_examples` caps the count; an infinite dataset needs it). The probe is
    then fixed: every epoch measures the same images. The model must return
    `{"logits", "embedding"}` (bnreg's models; `regularize(..., return_embedding=True)`).

    Keys added to `logs` (so History, CSVLogger and TensorBoard record them; place CSVLogger
    and TensorBoard after this callback):
    `probe_embedding_norm_sq` (E||Emb||^2), `probe_output_norm_sq` (E||NN||^2),
    `probe_embedding_l2` (/H), `probe_functional_l2` (/K) and, when the classifier is a Dense
    layer, `probe_dropout_penalty` (tr(W diag(E[ee^T]) W^T)). Measured in inference mode
    (paper section 4.2, Figures 2-3). The values before training are kept in `self.initial`;
    `self.history` holds every epoch. There is no randomness, hence no seed.
    """

    def __init__(self, probe_data, classifier_layer=None, max_examples=None):
        super().__init__()
        self.probe = probe_images(probe_data, max_examples)
        self.classifier_layer = classifier_layer
        self.initial = None
        self.history = []

    def measure(self):
        out = self.model(self.probe, training=False)
        if not (isinstance(out, dict) and {"logits", "embedding"} <= set(out)):
            raise ValueError("NormMonitor needs a model returning {'logits', 'embedding'} (use "
                             "regularize(model, ..., return_embedding=True) for your own)")
        embedding = np.asarray(out["embedding"], dtype=np.float64).reshape(len(self.probe), -1)
        logits = np.asarray(out["logits"], dtype=np.float64).reshape(len(self.probe), -1)
        values = {
            "probe_embedding_norm_sq": float(np.mean(np.sum(embedding**2, axis=1))),
            "probe_output_norm_sq": float(np.mean(np.sum(logits**2, axis=1))),
            "probe_embedding_l2": float(penalties.embedding_l2(out["embedding"])),
            "probe_functional_l2": float(penalties.functional_l2(out["logits"])),
        }
        classifier = self._classifier(embedding.shape[1], logits.shape[1])
        if classifier is not None:
            values["probe_dropout_penalty"] = float(
                penalties.dropout_penalty(classifier.kernel, out["embedding"])
            )
        return values

    def _classifier(self, width, classes):
        if self.classifier_layer is None:
            self.classifier_layer = find_classifier(self.model, width, classes) or False
            if not self.classifier_layer:
                logging.warning("NormMonitor: no unique [%d, %d] Dense classifier; "
                                "probe_dropout_penalty is not logged", width, classes)
        if isinstance(self.classifier_layer, str):
            return self.model.get_layer(self.classifier_layer)
        return self.classifier_layer or None

    def on_train_begin(self, logs=None):
        if self.initial is None:
            self.initial = self.measure()

    def on_epoch_end(self, epoch, logs=None):
        values = self.measure()
        self.history.append(values)
        if logs is not None:
            logs.update(values)
