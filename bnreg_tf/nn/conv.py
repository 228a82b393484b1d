"""A `keras.layers.Conv2D` whose pointwise (1x1, stride 1) convolutions run as one matmul.

Issue 17. A 1x1 convolution with stride 1 is `x @ W` over the flattened positions
([B*H*W, C_in] @ [C_in, C_out]). For ResNet-50's pointwise shapes at 64 px (forward + both
gradients) the matmul measured 0.90-1.21x TensorFlow's oneDNN convolution on this CPU, a few
percent over the set at best (`python -m benchmarks.run --only kernels`;
BUILD_NOTES "Issue 17, third run"). Two thirds of ResNet-50's convolutions and all of
EfficientNet's expand/project convolutions are pointwise.

Same weights, names, shapes, initialisers, config and checkpoint layout as Keras' layer, so
checkpoints written with `keras.layers.Conv2D` restore into it; every other convolution
(larger kernels, strides, dilation, groups, channels_first) is Keras' own code path.
"""
import keras


@keras.saving.register_keras_serializable(package="bnreg")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`; a 1x1 stride-1 convolution is computed as a matmul."""

    def _pointwise(self):
        return (keras.backend.backend() == "tensorflow" and self.kernel_size == (1, 1)
                and self.strides == (1, 1) and self.dilation_rate == (1, 1)
                and self.groups == 1 and self.data_format == "channels_last")

    def convolution_op(self, inputs, kernel):
        if not self._pointwise():
            return super().convolution_op(inputs, kernel)
        from bnreg_tf.nn import tf_kernels

        return tf_kernels.pointwise_convolution(inputs, kernel, self.filters)
