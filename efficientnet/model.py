"""EfficientNet-B0..B8 and L2 following the TPU reference (docs/references.md §5).

One builder over two tables (`params.B0_ROWS`, `params.SCALING`). Conv kernels are normal with
std sqrt(2 / fan_out) (not truncated), the classifier uniform +-1/sqrt(K), BN momentum 0.99 and
epsilon 1e-3. Stochastic depth is per sample (`bnreg_tf.nn.layers.StochasticDepth`).
"""
import string

import keras

from bnreg_tf.nn import batchnorm, conv
from bnreg_tf.nn.heads import classifier_head
from bnreg_tf.nn.init import Seeds, he_normal_fan_out
from bnreg_tf.nn.layers import StochasticDepth
from bnreg_tf.nn.regularization import regularize
from efficientnet.params import HEAD_FILTERS, SCALING, STEM_FILTERS, drop_rates, round_filters, scaled_rows


class _Builder:
    """Holds what every layer shares: BN settings and a seed counter."""

    def __init__(self, bn_momentum, bn_epsilon, seed):
        self.bn_momentum, self.bn_epsilon, self.next_seed = bn_momentum, bn_epsilon, Seeds(seed)

    def conv(self, x, filters, kernel, name, stride=1, use_bias=False):
        return conv.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=use_bias,
            kernel_initializer=he_normal_fan_out(self.next_seed()), name=name)(x)

    def bn_swish(self, x, name, activate=True):
        x = batchnorm.BatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, name=f"{name}_bn")(x)
        return keras.layers.Activation("swish", name=f"{name}_activation")(x) if activate else x

    def mbconv(self, x, row, in_filters, stride, drop_rate, name):
        """Expand 1x1 -> depthwise -> squeeze-excite -> project 1x1 (+ drop-connect skip)."""
        inputs = x
        filters = in_filters * row.expand
        if row.expand != 1:
            x = self.bn_swish(self.conv(x, filters, 1, f"{name}_expand_conv"), f"{name}_expand")
        x = keras.layers.DepthwiseConv2D(
            row.kernel, strides=stride, padding="same", use_bias=False,
            depthwise_initializer=he_normal_fan_out(self.next_seed()), name=f"{name}_dwconv")(x)
        x = self.bn_swish(x, name)
        squeeze = max(1, int(in_filters * row.se_ratio))
        se = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(x)
        se = keras.layers.Activation("swish", name=f"{name}_se_activation")(
            self.conv(se, squeeze, 1, f"{name}_se_reduce", use_bias=True))
        se = keras.layers.Activation("sigmoid", name=f"{name}_se_gate")(
            self.conv(se, filters, 1, f"{name}_se_expand", use_bias=True))
        x = keras.layers.Multiply(name=f"{name}_se_excite")([x, se])
        x = self.bn_swish(self.conv(x, row.out_filters, 1, f"{name}_project_conv"),
                          f"{name}_project", activate=False)
        if stride == 1 and in_filters == row.out_filters:
            if drop_rate > 0:
                x = StochasticDepth(drop_rate, seed=self.next_seed(), name=f"{name}_drop")(x)
            x = keras.layers.Add(name=f"{name}_add")([x, inputs])
        return x


def build_model(variant, *, num_classes, input_shape=None, dropout=None, survival_prob=0.8,
                batch_norm_momentum=0.99, batch_norm_epsilon=1e-3, seed=None, **penalties):
    """EfficientNet `variant` (b0..b8, l2); returns an uncompiled `keras.Model` with bnreg's output
    contract `{"logits": [B, K], "embedding": [B, H]}` (H = the head width, 1280 for B0;
    the embedding is the global average pool, before Dropout; logits in float32).

    Inputs: float images [B, R, R, 3] normalised with ImageNet's mean/std on the 0..255 scale
    (`efficientnet.input_pipeline.preprocess`); no preprocessing is inside the model. It takes what any Keras
    model takes: arrays, tensors or a `tf.data.Dataset`. `input_shape` defaults to the
    variant's resolution R.

    `dropout=None` uses the variant's reference rate; `dropout=0` is the paper's no-Dropout
    baseline. `survival_prob` is the keep probability of the last block's drop-connect (1.0
    disables stochastic depth). `**penalties` are coefficients by their names in
    `bnreg_tf.nn.PENALTIES` (`embedding_l2=0.1`, ...), attached by `bnreg_tf.regularize`. `seed` (int or None) makes the initial weights,
    the drop-connect masks and the Dropout masks reproducible.
    """
    if variant not in SCALING:
        raise ValueError(f"EfficientNet variant must be one of {', '.join(SCALING)}; got {variant!r}")
    if not 0.0 < survival_prob <= 1.0:
        raise ValueError(f"survival_prob must be in (0, 1], got {survival_prob!r}")
    scaling = SCALING[variant]
    rows = scaled_rows(scaling)
    builder = _Builder(batch_norm_momentum, batch_norm_epsilon, seed)
    if input_shape is None:
        input_shape = (scaling.resolution, scaling.resolution, 3)
    inputs = keras.Input(input_shape, name="images")
    x = builder.conv(inputs, round_filters(STEM_FILTERS, scaling.width), 3, "stem_conv", stride=2)
    x = builder.bn_swish(x, "stem")
    rates = drop_rates(sum(row.repeats for row in rows), survival_prob)
    index = 0
    for number, row in enumerate(rows, start=1):
        for repeat in range(row.repeats):
            first = repeat == 0
            x = builder.mbconv(
                x, row, row.in_filters if first else row.out_filters, row.stride if first else 1,
                rates[index], f"block{number}{string.ascii_lowercase[repeat]}")  # <= 22 repeats
            index += 1
    x = builder.bn_swish(builder.conv(x, round_filters(HEAD_FILTERS, scaling.width), 1,
                                      "head_conv"), "head")
    embedding = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    limit = 1.0 / num_classes**0.5
    outputs = classifier_head(
        embedding, num_classes,
        kernel_initializer=keras.initializers.RandomUniform(-limit, limit, builder.next_seed()))
    model = keras.Model(inputs, outputs, name=f"efficientnet_{variant}")
    return regularize(model, dropout=scaling.dropout if dropout is None else dropout, seed=seed,
                      **penalties)
