"""Keras BatchNormalization on TensorFlow's fused kernel (issue 17; `bnreg_tf.nn.tf_kernels`).

Keras 3's `BatchNormalization` on the TensorFlow backend is not fused: `tf.nn.moments` (mean,
squared difference, mean) and `tf.nn.batch_normalization` run as separate ops over the
activation, after casting float16/bfloat16 activations to float32. `BatchNormalization` here
computes the same function with one `FusedBatchNormV3` (oneDNN on CPU, cuDNN on GPU) forward
and one `FusedBatchNormGradV3` backward, statistics in float32 whatever the activation dtype.

It is a subclass of Keras' layer that only overrides `call`, so everything else is Keras': the
constructor and its conventions (`momentum` is the weight of the OLD moving value, `epsilon` is
added to the variance), the weights `gamma`, `beta`, `moving_mean`, `moving_variance` in that
order with those names (checkpoints written with Keras' layer restore into it), `get_config`,
`trainable=False` meaning inference mode, and every `isinstance(layer,
keras.layers.BatchNormalization)` check (weight-decay exclusion, EfficientNet's weight average).
It keeps Keras' class NAME on purpose: `.weights.h5` and `.keras` files key each layer's
weights by its snake-cased class name (`layers/batch_normalization_3/vars`), so a class named
otherwise could not load weights saved from Keras' layer. The registered name
`bnreg>BatchNormalization` tells the two apart in `.keras` configs.

Exactly Keras' semantics, including the moving-statistics update: Keras averages the BIASED batch
variance (`tf.nn.moments`), whereas FusedBatchNormV3 in training returns the Bessel-corrected
one, `n / (n - 1)` times it (n = batch x height x width); it is multiplied back by `(n - 1) / n`.
The epsilon is passed unchanged (tf.compat.v1 `fused_batch_norm` raised it to 1.001e-5 for old
cuDNN; cuDNN 7.5+ accepts any epsilon > 0).

Training mode runs the fused kernel on 4-D channels-last inputs; anything else (other ranks or
axes, a mask, `synchronized=True` cross-replica statistics, `renorm`, float64) runs Keras' own
`call`. So does inference (`training=False` or a frozen layer), on purpose: TensorFlow's grappler
remapper rewrites `FusedBatchNormV3 -> Relu` into oneDNN's `_FusedBatchNormEx` on CPU, whose
ReLU maps NaN to 0, where Keras' BatchNormalization + ReLU propagate it; an exported model of a
diverged run must not answer with finite logits. In training that rewrite is most of the
speed-up on CPU (ResNet-50), so it is allowed there, and divergence is caught where the rewrite
cannot hide it: `training.Classifier` logs a NaN loss when any gradient is non-finite (a
weight gradient multiplies the NaN activations), and `callbacks.NonFiniteGuard` stops the run.
"""
import keras

_FUSED_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="bnreg")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by `tf.raw_ops.FusedBatchNormV3` where it can."""

    def _fusable(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None
                and not self.synchronized and not self.renorm
                and len(inputs.shape) == 4 and self.axis in (3, -1)
                and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        from bnreg_tf.nn import tf_kernels

        return tf_kernels.fused_batch_norm(self, inputs)
