"""`PenalizedModel`: a functional Keras model that logs its penalty layers' values on every
backend (issue 24; the penalties are the paper's, sections 2-3, docs/references.md §1).

A penalty layer (`bnreg_tf.nn.layers.PenaltyLayer`) adds `coefficient * penalty` to the loss
with `add_loss`, which works on every backend, and logs the raw penalty as a metric named after
the layer. On TensorFlow and PyTorch it updates that metric inside `call`. JAX's `fit` is
stateless: the forward pass runs in a `StatelessScope` holding the model's weights only, and the
metrics' variables are mapped and returned by the scope of `compute_loss` alone (Keras 3.15,
`JAXTrainer.compute_loss_and_updates` -> `Trainer.stateless_compute_loss`), the same traced
function, so the forward pass's values are still valid there. So on JAX the layer keeps its
value (`PenaltyLayer.log_value`) and this model's `compute_loss` logs it (`log_pending`).

`regularize` returns a `PenalizedModel` whenever it attaches a penalty layer; a model built by
hand with penalty layers logs them on JAX when built as `PenalizedModel(inputs, outputs)`
instead of `keras.Model(inputs, outputs)` (same arguments, same functional model otherwise).
"""
import keras

from bnreg_tf.nn import layers as bl


@keras.saving.register_keras_serializable(package="bnreg")
class PenalizedModel(keras.Model):
    """`keras.Model(inputs, outputs)` whose penalty layers' values reach `History` and the
    progress lines on every backend, JAX's stateless training step included (module docstring).
    """

    def penalty_layers(self):
        """Every `PenaltyLayer` of the model, nested models included, in graph order."""
        return [layer for layer in self._flatten_layers(include_self=False)
                if isinstance(layer, bl.PenaltyLayer)]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' loss (compiled loss + every `add_loss` term); in training, first logs the
        penalty values the forward pass kept (JAX only; elsewhere nothing is kept)."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if training:
            for layer in self.penalty_layers():
                if layer.value_metric is not None:
                    layer.log_pending()
        return loss
