"""The building blocks (the lowest floor that knows Keras): the paper's penalties as functions
(`penalties`) and layers (`layers`), their table (`penalty_table.PENALTIES`), `regularize` for
any functional or Sequential classifier, Fixup's initializers (`init`), the normalizer-free
pieces (`nf`, `agc`), the classifier head, bnreg's fused BatchNormalization and pointwise
convolution, parameter groups, the diagnostics `NormMonitor` and `SignalPropagation`, and
`PenalizedModel` (the functional model that logs the penalties on JAX too; `penalized`).

Every module here imports Keras and NumPy only and runs on any Keras 3 backend (issue 24);
TensorFlow's fast paths live in `tf_kernels`, imported on the TensorFlow backend when first
used, and elsewhere Keras' own computation runs. Importing this package registers every
layer it defines with Keras' serialization (package "bnreg").
"""
from bnreg_tf.nn import (agc, batchnorm, conv, graph, heads, init, layers, nf, penalties,
                         penalty_table, residual_blocks)
from bnreg_tf.nn.norm_monitor import NormMonitor
from bnreg_tf.nn.penalized import PenalizedModel
from bnreg_tf.nn.penalty_table import PENALTIES
from bnreg_tf.nn.regularization import regularize
from bnreg_tf.nn.signal_propagation import SignalPropagation, gaussian_probe

__all__ = ["NormMonitor", "PENALTIES", "PenalizedModel", "SignalPropagation", "agc", "batchnorm",
           "conv", "gaussian_probe", "graph", "heads", "init", "layers", "nf", "penalties",
           "penalty_table", "regularize", "residual_blocks"]
