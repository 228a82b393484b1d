"""Parameter groups of any Keras model, for weight-decay exclusion and per-group learning rates.

Goyal et al. 2017 exclude BN gamma/beta and biases from weight decay; the Fixup reference trains
its scalar biases and multipliers at a tenth of the base learning rate (docs/references.md §3.3, §4.4). The
NF-ResNet and SkipInit references exclude every parameter whose name contains "gain" (the
weight-standardization gains, the skip gains) and the biases from weight decay
(`nfnets/experiment.py`), which `weight_decay_exclude="batchnorm_and_bias"` does from revision 2
(`bnreg_tf.run.training.decay_variables`; the skip gains are `fixup_scalars` here).
"""
import keras

from bnreg_tf.nn import layers as bl
from bnreg_tf.nn import nf

GROUPS = ("kernels", "biases", "batchnorm", "fixup_scalars", "activation")


def param_groups(model):
    """Returns `{group: [trainable variables]}` with every trainable variable in exactly one group.

    - `batchnorm`: gamma and beta of every normalization layer, and the `gain` of scaled
      weight standardization (`nf.ScaledStdConv2D`), the affine gain that replaces BN's gamma;
    - `fixup_scalars`: `ScalarBias` and `ScalarScale` values (Fixup's scalars, SkipInit's gain);
    - `activation`: the scalar `rho` of `Swish`;
    - `biases`: biases of convolutions and Dense layers;
    - `kernels`: everything else (conv and Dense kernels, depthwise kernels).
    """
    norm_types = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                  keras.layers.GroupNormalization)
    groups = {name: [] for name in GROUPS}
    seen = set()
    for layer in model._flatten_layers(include_self=False):
        for variable in layer._trainable_variables:
            if id(variable) in seen:
                continue
            seen.add(id(variable))
            if isinstance(layer, norm_types) or (
                    isinstance(layer, nf.ScaledStdConv2D) and variable is layer.gain):
                group = "batchnorm"
            elif isinstance(layer, (bl.ScalarBias, bl.ScalarScale)):
                group = "fixup_scalars"
            elif isinstance(layer, bl.Swish):
                group = "activation"
            elif variable.path.endswith("bias"):
                group = "biases"
            else:
                group = "kernels"
            groups[group].append(variable)
    missing = [v.path for v in model.trainable_variables if id(v) not in seen]
    if missing:
        raise ValueError(f"param_groups: variables not owned by any layer: {missing[:3]}")
    return groups
