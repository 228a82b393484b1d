"""Signal propagation plots' statistics at initialisation (Brock, De & Smith 2021a, section 2,
Figure 1; docs/references.md §7), `NormMonitor`'s sibling for the network's inside."""
import csv
import io

import keras
import numpy as np
from keras.src.models.functional import Functional

from bnreg_tf.files import write_atomically
from bnreg_tf.nn import graph
from bnreg_tf.nn.norm_monitor import probe_images
from bnreg_tf.nn.residual_blocks import block_input, residual_blocks

SPP_FIELDS = ("depth", "name", "output", "branch", "squared_mean", "variance", "branch_variance")


def gaussian_probe(input_shape, examples, seed=0):
    """The input of the paper's signal propagation plots (Brock et al. 2021a, Figure 1: an
    N(0, 1) batch): `examples` float32 images of `input_shape` (H, W, C) drawn from a unit
    Gaussian by `numpy.random.default_rng(seed)`, so the same arguments give the same batch."""
    shape = (examples, *input_shape)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _channel_statistics(tensor):
    """(mean over channels of the squared channel mean, mean over channels of the channel
    variance), each channel's moments taken over batch and positions, in float64."""
    x = np.asarray(tensor, dtype=np.float64)
    x = x.reshape(-1, x.shape[-1])
    return float(np.mean(np.mean(x, axis=0) ** 2)), float(np.mean(np.var(x, axis=0)))


def _batch_normalized(layer, x):
    """`layer` (a BatchNormalization) on `x` with `x`'s own batch statistics, as in training,
    without updating the moving averages (biased variance, as Keras normalises)."""
    rank = len(x.shape)
    axis = layer.axis % rank
    shape = [1] * rank
    shape[axis] = x.shape[axis]
    x = keras.ops.cast(x, "float32")
    mean, variance = keras.ops.moments(x, [i for i in range(rank) if i != axis], keepdims=True)
    y = (x - mean) * keras.ops.rsqrt(variance + layer.epsilon)
    if layer.scale:
        y = y * keras.ops.reshape(keras.ops.cast(layer.gamma, "float32"), shape)
    if layer.center:
        y = y + keras.ops.reshape(keras.ops.cast(layer.beta, "float32"), shape)
    return keras.ops.cast(y, layer.compute_dtype)


