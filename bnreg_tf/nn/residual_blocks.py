"""The residual blocks of a Keras functional graph, for the signal propagation plots
(`bnreg_tf.nn.signal_propagation`; Brock et al. 2021a, section 2; docs/references.md §7)."""
import dataclasses

import keras
from keras.src.ops.numpy import Add as AddOp

from bnreg_tf.nn import layers as bl
from bnreg_tf.nn import nf
from bnreg_tf.nn.graph import NORM_TYPES, is_activation, nodes

# Scalar multipliers at the end of a residual branch, and stochastic depth (the identity at
# inference; see `residual_blocks`).
BRANCH_SCALES = (bl.ScalarScale, nf.FixedScale, bl.StochasticDepth)
# Layers between a block's input and its branch that belong to the block (`block_input`).
PRE_ACTIVATION_TYPES = (*NORM_TYPES, bl.ScalarBias, bl.ScalarScale, nf.FixedScale)


@dataclasses.dataclass(frozen=True)
class ResidualBlock:
    """One residual block of a flat functional model: its two-input addition `add` (a node),
    the `skip` input of the addition, the `branch` output before its trailing scalar
    multipliers, and the block's `output` tensor."""

    add: object
    skip: object
    branch: object
    output: object
    identity: bool   # the skip is the block input itself (no projection on it)


def _is_addition(node):
    return (isinstance(node.operation, (keras.layers.Add, AddOp))
            and len(node.input_tensors) == 2)


def residual_blocks(model):
    """The residual blocks of a flat functional `model` (`inline` first), in graph order.

    A block is an addition of two tensors: a `keras.layers.Add` of two inputs, or `x + y` on
    symbolic tensors (`keras.ops.add`). Its skip input is the one the other is computed from
    (an identity shortcut); where neither is (a projection shortcut: both start from the same
    tensor), the one fewer layers from the model's input, i.e. the shorter path (a 1x1
    convolution against the branch's stack of layers). Raises ValueError where the two are
    equally far.

    The branch is measured before its trailing scalar multipliers (Fixup's scale, SkipInit's and
    NF-ResNet's zero-initialised gains, NF-ResNet's alpha) and stochastic depth: the residual
    branch's own output, as Brock et al. 2021a plot its variance (section 2), not the product a
    zero gain makes 0.

    The block's output is the sum, except in post-activation networks (ResNet v1, He et al.
    2016: `relu(x + f(x))`), recognised by identity skips that start at an activation of an
    earlier sum: there the output is the activation that alone consumes the sum, the tensor
    the next block receives.
    """
    graph = _Graph(model)
    found = [(node, *graph.skip_and_branch(node)) for node in filter(_is_addition, graph.order)]
    sums = {id(node.outputs[0]) for node, *_ in found}
    post_activation = any(identity and graph.activation_of_sum(skip, sums)
                          for _, skip, _, identity in found)
    blocks = []
    for node, skip, branch, identity in found:
        output = node.outputs[0]
        after = graph.consumers.get(id(output), [])
        if post_activation and len(after) == 1 and is_activation(after[0].operation):
            output = after[0].outputs[0]
        blocks.append(ResidualBlock(node, skip, graph.before_scales(branch), output, identity))
    return blocks


class _Graph:
    """The nodes of a flat functional model with what `residual_blocks` asks of them: each
    tensor's producer, consumers and level (layers from the input)."""

    def __init__(self, model):
        self.order = list(nodes(model))
        self.node_of = {id(x): node for node in self.order for x in node.outputs}
        self.level, self.consumers = {}, {}
        for node in self.order:
            height = 1 + max((self.level.get(id(x), 0) for x in node.input_tensors), default=0)
            for x in node.outputs:
                self.level[id(x)] = height
            for x in node.input_tensors:
                self.consumers.setdefault(id(x), []).append(node)

    def computed_from(self, tensor, source):
        seen, stack = set(), [tensor]
        while stack:
            x = stack.pop()
            if x is source:
                return True
            if id(x) not in seen and id(x) in self.node_of:
                seen.add(id(x))
                stack.extend(self.node_of[id(x)].input_tensors)
        return False

    def skip_and_branch(self, node):
        """(skip, branch, identity) of an addition node (`residual_blocks`' rule)."""
        a, b = node.input_tensors
        if self.computed_from(b, a):
            return a, b, True
        if self.computed_from(a, b):
            return b, a, True
        if self.level.get(id(a), 0) != self.level.get(id(b), 0):
            skip = min((a, b), key=lambda x: self.level.get(id(x), 0))
            return skip, (b if skip is a else a), False
        raise ValueError(f"residual_blocks: the two inputs of {node.operation.name!r} are "
                         "equally far from the input; cannot tell the skip from the branch")

    def activation_of_sum(self, tensor, sums):
        node = self.node_of.get(id(tensor))
        return node is not None and is_activation(node.operation) and \
            len(node.input_tensors) == 1 and id(node.input_tensors[0]) in sums

    def before_scales(self, tensor):
        node = self.node_of.get(id(tensor))
        while node is not None and isinstance(node.operation, BRANCH_SCALES):
            tensor = node.input_tensors[0]
            node = self.node_of.get(id(tensor))
        return tensor


def block_input(model, block):
    """The tensor `block` (a `ResidualBlock` of the flat functional `model`) starts from: its
    skip when that is the identity; else the nearest tensor both inputs of its addition are
    computed from, followed back through the pre-activation layers (activations, normalization,
    Fixup's and NF-ResNet's scalars) that nothing else reads. For the first block this is the
    stem's output, the reference's first point of a signal propagation plot
    (`nfnets/nf_resnet.py`: `signal_metrics(out, 0)` after the stem's max pool)."""
    if block.identity:
        return block.skip
    graph = _Graph(model)
    order, node_of, readers = graph.order, graph.node_of, graph.consumers

    def ancestors(tensor):
        found, stack = {}, [tensor]
        while stack:
            x = stack.pop()
            if id(x) not in found:
                found[id(x)] = x
                stack.extend(node_of[id(x)].input_tensors if id(x) in node_of else [])
        return found

    common = ancestors(block.skip)
    position = {id(x): i for i, node in enumerate(order) for x in node.outputs}
    shared = [x for key, x in ancestors(block.branch).items() if key in common]
    tensor = max(shared, key=lambda x: position.get(id(x), -1))
    while id(tensor) in node_of:
        node = node_of[id(tensor)]
        if len(node.input_tensors) != 1 or not (
                is_activation(node.operation) or isinstance(node.operation, PRE_ACTIVATION_TYPES)):
            break
        source = node.input_tensors[0]
        if len(readers.get(id(source), [])) != 1:
            break
        tensor = source
    return tensor
