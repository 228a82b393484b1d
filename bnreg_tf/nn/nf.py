"""Normalizer-free ResNets (NF-ResNets; Brock, De & Smith 2021a): scaled weight standardization
and the constants of the residual-stream variance analysis.

Every convolution of an NF-ResNet standardizes its kernel at each call, per output channel
(section 4, "Scaled Weight Standardization"):

    W_hat = gain * (W - mean(W)) / (std(W) * sqrt(fan_in))

and every activation's output is multiplied by a constant `gamma`, so that, for inputs with unit
variance, the outputs again have zero mean and unit variance: the zero-mean rows remove the
activations' mean shift, `1 / sqrt(fan_in)` keeps the variance, and `gamma` undoes the
activation's variance loss. Residual blocks compute
`x + alpha * f(x / beta)` with `beta` the expected std of the stream `x` (section 4).

Constants and where they come from (the reference is google-deepmind/deepmind-research
`nfnets/base.py` (`WSConv2D`, `nonlinearities`) and `nfnets/nf_resnet.py`; docs/references.md
§6.4-§6.5):

- `ALPHA = 0.2`: the residual-branch scale of the paper and of the reference's `NF_ResNet`.
- `REFERENCE_GAMMAS` (the default): the reference's ReLU constant 1.7139588594436646, an
  empirical estimate of `1 / std(relu(z))` for z ~ N(0, 1); for bnreg's swish 2.0 (below).
- `RELU_GAMMA = sqrt(2 / (1 - 1/pi))` = 1.7128586...: the closed form (E relu(z)^2 = 1/2,
  E relu(z) = 1/sqrt(2 pi), so Var relu(z) = (1 - 1/pi) / 2; paper section 4). The reference's
  1.7139588594436646 is 0.064% larger. Revision 1 runs (config.json files written before issue
  25) use it (`CLOSED_FORM_GAMMAS`).
- `SWISH_GAMMA = 2`: bnreg's swish is `x * sigmoid(rho x)` with a trainable rho starting at 0
  (Dauphin & Cubuk, section 4.1), i.e. `x / 2` at initialisation, whose std on N(0, 1) is 1/2:
  the reference's rule (gamma = 1 / std of the activation on a unit Gaussian) gives exactly 2
  for the function bnreg computes at init. The reference's SiLU constant (1.7881293296813965)
  is that rule for `x * sigmoid(x)` (rho = 1); on bnreg's `x / 2` it would leave each
  activation's output variance at (1.788 / 2)^2 = 0.80. Both variants use 2.
- `WS_EPSILON = 1e-4`: the reference floors `var(W) * fan_in` at this value before the rsqrt.
- Kernel init: the reference's Haiku `VarianceScaling(1.0, "fan_in", "normal")`, where Haiku's
  "normal" is an untruncated normal (`haiku/_src/initializers.py`): N(0, 1 / fan_in). Revision 1
  drew a truncated normal; the standardization makes the forward pass independent of it (only
  the gradient scale of the raw kernel depends on it).
- Biases: the reference's `WSConv2D` always adds a bias (initialised to 0), so every NF
  convolution here has one.

Placement of gamma: as the reference, gamma multiplies the activation's output (`ScaledReLU`,
`ScaledSwish`), including the final activation before the pool, so the pooled embedding
(the paper's Emb(x), what EL2 penalises) is the reference's. Revision 1 put gamma into the
kernel of each convolution that reads an activation (`ScaledStdConv2D(gamma=...)`, as timm's
`ScaledStdConv2d`): the same pre-activations, but a pooled embedding `1 / gamma` of the
reference's, so an EL2 coefficient acted on a value gamma^2 = 2.94 times smaller.
"""
import math

import keras
from keras import ops

from bnreg_tf.nn.conv import Conv2D
from bnreg_tf.nn.layers import Swish

_register = keras.saving.register_keras_serializable(package="bnreg")

ALPHA = 0.2
REFERENCE_RELU_GAMMA = 1.7139588594436646   # nfnets/base.py `nonlinearities["relu"]`
REFERENCE_SILU_GAMMA = 1.7881293296813965   # for x * sigmoid(x); not bnreg's swish (docstring)
RELU_GAMMA = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))
SWISH_GAMMA = 2.0
WS_EPSILON = 1e-4
REFERENCE_GAMMAS = {"relu": REFERENCE_RELU_GAMMA, "swish": SWISH_GAMMA}
CLOSED_FORM_GAMMAS = {"relu": RELU_GAMMA, "swish": SWISH_GAMMA}
GAMMAS = CLOSED_FORM_GAMMAS   # revision 1's name
# Haiku's truncated normal (hk.initializers.TruncatedNormal) cuts at 2 std without rescaling;
# Keras' VarianceScaling(truncated_normal) divides by this std of the cut unit normal.
TRUNCATED_UNIT_STD = 0.87962566103423978


def activation_gamma(activation, reference=True):
    """The gamma of bnreg's `relu` or `swish`: the reference's constants (default) or the
    closed forms (module docstring)."""
    gammas = REFERENCE_GAMMAS if reference else CLOSED_FORM_GAMMAS
    if activation not in gammas:
        raise ValueError(f"activation must be one of {', '.join(gammas)}; got {activation!r}")
    return gammas[activation]


def ws_initializer(seed=None, truncated=False):
    """The reference's WSConv2D kernel init, Haiku's `VarianceScaling(1.0, "fan_in", "normal")`:
    N(0, 1 / fan_in), untruncated. `truncated=True` is revision 1's truncated normal."""
    return keras.initializers.VarianceScaling(
        scale=1.0, mode="fan_in",
        distribution="truncated_normal" if truncated else "untruncated_normal", seed=seed)


