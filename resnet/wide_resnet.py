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

from bnreg_tf.nn.init import Seeds
from bnreg_tf.nn.regularization import regularize
from bnreg_tf.nn import revisions
from resnet.norm import NormPolicy, drop_rate


@dataclasses.dataclass(frozen=True)
class WideResNetSpec:
    """WRN-d-k: `depth` d = 6n + 4 (n blocks per group), `width` k (the widening factor)."""

    depth: int
    width: int

    @property
    def blocks_per_group(self):
        return (self.depth - 4) // 6

    @property
    def widths(self):
        return (16 * self.width, 32 * self.width, 64 * self.width)

    def __post_init__(self):
        if self.depth < 10 or (self.depth - 4) % 6 or self.width < 1:
            raise ValueError(f"WRN-{self.depth}-{self.width}: depth must be 6n+4 >= 10 and "
                             "width >= 1")


NAME_PATTERN = "wrn<depth>_<width>"


def parse_wrn(name):
    """`wrn28_10` -> WideResNetSpec(28, 10); None if `name` is not a WRN name (the one place
    the name pattern is read)."""
    match = re.fullmatch(r"wrn(\d+)_(\d+)", name)
    if not match:
        return None
    return WideResNetSpec(int(match.group(1)), int(match.group(2)))


def wide_block(x, filters, stride, policy, name):
    """Pre-activation basic block: site-act-conv3x3-site-act-conv3x3 (+ shortcut)."""
    projection = stride != 1 or x.shape[-1] != filters
    pre = policy.activate(policy.site(x, f"{name}_site1"), f"{name}_act1")
    pre = policy.branch_input(pre, name, projection)
    pre = policy.pre_conv(pre, f"{name}_conv1")
    y = policy.conv(pre, filters, 3, stride, f"{name}_conv1", "branch")
    y = policy.activate(policy.site(y, f"{name}_site2"), f"{name}_act2")
    y = policy.pre_conv(y, f"{name}_conv2")
    y = policy.conv(y, filters, 3, 1, f"{name}_conv2", "branch_last")
    y = policy.branch_end(y, f"{name}_branch")
    if projection:
        x = policy.conv(pre, filters, 1, stride, f"{name}_shortcut", "shortcut")
    return keras.layers.Add(name=f"{name}_add")([x, policy.drop_path(y, name)])


def build_wide_resnet(spec, *, num_classes, input_shape=(32, 32, 3), norm="batchnorm",
                      activation="relu", dropout=0.0, seed=None, survival_prob=1.0,
                      skipinit_gain=0.0, revision=revisions.LATEST, **penalties):
    """WRN-`spec.depth`-`spec.width`; returns an uncompiled `keras.Model` with bnreg's output
    contract `{"logits": [B, K], "embedding": [B, 64k]}` (logits in float32).

    Inputs: float images [B, H, W, C] normalised per channel, `(x - mean) / std` on the 0..255
    scale (what `bnreg_tf.data` gives); no preprocessing is inside the model. It takes what any
    Keras model takes: arrays, tensors or a `tf.data.Dataset` in `fit`/`predict`.
    `norm` is one of `resnet.NORM_MODES` (the paper's Table 1 ablations and the normalizer-free
    modes, `resnet.norm.NormPolicy`); `activation` `relu` or `swish` (paper section 4.1, rho
    initialised to 0). `dropout` acts on the embedding, before the classifier; `**penalties`
    are coefficients by their names in `bnreg_tf.nn.PENALTIES` (`embedding_l2=0.1`, ...),
    attached by `regularize` (norm-site penalties where this network's BatchNorm sits). `seed`
    (int or None) makes the initial weights, the Dropout and the stochastic depth masks
    reproducible: same seed, same model. `survival_prob` is the keep probability of the last
    block's stochastic depth (1 = none; `resnet.norm.NormPolicy`), `skipinit_gain` the initial
    value of the SkipInit / NF-ResNet skip gains (the reference's `skipinit_gain`, 0), and
    `revision` which of bnreg's revisions to build (`bnreg_tf.nn.revisions`).
    """
    n = spec.blocks_per_group
    policy = NormPolicy(norm, num_blocks=3 * n, layers_per_branch=2, activation=activation,
                        seeds=Seeds(seed), revision=revision, skipinit_gain=skipinit_gain,
                        drop_rate=drop_rate(survival_prob))
    inputs = keras.Input(input_shape, name="images")
    x = policy.conv(inputs, 16, 3, 1, "stem_conv", "stem")
    for group, (filters, stride) in enumerate(zip(spec.widths, (1, 2, 2)), start=1):
        for block in range(n):
            x = wide_block(x, filters, stride if block == 0 else 1, policy,
                           f"group{group}_block{block}")
    x = policy.final_site(x, "final", has_site=True)
    x = policy.activate(x, "final_act")
    embedding = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = policy.head(embedding, num_classes)
    model = keras.Model(inputs, outputs, name=f"wrn{spec.depth}_{spec.width}_{norm}")
    return regularize(model, dropout=dropout, seed=seed, norm_sites=policy.sites,
                      **penalties)
