"""The normalisation modes of bnreg's ResNets: the paper's BatchNorm ablations (Tables 1-2;
docs/references.md §2 and §4) and the normalizer-free lineage after it (issue 18; §6).

Each mode is one row of `MODES`. A `NormPolicy` decides, from its row, what sits at each place
where BatchNorm would sit ("norm site"), which scalars surround the convolutions and end the
residual branches, which convolution layer is used, and how branch and classifier weights are
initialised; the builders ask it and never test a mode's name.
"""
import dataclasses

import keras

from bnreg_tf.nn import batchnorm, conv, init, nf, revisions
from bnreg_tf.nn import layers as bl
from bnreg_tf.nn.heads import classifier_head
from bnreg_tf.nn.init import Seeds


@dataclasses.dataclass(frozen=True)
class NormMode:
    """What one norm mode puts into a ResNet.

    sites: what sits at every norm site: "batchnorm", "fixup_bias" or "identity".
    single_bn: one BN on the final feature map, before the average pool.
    fixup: Fixup's scalars and init, with the last branch layer "zeros" (Fixup) or
        "standardize" (He / sqrt(L), the paper's KL runs); "" = no Fixup.
    skip_gain: a trainable scalar (from `skipinit_gain`, 0 by default) at the end of every
        residual branch (SkipInit).
    normalizer_free: NF-ResNet: scaled weight standardization, `x + alpha * f(x / beta)`, and
        a pre-activation ResNet v1.
    reference_block: from revision 2, the SkipInit reference's pre-activation ResNet v1 and
        Haiku's default convolution init (`nfnets/skipinit_resnet.py`).
    conv_bias: biases on the convolutions after the stem (on all of them when normalizer_free).
    classifier: the classifier kernel's init: "glorot", "zeros" or "normal" (std 0.01).
    """

    sites: str = "identity"
    single_bn: bool = False
    fixup: str = ""
    skip_gain: bool = False
    normalizer_free: bool = False
    reference_block: bool = False
    conv_bias: bool = False
    classifier: str = "glorot"


MODES = {
    "batchnorm": NormMode(sites="batchnorm"),
    "fixup": NormMode(sites="fixup_bias", fixup="zeros", classifier="zeros"),
    "fixup_standardize": NormMode(sites="fixup_bias", fixup="standardize", classifier="zeros"),
    "none": NormMode(),
    "single_bn": NormMode(single_bn=True),
    "fixup_single_bn": NormMode(sites="fixup_bias", single_bn=True, fixup="zeros",
                                classifier="zeros"),
    "skipinit": NormMode(skip_gain=True, conv_bias=True, classifier="zeros",
                         reference_block=True),
    "nf_resnet": NormMode(skip_gain=True, normalizer_free=True, conv_bias=True,
                          classifier="normal"),
}
NORM_MODES = tuple(MODES)
FIXUP_MODES = tuple(name for name, row in MODES.items() if row.fixup)
SINGLE_BN_MODES = tuple(name for name, row in MODES.items() if row.single_bn)
CONV_ROLES = ("stem", "branch", "branch_last", "shortcut")


