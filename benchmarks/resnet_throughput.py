"""Training-step throughput: our ResNet-50 vs keras.applications.ResNet50, WRN-16-4 per mode.

Issues 3 and 17. Same input size, batch and classes for both ResNet-50s, measured in the
same run, both with the compilation mode bnreg picks for the device (graph mode on a CPU).
keras.applications' model trains with `keras.optimizers.SGD`, ours with the trainer's fused
`bnreg_tf.run.optimizers.SGD`; the "before issue 17" rows are the same bnreg networks with Keras'
BatchNormalization, Conv2D and SGD.
"""
import keras

import resnet
from bnreg_tf.run import models
from bnreg_tf.run import optimizers
from benchmarks.timing import conv_dense_flops, interleaved_throughput, keras_layers


def rows(image_size=64, batch_size=32, steps=10):
    """Yields `(model, train GFLOP/image, images/s, GFLOP/s, ratio)` rows.

    Ratios are against keras.applications.ResNet50 for ResNet-50, WRN-16-4 batchnorm for WRN.
    Train FLOPs are 3x the analytic forward FLOPs of the conv and dense layers.
    """
    shape = (image_size, image_size, 3)
    ours = models.build("resnet50", num_classes=1000, input_shape=shape, norm="batchnorm")
    with keras_layers():
        before = models.build("resnet50", num_classes=1000, input_shape=shape,
                                    norm="batchnorm")
    theirs = keras.applications.ResNet50(weights=None, input_shape=shape, classes=1000,
                                         classifier_activation=None)
    pairs = [("keras.applications.ResNet50", theirs), ("bnreg resnet50 batchnorm", ours),
             ("bnreg resnet50 batchnorm before issue 17", before)]
    rates = interleaved_throughput([model for _, model in pairs], batch_size, 1000, steps,
                                   sgds=[keras.optimizers.SGD, optimizers.SGD,
                                         keras.optimizers.SGD])
    for (label, model), rate in zip(pairs, rates):
        flops = 3 * conv_dense_flops(model) / 1e9
        yield label, flops, rate, flops * rate, rate / rates[0]
    wrns = [(norm, models.build("wrn16_4", num_classes=10, norm=norm))
            for norm in resnet.NORM_MODES]
    with keras_layers():
        wrns.append(("batchnorm before issue 17", models.build("wrn16_4", num_classes=10,
                                                                     norm="batchnorm")))
    rates = interleaved_throughput([model for _, model in wrns], batch_size, 10, steps,
                                   sgds=[optimizers.SGD] * (len(wrns) - 1) + [keras.optimizers.SGD])
    for (norm, model), rate in zip(wrns, rates):
        flops = 3 * conv_dense_flops(model) / 1e9
        yield f"wrn16_4 {norm} (32 px)", flops, rate, flops * rate, rate / rates[0]
