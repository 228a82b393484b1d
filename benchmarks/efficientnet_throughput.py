"""Training-step throughput: our EfficientNet-B0 vs keras.applications.EfficientNetB0.

Issues 4 and 17. keras.applications' model trains with `keras.optimizers.SGD`, ours with the
trainer's fused `bnreg_tf.run.optimizers.SGD`; the "before issue 17" row is our model with Keras'
BatchNormalization, Conv2D and SGD.
Same input size, batch and 1000 classes, measured in the same run with the compilation mode
bnreg picks for the device, in alternating rounds (best round each). keras.applications' B0 has
no drop-connect in the same place and no penalty layers; ours runs with its reference dropout
and drop-connect.
"""
import keras

import efficientnet
from bnreg_tf.run import optimizers
from benchmarks.timing import conv_dense_flops, interleaved_throughput, keras_layers


def rows(image_size=64, batch_size=32, steps=10):
    """Yields `(model, train GFLOP/image, images/s, ratio vs keras.applications)` rows."""
    shape = (image_size, image_size, 3)
    theirs = keras.applications.EfficientNetB0(weights=None, input_shape=shape, classes=1000,
                                               classifier_activation=None)
    ours = efficientnet.build_model("b0", num_classes=1000, input_shape=shape)
    with keras_layers():
        before = efficientnet.build_model("b0", num_classes=1000, input_shape=shape)
    pairs = (("keras.applications.EfficientNetB0", theirs), ("bnreg efficientnet b0", ours),
             ("bnreg efficientnet b0 before issue 17", before))
    rates = interleaved_throughput([model for _, model in pairs], batch_size, 1000, steps,
                                   sgds=[keras.optimizers.SGD, optimizers.SGD,
                                         keras.optimizers.SGD])
    for (label, model), rate in zip(pairs, rates):
        yield label, 3 * conv_dense_flops(model) / 1e9, rate, rate / rates[0]
