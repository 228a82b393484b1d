"""Norm diagnostics of paper section 4.2 and Figures 2-3, as a Keras callback."""
import logging

import keras
import numpy as np

from bnreg_tf import penalties


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

    Keys added to `logs` (so History, CSVLogger and TensorBoard record them; place CSVLogger
    and TensorBoard after this callback):
    `probe_embedding_norm_sq` (E||Emb||^2), `probe_output_norm_sq` (E||NN||^2),
    `probe_embedding_l2` (/H), `probe_functional_l2` (/K) and, when the classifier is a Dense
    layer, `probe_dropout_penalty` (tr(W diag(E[ee^T]) W^T)). Measured in inference mode.
    The values before training are kept in `self.initial`; `self.history` holds every epoch.
    """

    def __init__(self, probe_data, classifier_layer=None):
        super().__init__()
        if isinstance(probe_data, (tuple, list)):
            probe_data = probe_data[0]
        self.probe = probe_data
        self.classifier_layer = classifier_layer
        self.initial = None
        self.history = []

    def measure(self):
        out = self.model(self.probe, training=False)
        if not (isinstance(out, dict) and {"logits", "embedding"} <= set(out)):
            raise ValueError("NormMonitor needs a model returning {'logits', 'embedding'}")
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
