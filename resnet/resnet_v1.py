"""ResNet v1 for ImageNet in the Goyal et al. (2017) form: stride on the 3x3, last BN gamma 0.

Post-activation blocks (He et al. 2016), projection (1x1 conv) shortcuts when the shape
changes, a 7x7/2 stem and a 3x3/2 max pool. ResNet-50 has 25,557,032 trainable parameters with
BN and no conv biases. In the Fixup modes the blocks follow the Fixup reference's ImageNet
bottleneck: biases before each conv and activation, a multiplier and bias ending the branch,
the projection shortcut taking the biased block input. In `nf_resnet` the blocks are
pre-activation, `x + alpha * f(act(x) / beta)` with no ReLU after the Add or the stem and one
before the pool: the reference's NF-ResNet (`resnet.norm.NormPolicy`); `skipinit` (revision 2)
is the SkipInit reference's pre-activation ResNet in the same way, without alpha and beta.
"""
import dataclasses

import keras

from bnreg_tf.nn.init import Seeds
from bnreg_tf.nn.regularization import regularize
from bnreg_tf.nn import revisions
from resnet.norm import NormPolicy, drop_rate


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    bottleneck: bool
    stage_sizes: tuple
    widths: tuple = (64, 128, 256, 512)
    stem_width: int = 64

    @property
    def expansion(self):
        return 4 if self.bottleneck else 1

    @property
    def layers_per_branch(self):
        return 3 if self.bottleneck else 2


RESNETS = {
    18: ResNetSpec(False, (2, 2, 2, 2)),
    34: ResNetSpec(False, (3, 4, 6, 3)),
    50: ResNetSpec(True, (3, 4, 6, 3)),
    101: ResNetSpec(True, (3, 4, 23, 3)),
    152: ResNetSpec(True, (3, 8, 36, 3)),
}


def residual_block(x, filters, stride, spec, policy, name):
    """Bottleneck (1x1, 3x3 with the stride, 1x1 x4) or basic (3x3 with the stride, 3x3) block."""
    kernels = (1, 3, 1) if spec.bottleneck else (3, 3)
    widths = (filters, filters, filters * 4) if spec.bottleneck else (filters, filters)
    strides = (1, stride, 1) if spec.bottleneck else (stride, 1)
    projection = stride != 1 or x.shape[-1] != widths[-1]
    block_input = x
    if policy.preactivation:
        block_input = policy.activate(x, f"{name}_act0")
        block_input = policy.branch_input(block_input, name, projection)
    block_input = policy.pre_conv(block_input, f"{name}_conv1")
    y = block_input
    for i, (kernel, width, step) in enumerate(zip(kernels, widths, strides), start=1):
        last = i == len(kernels)
        if i > 1:
            y = policy.pre_conv(y, f"{name}_conv{i}")
        y = policy.conv(y, width, kernel, step, f"{name}_conv{i}",
                        "branch_last" if last else "branch")
        if last:
            y = policy.branch_end(y, f"{name}_branch")
        y = policy.site(y, f"{name}_site{i}", zero_gamma=last)
        if not last:
            y = policy.activate(y, f"{name}_act{i}")
    if projection:
        x = policy.conv(block_input, widths[-1], 1, stride, f"{name}_shortcut", "shortcut")
        x = policy.site(x, f"{name}_shortcut_site", fixup_bias=False)
    y = keras.layers.Add(name=f"{name}_add")([x, policy.drop_path(y, name)])
    return y if policy.preactivation else policy.activate(y, f"{name}_out")


def build_resnet_v1(spec, *, num_classes, input_shape=(224, 224, 3), norm="batchnorm",
                    activation="relu", dropout=0.0, seed=None, name="resnet", survival_prob=1.0,
                    skipinit_gain=0.0, revision=revisions.LATEST, **penalties):
    """ResNet v1 of `spec` (`RESNETS[50]` is ResNet-50); returns an uncompiled `keras.Model`
    named `<name>_<norm>` with bnreg's output contract `{"logits": [B, K], "embedding": [B, H]}`
    (H = 2048 for ResNet-50; logits in float32). The arguments are `build_wide_resnet`'s.
    """
    policy = NormPolicy(norm, num_blocks=sum(spec.stage_sizes),
                        layers_per_branch=spec.layers_per_branch, activation=activation,
                        seeds=Seeds(seed), revision=revision, skipinit_gain=skipinit_gain,
                        drop_rate=drop_rate(survival_prob))
    inputs = keras.Input(input_shape, name="images")
    x = policy.conv(inputs, spec.stem_width, 7, 2, "stem_conv", "stem")
    x = policy.site(x, "stem_site")
    if not policy.preactivation:
        x = policy.activate(x, "stem_act")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (blocks, filters) in enumerate(zip(spec.stage_sizes, spec.widths), start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            x = residual_block(x, filters, stride, spec, policy, f"stage{stage}_block{block}")
    x = policy.final_site(x, "final", has_site=False)
    if policy.preactivation:
        x = policy.activate(x, "final_act")
    embedding = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = policy.head(embedding, num_classes)
    model = keras.Model(inputs, outputs, name=f"{name}_{norm}")
    return regularize(model, dropout=dropout, seed=seed, norm_sites=policy.sites,
                      **penalties)
