"""Reading a Keras functional graph: the classifier, the embedding and where BatchNorm would sit.

`regularize` (`bnreg_tf.nn.regularization`) asks three questions of a model, answered here on the
symbolic graph (every model is first made one flat functional graph by `inline`):
- which layer is the classifier: the Dense, or the 1x1 convolution on a 1x1 map, that makes the
  logits (`find_classifier`);
- what is the embedding: the classifier's input, before any Dropout (`find_embedding`);
- where would BatchNorm sit: after each conv/dense whose output feeds an activation, directly or
  through normalization, padding, local pooling, dropout, Fixup scalar and Add/Concatenate
  layers (`kl_sites`).
`SignalPropagation` asks a fourth, answered in `bnreg_tf.nn.residual_blocks`: where are the
residual blocks, and which input of each block's addition is the skip path?
"""
import keras
from keras.src.models.functional import Functional

from bnreg_tf.nn import layers as bl

CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
KL_TYPES = (*CONV_TYPES, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
            keras.layers.Dense)
DROPOUT_TYPES = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                 keras.layers.SpatialDropout3D, keras.layers.GaussianDropout,
                 keras.layers.AlphaDropout)
NORM_TYPES = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
              keras.layers.GroupNormalization)
POOL_TYPES = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
              keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling1D,
              keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D,
              keras.layers.Flatten)
# Layers a conv's output may cross on its way to the activation and still be "followed by" it.
TRANSPARENT_TYPES = (*NORM_TYPES, *DROPOUT_TYPES, keras.layers.ZeroPadding1D,
                     keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D, keras.layers.Add,
                     keras.layers.Concatenate, keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                     keras.layers.MaxPooling3D, keras.layers.AveragePooling1D,
                     keras.layers.AveragePooling2D, keras.layers.AveragePooling3D, bl.ScalarBias,
                     bl.ScalarScale, bl.StochasticDepth, bl.PenaltyLayer)
ACTIVATION_TYPES = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.PReLU,
                    keras.layers.ELU, bl.Swish)
# Between the classifier and the model's output: reshapes and the identity activation.
LOGITS_PASS_TYPES = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Identity,
                     bl.PenaltyLayer)


def activation_name(layer):
    """The name of `layer`'s own activation ('linear' when it has none)."""
    activation = getattr(layer, "activation", None)
    return "linear" if activation is None else getattr(activation, "__name__", str(activation))


def is_activation(layer):
    if isinstance(layer, keras.layers.Activation):
        return activation_name(layer) != "linear"
    return isinstance(layer, ACTIVATION_TYPES)


def check_graph_model(model):
    """Raises the one-line error for models whose layer graph cannot be read."""
    if isinstance(model, keras.Sequential):
        try:
            model.inputs
        except (AttributeError, ValueError):
            raise ValueError(
                f"regularize: Sequential model {model.name!r} has no input shape yet; start it "
                "with keras.Input(shape) or call model.build(input_shape) first") from None
        return
    if not isinstance(model, Functional):
        raise ValueError(
            f"regularize: {model.name!r} is a subclassed {type(model).__name__}, whose layer graph "
            "Keras does not record; write it functionally (inputs = keras.Input(shape); outputs "
            "= layer calls; keras.Model(inputs, outputs)) or put bnreg_tf.nn.layers.EmbeddingL2 / "
            "FunctionalL2 / StandardizationKL in its call()")


def _call_inlined(operation, *args, **kwargs):
    """Calls `operation`, running a nested Sequential or functional model layer by layer."""
    if isinstance(operation, keras.Sequential):
        x, = args
        extra = {"training": kwargs["training"]} if "training" in kwargs else {}
        for layer in operation.layers:
            x = _call_inlined(layer, x, **extra)
        return x
    if isinstance(operation, Functional):
        inputs, = args
        extra = {"training": kwargs["training"]} if "training" in kwargs else {}
        return operation._run_through_graph(
            inputs, call_fn=lambda op, *a, **k: _call_inlined(op, *a, **{**k, **extra}))
    return operation(*args, **kwargs)


def input_structure(model):
    return model.inputs[0] if isinstance(model, keras.Sequential) else model.input


def output_structure(model):
    return model.outputs[0] if isinstance(model, keras.Sequential) else model.output


def fresh_inputs(model):
    """New `keras.Input`s like `model`'s, in its input structure."""
    def like(x):
        return keras.Input(batch_shape=x.shape, dtype=x.dtype,
                           name=x._keras_history.operation.name)
    return keras.tree.map_structure(like, input_structure(model))


def inline(model):
    """`model` as one flat functional graph of the same layers (nested models opened)."""
    if isinstance(model, Functional) and not any(
            isinstance(layer, keras.Model) for layer in model.layers):
        return model
    inputs = fresh_inputs(model)
    return keras.Model(inputs, _call_inlined(model, inputs), name=model.name)


def nodes(model):
    """The computing nodes of a functional `model`, inputs first."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                yield node


def producer(tensor):
    return tensor._keras_history.operation


def _single_input(node):
    inputs = node.input_tensors
    return inputs[0] if len(inputs) == 1 else None


def logits_tensor(model):
    """The logits: the single output, or the output dict's "logits"."""
    output = model.output
    if isinstance(output, dict):
        if "logits" not in output:
            raise ValueError(f"regularize: {model.name!r} returns a dict without a 'logits' key "
                             f"(keys: {', '.join(map(repr, output))})")
        return output["logits"]
    flat = keras.tree.flatten(output)
    if len(flat) != 1:
        raise ValueError(f"regularize: {model.name!r} has {len(flat)} outputs; give it one logits "
                         "output or a dict with 'logits'")
    return flat[0]


