"""Wide ResNets (Zagoruyko & Komodakis 2016): pre-activation basic blocks, 1x1 conv shortcuts.

WRN-d-k has 3 groups of n = (d - 4) / 6 blocks of widths 16k, 32k, 64k (strides 1, 2, 2) after
a 3x3 stem of 16 channels. The paper trains WRN-28-10 on CIFAR-10 and SVHN (section 4.1).
Shortcuts keep the WRN's 1x1 projection in every norm mode, so that the ablation changes the
normalization only (Fixup's CIFAR ResNets use a zero-padded average-pool shortcut instead).
The WRN is pre-activation, the form SkipInit and NF-ResNets are defined in (`resnet.norm`).
"""
import dataclasses
import re

import keras

from bnreg_tf.heads import with_head_penalties
from bnreg_tf.init import Seeds
from resnet.norm import NormPolicy, activation_layer


@dataclasses.dataclass(frozen=True)
class WideResNetSpec:
    depth: int
    width: int

    @property
    def blocks_per_group(self):
        return (self.depth - 4) // 6

    @property
    def widths(self):
        return (16 * self.width, 32 * self.width, 64 * self.width)


def parse_wrn(name):
    """`wrn28_10` -> WideResNetSpec(28, 10); None if `name` is not a WRN name."""
    match = re.fullmatch(r"wrn(\d+)_(\d+)", name)
    if not match:
        return None
    depth, width = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 or width < 1:
        raise ValueError(f"model {name!r}: WRN depth must be 6n+4 >= 10 and width >= 1")
    return WideResNetSpec(depth, width)


def wide_block(x, filters, stride, policy, activation, name):
    """Pre-activation basic block: site-act-conv3x3-site-act-conv3x3 (+ shortcut)."""
    projection = stride != 1 or x.shape[-1] != filters
    pre = activation_layer(activation, f"{name}_act1")(policy.site(x, f"{name}_site1"))
    pre = policy.branch_input(pre, name, projection)
    pre = policy.pre_conv(pre, f"{name}_conv1")
    y = policy.conv(pre, filters, 3, stride, f"{name}_conv1", "branch")
    y = activation_layer(activation, f"{name}_act2")(policy.site(y, f"{name}_site2"))
    y = policy.pre_conv(y, f"{name}_conv2")
    y = policy.conv(y, filters, 3, 1, f"{name}_conv2", "branch_last")
    y = policy.branch_end(y, f"{name}_branch")
    if projection:
        x = policy.conv(pre, filters, 1, stride, f"{name}_shortcut", "shortcut")
    return keras.layers.Add(name=f"{name}_add")([x, y])


def build_wide_resnet(spec, *, num_classes, input_shape, norm, activation, dropout,
                      standardization_kl, embedding_l2, functional_l2, seed):
    n = spec.blocks_per_group
    policy = NormPolicy(norm, num_blocks=3 * n, layers_per_branch=2, kl=standardization_kl,
                        activation=activation, seeds=Seeds(seed))
    inputs = keras.Input(input_shape, name="images")
    x = policy.conv(inputs, 16, 3, 1, "stem_conv", "stem")
    for group, (filters, stride) in enumerate(zip(spec.widths, (1, 2, 2)), start=1):
        for block in range(n):
            x = wide_block(x, filters, stride if block == 0 else 1, policy, activation,
                           f"group{group}_block{block}")
    x = policy.final_site(x, "final", has_site=True)
    x = activation_layer(activation, "final_act")(x)
    embedding = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = policy.head(embedding, num_classes)
    model = keras.Model(inputs, outputs, name=f"wrn{spec.depth}_{spec.width}_{norm}")
    return with_head_penalties(model, embedding_l2=embedding_l2, functional_l2=functional_l2,
                               dropout=dropout, seed=seed)