def haiku_conv_initializer(seed=None):
    """Haiku's default `hk.Conv2D` kernel init (the SkipInit reference's convolutions):
    `TruncatedNormal(stddev=1 / sqrt(fan_in))`, cut at 2 std and NOT rescaled, so the kernel's
    std is 0.8796 / sqrt(fan_in). Keras' truncated VarianceScaling divides its std by 0.8796,
    hence the scale 0.8796^2."""
    return keras.initializers.VarianceScaling(
        scale=TRUNCATED_UNIT_STD ** 2, mode="fan_in", distribution="truncated_normal", seed=seed)


def scaled_standardize(kernel, gain, gamma=1.0, epsilon=WS_EPSILON):
    """`gain * gamma * (W - mean) / sqrt(max(var * fan_in, epsilon))` per output channel.

    `kernel` is [..., fan_in axes ..., C_out] (Keras layout: the last axis is the output), `gain`
    is [C_out]. With `var * fan_in >= epsilon` every output channel of the result has mean 0
    and variance `(gamma * gain)^2 / fan_in`.
    """
    axes = tuple(range(len(kernel.shape) - 1))
    fan_in = math.prod(kernel.shape[:-1])
    mean = ops.mean(kernel, axis=axes, keepdims=True)
    var = ops.var(kernel, axis=axes, keepdims=True)
    scale = ops.rsqrt(ops.maximum(var * fan_in, epsilon)) * (gamma * gain)
    return (kernel - mean) * scale


@_register
class ScaledStdConv2D(Conv2D):
    """A `bnreg_tf.nn.conv.Conv2D` (pointwise convolutions as a matmul) with scaled weight
    standardization: the kernel is `scaled_standardize(kernel, gain, gamma, epsilon)` at every
    call, with `gain` a trainable [C_out] vector initialised to 1.

    The standardization runs in float32 under mixed precision. Biases default to on and the
    kernel initializer to the reference's (module docstring). `gamma` is 1 in revision 2 (the
    activations carry it); revision 1 put the activation's gamma here.
    """

    def __init__(self, filters, kernel_size, gamma=1.0, epsilon=WS_EPSILON, use_bias=True,
                 kernel_initializer=None, **kwargs):
        super().__init__(filters, kernel_size, use_bias=use_bias,
                         kernel_initializer=kernel_initializer or ws_initializer(), **kwargs)
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        super().build(input_shape)
        self.gain = self.add_weight(name="gain", shape=(self.filters,), initializer="ones",
                                    dtype=self.dtype)

    def standardized_kernel(self):
        """The kernel the convolution uses (float32)."""
        return scaled_standardize(ops.cast(self._kernel, "float32"),
                                  ops.cast(self.gain, "float32"), self.gamma, self.epsilon)

    def convolution_op(self, inputs, kernel):
        del kernel  # the raw kernel; the standardized one is computed from the variables
        kernel = ops.cast(self.standardized_kernel(), inputs.dtype)
        return super().convolution_op(inputs, kernel)

    # Keras' Conv saves kernel and bias by position only; the gain comes after them.
    def _stored_variables(self):
        return [self._kernel] + ([self.bias] if self.use_bias else []) + [self.gain]

    def save_own_variables(self, store):
        if self.built:
            for i, variable in enumerate(self._stored_variables()):
                store[str(i)] = variable

    def load_own_variables(self, store):
        self._check_load_own_variables(store)
        if self.built:
            for i, variable in enumerate(self._stored_variables()):
                variable.assign(store[str(i)])

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "epsilon": self.epsilon}


@_register
class ScaledReLU(keras.layers.ReLU):
    """`relu(x) * gamma`: the reference's ReLU with its gamma (`nfnets/base.py`)."""

    def __init__(self, gamma=REFERENCE_RELU_GAMMA, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)

    def call(self, inputs):
        return super().call(inputs) * ops.cast(self.gamma, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@_register
class ScaledSwish(Swish):
    """bnreg's swish `x * sigmoid(rho x)` times a constant `gamma` (2 at rho = 0, module
    docstring); the same variables as `Swish`."""

    def __init__(self, gamma=SWISH_GAMMA, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)

    def call(self, inputs):
        return super().call(inputs) * ops.cast(self.gamma, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


def scaled_activation(kind, gamma, name):
    """The NF-ResNet activation `kind` ("relu" or "swish", rho from 0) multiplied by `gamma`."""
    if kind == "relu":
        return ScaledReLU(gamma, name=name)
    if kind == "swish":
        return ScaledSwish(gamma, rho_init=0.0, name=name)
    raise ValueError(f"activation must be 'relu' or 'swish'; got {kind!r}")


@_register
class FixedScale(keras.layers.Layer):
    """`x * scale` with a constant `scale`: NF-ResNet's alpha and 1/beta (not trained)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class StreamVariance:
    """The expected variance of the residual stream at init, block by block (section 4).

    The stem's output is taken to have variance 1. A block `x + alpha * f(x / beta)` reads
    `beta = sqrt(variance)`; its branch adds `alpha^2`. A block whose shortcut is a projection
    (convolution on the scaled input `x / beta`, as the reference's `NFResBlock`) restarts the
    stream at variance 1 before adding its branch; an identity shortcut carries it on. (The
    reference resets at the first block of every stage, which always has a projection there.)
    """

    def __init__(self, alpha=ALPHA):
        self.alpha = float(alpha)
        self.variance = 1.0

    def next_beta(self, projection):
        """beta of the next block; then the stream variance after it."""
        beta = math.sqrt(self.variance)
        self.variance = (1.0 if projection else self.variance) + self.alpha ** 2
        return beta
