"""The BatchNorm ablation modes of the paper (Table 1-2; REFERENCE.md sections 2 and 4).

A `NormPolicy` decides what sits at each place where BatchNorm would sit ("norm site"), which
Fixup scalars surround the convolutions, and how branch and classifier weights are initialised.
"""
import dataclasses

import keras

from bnreg_tf import batchnorm, init
from bnreg_tf.init import Seeds
from bnreg_tf import layers as bl
from bnreg_tf.heads import classifier_head
from bnreg_tf.regularization import attach_kl

NORM_MODES = ("batchnorm", "fixup", "fixup_standardize", "none", "single_bn", "fixup_single_bn")
FIXUP_MODES = ("fixup", "fixup_standardize", "fixup_single_bn")
SINGLE_BN_MODES = ("single_bn", "fixup_single_bn")


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
    `kl` > 0 puts a `StandardizationKL` on the input of every norm site (`attach_kl`, the code
    `regularize` uses; named after the layer it measures, e.g. `stage1_block0_conv1_kl`). In
    the post-activation ResNet v1 these are the places `regularize` picks on the plain network
    (after each conv that feeds an activation, before the residual Add), except that Fixup's
    branch-end multiplier comes before the site; in the pre-activation WRN they are where BN
    sits, on the residual stream after the Add.
    """

    mode: str
    num_blocks: int
    layers_per_branch: int
    kl: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    seeds: Seeds = dataclasses.field(default_factory=lambda: Seeds(None))

    def __post_init__(self):
        if self.mode not in NORM_MODES:
            raise ValueError(f"norm must be one of {', '.join(NORM_MODES)}; got {self.mode!r}")
        self.kl = bl.check_coefficient(self.kl, "standardization_kl")

    @property
    def fixup(self):
        return self.mode in FIXUP_MODES

    def _kl(self, x):
        return attach_kl(x, self.kl)

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
        x = self._kl(x)
        if self.mode == "batchnorm":
            return self._bn(x, name, zero_gamma)
        if self.fixup and fixup_bias:
            return bl.ScalarBias(name=f"{name}_bias")(x)
        return x

    def final_site(self, x, name, has_site):
        """The final feature map before the pool: the single BN, or a regular site if any."""
        if self.mode in SINGLE_BN_MODES:
            return self._bn(self._kl(x), name)
        return self.site(x, name) if has_site else x

    def pre_conv(self, x, name):
        """Fixup's scalar bias in front of a branch convolution."""
        return bl.ScalarBias(name=f"{name}_bias")(x) if self.fixup else x

    def branch_end(self, x, name):
        """Fixup's scalar multiplier at the end of a residual branch."""
        return bl.ScalarScale(name=f"{name}_scale")(x) if self.fixup else x

    def conv_init(self, last_in_branch=False):
        """Initializer of a residual-branch convolution."""
        seed = self.seeds()
        if self.mode == "fixup_standardize" and last_in_branch:
            return init.standardization_last_layer_initializer(self.num_blocks, seed=seed)
        if self.fixup and last_in_branch:
            return init.zero_initializer()
        if self.fixup:
            return init.fixup_branch_initializer(self.num_blocks, self.layers_per_branch, seed)
        return init.he_normal_fan_out(seed)

    def plain_conv_init(self):
        """Stem and projection-shortcut convolutions: He-normal(fan_out) in every mode."""
        return init.he_normal_fan_out(self.seeds())

    def classifier_init(self):
        """Fixup zero-initialises the classifier (kernel and bias); others use Glorot uniform."""
        if self.fixup:
            return init.zero_initializer()
        return keras.initializers.GlorotUniform(self.seeds())

    def head(self, embedding, num_classes):
        """The plain contract head; Fixup adds a scalar bias before a zero-initialised classifier."""
        return classifier_head(
            embedding, num_classes, kernel_initializer=self.classifier_init(),
            pre_classifier=bl.ScalarBias(name="classifier_input_bias") if self.fixup else None,
        )


def activation_layer(kind, name):
    """`relu`, or the paper's `swish` with a trainable scalar rho initialised to 0."""
    if kind == "relu":
        return keras.layers.ReLU(name=name)
    if kind == "swish":
        return bl.Swish(rho_init=0.0, name=name)
    raise ValueError(f"activation must be 'relu' or 'swish'; got {kind!r}")