@dataclasses.dataclass
class NormPolicy:
    """What a builder puts at norm sites, given the mode.

    - batchnorm: BN at every site (`zero_gamma` sites start with gamma 0, Goyal et al.).
    - fixup / fixup_single_bn: a scalar bias at every site, a scalar bias before every conv, a
      scalar multiplier at the end of every branch; branch layers He * L^(-1/(2m-2)), the last
      branch layer and the classifier zero (Zhang et al. 2019).
    - fixup_standardize: Fixup's structure, but the last branch layer is He / sqrt(L), not zero.
    - none / single_bn: no normalization, conventional He-normal(fan_out) init.
    - *single_bn: one BN on the final feature map, before the average pool.
    - skipinit (De & Smith 2020, "SkipInit"; the reference is google-deepmind/deepmind-research
      `nfnets/skipinit_resnet.py`): no normalization; a trainable scalar gain (from
      `skipinit_gain`, 0 as the reference) at the end of every residual branch, so that every
      block starts as the identity (what BN does approximately at init, the paper's argument);
      biases on every convolution but the stem's and a zero classifier (`fc_init=jnp.zeros`), as
      the reference. Revision 2 (default): the reference's pre-activation ResNet v1 (as
      nf_resnet, without alpha and beta) and Haiku's default conv init
      (`nf.haiku_conv_initializer`); revision 1: post-activation ResNet v1 blocks
      (`relu(x + gain * f(x))`) and He-normal(fan_out) init.
    - nf_resnet (Brock et al. 2021a, section 4; the reference is `nfnets/nf_resnet.py`): no
      normalization; every convolution a `bnreg_tf.nn.nf.ScaledStdConv2D` (with bias); every
      activation times the reference's gamma (`nf.scaled_activation`; revision 1: the closed
      form inside each kernel that reads an activation); blocks
      `x + alpha * gain * f(act(x) / beta)` with alpha = 0.2, beta the expected std of the
      stream (`nf.StreamVariance`) and the projection shortcut reading `act(x) / beta`; `gain`
      the SkipInit scalar (the reference's `skipinit_gain`, 0 by default; timm's NF-ResNets leave
      it out); a classifier N(0, 0.01) with zero bias (the reference's `fc_init`). NF-ResNets
      are pre-activation: in ResNet v1 the ReLU after each Add and after the stem moves to the
      start of the next branch and before the final pool (`preactivation`), which makes
      `resnet50` the reference's NF-ResNet-50.
    Stochastic depth (`drop_rate` > 0, the last block's rate): block i of the network's n
    (0-based) drops its branch per example with rate `drop_rate * i / n` just before the
    addition, masked and not rescaled, identity at inference (the reference's `StochDepth`,
    `nfnets/base.py`, whose rate schedule EfficientNet's drop-connect shares).
    Every norm site's input is recorded in `sites`, in build order: the builders hand them to
    `regularize(norm_sites=...)`, which puts the norm-site penalties there (KL standardization,
    named after the layer it measures, e.g. `stage1_block0_conv1_kl`). In the post-activation
    ResNet v1 these are the places `regularize` would pick on a plain network (after each conv
    that feeds an activation, before the residual Add), except that Fixup's branch-end
    multiplier comes before the site; in the pre-activation WRN they are where BN sits, on the
    residual stream after the Add.
    """

    mode: str
    num_blocks: int
    layers_per_branch: int
    activation: str = "relu"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    seeds: Seeds = dataclasses.field(default_factory=lambda: Seeds(None))
    revision: int = revisions.LATEST
    skipinit_gain: float = 0.0
    drop_rate: float = 0.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"norm must be one of {', '.join(NORM_MODES)}; got {self.mode!r}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1); got {self.drop_rate!r}")
        self.revision = revisions.check(self.revision)
        self.row = MODES[self.mode]
        self.sites = []
        self.stream = nf.StreamVariance(nf.ALPHA)
        self.blocks_seen = 0
        # Their own seed stream: stochastic depth does not shift the initial weights.
        self.drop_seeds = Seeds(None if self.seeds.seed is None else self.seeds.seed + 2**16)

    @property
    def fixup(self):
        return bool(self.row.fixup)

    @property
    def reference_skipinit(self):
        """SkipInit in the reference's form (revision 2)."""
        return self.row.reference_block and self.revision >= 2

    @property
    def preactivation(self):
        """Whether ResNet v1 is built with pre-activation blocks (NF-ResNet, SkipInit)."""
        return self.row.normalizer_free or self.reference_skipinit

    def activate(self, x, name):
        """The activation: NF-ResNet's times its gamma (revision 2), else plain."""
        if self.row.normalizer_free and self.revision >= 2:
            return nf.scaled_activation(self.activation, nf.activation_gamma(self.activation),
                                        name)(x)
        return activation_layer(self.activation, name)(x)

    def drop_path(self, x, name):
        """The end of a block's branch, before the addition: stochastic depth at this block's
        rate (class docstring), or `x` when the rate is 0. Call once per block, in order."""
        rate = self.drop_rate * self.blocks_seen / self.num_blocks
        self.blocks_seen += 1
        if rate == 0.0:
            return x
        return bl.StochasticDepth(rate, seed=self.drop_seeds(), scale_by_keep=False,
                                  name=f"{name}_drop")(x)

    def _site_input(self, x):
        """Records `x`, the input of a norm site (see the class docstring)."""
        self.sites.append(x)
        return x

    def _bn(self, x, name, zero_gamma=False):
        return batchnorm.BatchNormalization(
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            gamma_initializer="zeros" if zero_gamma else "ones",
            name=f"{name}_bn",
        )(x)

    def site(self, x, name, zero_gamma=False, fixup_bias=True):
        """A place where BatchNorm sits in the BN network.

        `fixup_bias=False` where the Fixup reference has no bias (after a projection shortcut).
        """
        x = self._site_input(x)
        if self.row.sites == "batchnorm":
            return self._bn(x, name, zero_gamma)
        if self.row.sites == "fixup_bias" and fixup_bias:
            return bl.ScalarBias(name=f"{name}_bias")(x)
        return x

    def final_site(self, x, name, has_site):
        """The final feature map before the pool: the single BN, or a regular site if any."""
        if self.row.single_bn:
            return self._bn(self._site_input(x), name)
        return self.site(x, name) if has_site else x

    def pre_conv(self, x, name):
        """Fixup's scalar bias in front of a branch convolution."""
        return bl.ScalarBias(name=f"{name}_bias")(x) if self.fixup else x

    def branch_input(self, x, name, projection):
        """NF-ResNet's `1 / beta` on a block's activated input (read by the branch and by a
        projection shortcut); `x` in the other modes. `projection`: whether this block's
        shortcut is a convolution (which restarts the stream's variance at 1)."""
        if not self.row.normalizer_free:
            return x
        beta = self.stream.next_beta(projection)
        return nf.FixedScale(1.0 / beta, name=f"{name}_beta")(x)

    def branch_end(self, x, name):
        """The end of a residual branch: Fixup's multiplier (from 1); SkipInit's gain (from
        `skipinit_gain`); NF-ResNet's gain then alpha."""
        if self.fixup:
            x = bl.ScalarScale(name=f"{name}_scale")(x)
        if self.row.skip_gain:
            x = bl.ScalarScale(initial_value=self.skipinit_gain, name=f"{name}_gain")(x)
        if self.row.normalizer_free:
            x = nf.FixedScale(nf.ALPHA, name=f"{name}_alpha")(x)
        return x

    def conv(self, x, filters, kernel, stride, name, role):
        """A convolution ("same" padding) in `role`: "stem" (reads the images), "branch",
        "branch_last" (the last of a residual branch) or "shortcut" (a projection)."""
        if role not in CONV_ROLES:
            raise ValueError(f"conv role must be one of {', '.join(CONV_ROLES)}; got {role!r}")
        if self.row.normalizer_free:
            legacy = self.revision < 2   # gamma in the kernel, the closed form, truncated init
            gamma = nf.activation_gamma(self.activation, reference=False) \
                if legacy and role != "stem" else 1.0
            return nf.ScaledStdConv2D(filters, kernel, gamma=gamma, strides=stride,
                                      padding="same", kernel_initializer=nf.ws_initializer(
                                          self.seeds(), truncated=legacy), name=name)(x)
        if self.reference_skipinit:
            initializer = nf.haiku_conv_initializer(self.seeds())
        elif role in ("branch", "branch_last"):
            initializer = self.conv_init(last_in_branch=role == "branch_last")
        else:
            initializer = self.plain_conv_init()
        return conv.Conv2D(
            filters, kernel, strides=stride, padding="same",
            use_bias=self.row.conv_bias and role != "stem", kernel_initializer=initializer,
            name=name,
        )(x)

    def conv_init(self, last_in_branch=False):
        """Initializer of a residual-branch convolution."""
        seed = self.seeds()
        if self.row.fixup == "standardize" and last_in_branch:
            return init.standardization_last_layer_initializer(self.num_blocks, seed=seed)
        if self.fixup and last_in_branch:
            return init.zero_initializer()
        if self.fixup:
            return init.fixup_branch_initializer(self.num_blocks, self.layers_per_branch, seed)
        return init.he_normal_fan_out(seed)

    def plain_conv_init(self):
        """Stem and projection-shortcut convolutions: He-normal(fan_out) (nf_resnet's convolutions
        use `nf.ws_initializer`)."""
        return init.he_normal_fan_out(self.seeds())

    def classifier_init(self):
        """Fixup and SkipInit zero the classifier kernel (the bias is always zero); NF-ResNet
        draws it from N(0, 0.01); the others use Glorot uniform."""
        if self.row.classifier == "zeros":
            return init.zero_initializer()
        if self.row.classifier == "normal":
            return keras.initializers.RandomNormal(0.0, 0.01, seed=self.seeds())
        return keras.initializers.GlorotUniform(self.seeds())

    def head(self, embedding, num_classes):
        """The plain contract head; Fixup adds a scalar bias before a zero-initialised classifier."""
        return classifier_head(
            embedding, num_classes, kernel_initializer=self.classifier_init(),
            pre_classifier=bl.ScalarBias(name="classifier_input_bias") if self.fixup else None,
        )


def drop_rate(survival_prob):
    """The last block's stochastic-depth rate, `1 - survival_prob` (ValueError outside (0, 1])."""
    if not 0.0 < survival_prob <= 1.0:
        raise ValueError(f"survival_prob must be in (0, 1], got {survival_prob!r}")
    return 1.0 - survival_prob


def activation_layer(kind, name):
    """`relu`, or the paper's `swish` with a trainable scalar rho initialised to 0."""
    if kind == "relu":
        return keras.layers.ReLU(name=name)
    if kind == "swish":
        return bl.Swish(rho_init=0.0, name=name)
    raise ValueError(f"activation must be 'relu' or 'swish'; got {kind!r}")