def _is_classifier(layer, input_tensor):
    if isinstance(layer, keras.layers.Dense):
        return True
    return (isinstance(layer, CONV_TYPES) and set(layer.kernel_size) == {1}
            and input_tensor is not None and set(input_tensor.shape[1:-1]) == {1})


def find_classifier(model, logits):
    """(classifier node, its input tensor) or raises: walks back from the logits."""
    node_of = {id(x): node for node in nodes(model) for x in node.outputs}
    tensor = logits
    while id(tensor) in node_of:
        node = node_of[id(tensor)]
        layer, x = node.operation, _single_input(node)
        if activation_name(layer) in ("softmax", "sigmoid", "log_softmax"):
            raise ValueError(
                f"regularize: layer {layer.name!r} applies {activation_name(layer)}; the penalties "
                "act on logits (build keras.applications models with classifier_activation=None)")
        if _is_classifier(layer, x):
            if activation_name(layer) != "linear":
                raise ValueError(f"regularize: classifier {layer.name!r} applies "
                                 f"{activation_name(layer)}; the penalties act on logits")
            return node, x
        passes = isinstance(layer, LOGITS_PASS_TYPES) or (
            isinstance(layer, keras.layers.Activation) and activation_name(layer) == "linear")
        if not passes or x is None:
            break
        tensor = x
    raise ValueError(
        f"regularize: no classifier found in {model.name!r}: its logits come from "
        f"{producer(tensor).name!r} ({type(producer(tensor)).__name__}), not from a Dense or a 1x1 "
        "convolution on a 1x1 map")


def before_dropout(model, tensor):
    """Walks back from `tensor` through Dropout layers."""
    node_of = {id(x): node for node in nodes(model) for x in node.outputs}
    while id(tensor) in node_of and isinstance(node_of[id(tensor)].operation, DROPOUT_TYPES):
        tensor = node_of[id(tensor)].input_tensors[0]
    return tensor


def norm_after_pool(model, tensor):
    """The normalization layer between the global pool and `tensor`, or None."""
    node_of = {id(x): node for node in nodes(model) for x in node.outputs}
    node = node_of.get(id(tensor))
    if node is None or not isinstance(node.operation, NORM_TYPES):
        return None
    parent = node_of.get(id(node.input_tensors[0]))
    return node.operation if parent is not None and isinstance(parent.operation, POOL_TYPES) else None


def ancestors(model, tensor):
    """Ids of `tensor` and of every tensor it is computed from."""
    node_of = {id(x): node for node in nodes(model) for x in node.outputs}
    seen, stack = set(), [tensor]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if id(x) in node_of:
            stack.extend(node_of[id(x)].input_tensors)
    return seen


def embedding_candidates(model, classifier_input):
    """Names of the layers from the last global pool (or Flatten) to the classifier's input."""
    node_of = {id(x): node for node in nodes(model) for x in node.outputs}
    names, tensor = [], classifier_input
    while id(tensor) in node_of and len(names) < 6:
        node = node_of[id(tensor)]
        names.append(node.operation.name)
        if isinstance(node.operation, POOL_TYPES) or len(node.input_tensors) != 1:
            break
        tensor = node.input_tensors[0]
    return names


def output_of(model, layer_or_name, candidates):
    """The output tensor of the layer named (or given) in the flat `model`."""
    names = ", ".join(map(repr, candidates)) or "none found"
    name = layer_or_name if isinstance(layer_or_name, str) else getattr(layer_or_name, "name", None)
    found = [node for node in nodes(model) if node.operation.name == name
             and (isinstance(layer_or_name, str) or node.operation is layer_or_name)]
    if not found:
        raise ValueError(f"regularize: embedding={layer_or_name!r} is not a layer of "
                         f"{model.name!r}; candidates: {names}")
    if len(found) > 1 or len(found[0].outputs) != 1:
        raise ValueError(f"regularize: embedding layer {name!r} has several outputs or calls; "
                         f"candidates: {names}")
    return found[0].outputs[0]


def kl_sites(model, classifier):
    """Nodes of conv/dense layers (not `classifier`) followed by an activation: BatchNorm's place.

    A layer with its own activation (`Conv2D(activation="relu")`) is followed by it.
    """
    consumers = {}
    for node in nodes(model):
        for x in node.input_tensors:
            consumers.setdefault(id(x), []).append(node)

    def feeds_activation(tensor):
        seen, stack = set(), [tensor]
        while stack:
            x = stack.pop()
            for node in consumers.get(id(x), []):
                if is_activation(node.operation):
                    return True
                if isinstance(node.operation, TRANSPARENT_TYPES) and id(node) not in seen:
                    seen.add(id(node))
                    stack.extend(node.outputs)
        return False

    return [node for node in nodes(model)
            if isinstance(node.operation, KL_TYPES) and node.operation is not classifier
            and (activation_name(node.operation) != "linear" or feeds_activation(node.outputs[0]))]
