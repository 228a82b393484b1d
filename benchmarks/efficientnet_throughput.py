"""Training-step throughput: our EfficientNet-B0 vs keras.applications.EfficientNetB0.

Issues 4 and 17 (the "Keras BN" row: bnreg's model with `keras.layers.BatchNormalization`).
Same input size, batch and 1000 classes, measured in the same run with the compilation mode
bnreg picks for the device, in alternating rounds (best round each). keras.applications' B0 has
no drop-connect in the same place and no penalty layers; ours runs with its reference dropout
and drop-connect.
"""
import keras

import efficientnet
from benchmarks.timing import conv_dense_flops, interleaved_throughput, keras_batchnorm


def rows(image_size=64, batch_size=32, steps=10):
    """Yields `(model, train GFLOP/image, images/s, ratio vs keras.applications)` rows."""
    shape = (image_size, image_size, 3)
    theirs = keras.applications.EfficientNetB0(weights=None, input_shape=shape, classes=1000,
                                               classifier_activation=None)
    ours = efficientnet.build_model("b0", num_classes=1000, input_shape=shape)
    with keras_batchnorm():
        ours_keras_bn = efficientnet.build_model("b0", num_classes=1000, input_shape=shape)
    pairs = (("keras.applications.EfficientNetB0", theirs), ("bnreg efficientnet b0", ours),
             ("bnreg efficientnet b0, Keras BN", ours_keras_bn))
    rates = interleaved_throughput([model for _, model in pairs], batch_size, 1000, steps)
    for (label, model), rate in zip(pairs, rates):
        yield label, 3 * conv_dense_flops(model) / 1e9, rate, rate / rates[0]