class SignalPropagation:
    """Signal propagation plots' statistics of every residual block (Brock, De & Smith 2021a,
    "Characterizing signal propagation to close the performance gap in unnormalized ResNets",
    section 2 and Figure 1), `NormMonitor`'s sibling for the network's inside at initialisation.

    Per residual block (`residual_blocks`: each two-input addition, in graph order,
    `depth` 1, 2, ...), over the probe batch, with each channel's moments taken over the batch
    and the positions (channels last):
    - `squared_mean`: the block output's average squared channel mean, mean_c (mean_nhw x)^2;
    - `variance`: the block output's average channel variance, mean_c var_nhw(x);
    - `branch_variance`: the same variance of the residual branch's end, the addition's input
      that is not the skip path, measured before the branch's trailing scalar multipliers
      (Fixup's multiplier, SkipInit's and NF-ResNet's gains, NF-ResNet's alpha) and stochastic
      depth (`residual_blocks`): after the last convolution, or the last BatchNorm where the
      branch ends with one.
    The block output is the sum; in a post-activation block (ResNet v1: `relu(x + f(x))`) the
    activation after it, which the next block receives. Variances are population variances
    (divided by the count), as BatchNorm's.

    `probe_data`: the probe as `NormMonitor` takes it (`probe_images`), at the scale the model
    expects; the paper feeds an N(0, 1) batch (`gaussian_probe`). `batch_statistics=True`
    (default) normalises every BatchNormalization layer with the probe batch's own statistics,
    as the first training step does and as the paper's plots of BN networks show (at
    initialisation the moving averages are 0 and 1, so an inference-mode BN would pass the
    signal through unnormalised); the moving averages are not changed. Every other layer runs
    in inference mode (no Dropout, no stochastic depth). There is no randomness: the same
    model and probe give the same numbers.

    `measure()` makes one call of one sub-model (every block's output and branch at once) and
    returns a list of dicts, one per block, with the keys `SPP_FIELDS`: `depth`, `name` (the
    addition layer), `output` and `branch` (the layers whose outputs were measured) and the
    three statistics as Python floats (computed in float64 with NumPy). With `stem=True` the
    first row is the stem's output, the first block's input (`residual_blocks.block_input`), as
    the reference records it first (`nfnets/nf_resnet.py`): depth 0, name "stem", no branch
    (`branch` "", `branch_variance` NaN). `as_rows()` and
    `to_csv(path)` give the same as table rows. The model must be a functional (or
    Sequential) Keras model with one input.
    """

    def __init__(self, model, probe_data, max_examples=None, batch_statistics=True, stem=False):
        if not isinstance(model, (keras.Sequential, Functional)):
            raise ValueError(f"SignalPropagation: {model.name!r} is a subclassed "
                             f"{type(model).__name__}, whose layer graph Keras does not record; "
                             "write it functionally")
        flat = graph.inline(model)
        if len(flat.inputs) != 1:
            raise ValueError(f"SignalPropagation: {model.name!r} has {len(flat.inputs)} inputs; "
                             "it measures models with one image input")
        self.blocks = residual_blocks(flat)
        if not self.blocks:
            raise ValueError(f"SignalPropagation: {model.name!r} has no residual block (no "
                             "addition of two tensors)")
        self.probe = probe_images(probe_data, max_examples)
        self.batch_statistics = batch_statistics
        tensors = [t for block in self.blocks for t in (block.output, block.branch)]
        self.stem = block_input(flat, self.blocks[0]) if stem else None
        if stem:
            tensors.append(self.stem)
        self._probe_model = keras.Model(flat.inputs, tensors, name=f"{flat.name}_spp")
        self.values = None

    def _call(self, operation, *args, **kwargs):
        if self.batch_statistics and isinstance(operation, keras.layers.BatchNormalization) \
                and operation.trainable:
            return _batch_normalized(operation, args[0])
        if isinstance(operation, keras.layers.Layer):
            kwargs["training"] = False
        return operation(*args, **kwargs)

    def measure(self):
        """The statistics per block (see the class docstring); also kept in `self.values`."""
        probe = keras.ops.convert_to_tensor(self.probe, dtype=self._probe_model.inputs[0].dtype)
        outputs = self._probe_model._run_through_graph(probe, call_fn=self._call)
        self.values = []
        if self.stem is not None:
            squared_mean, variance = _channel_statistics(outputs[-1])
            self.values.append({
                "depth": 0, "name": "stem", "output": graph.producer(self.stem).name,
                "branch": "", "squared_mean": squared_mean, "variance": variance,
                "branch_variance": float("nan")})
        for depth, block in enumerate(self.blocks, start=1):
            squared_mean, variance = _channel_statistics(outputs[2 * depth - 2])
            _, branch_variance = _channel_statistics(outputs[2 * depth - 1])
            self.values.append({
                "depth": depth, "name": block.add.operation.name,
                "output": graph.producer(block.output).name,
                "branch": graph.producer(block.branch).name,
                "squared_mean": squared_mean, "variance": variance,
                "branch_variance": branch_variance})
        return self.values

    def as_rows(self):
        """The values as tuples in `SPP_FIELDS` order (measured first if not yet)."""
        values = self.values if self.values is not None else self.measure()
        return [tuple(row[field] for field in SPP_FIELDS) for row in values]

    def to_csv(self, path):
        """Writes `SPP_FIELDS` and one row per block to `path` (atomically); returns `path`."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(SPP_FIELDS)
        writer.writerows(self.as_rows())
        write_atomically(path, text.getvalue())
        return path
