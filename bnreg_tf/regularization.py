"""The one place that attaches the paper's penalties to a Keras model (paper sections 2-3).

`regularize(model, ...)` takes any functional or Sequential classifier (bnreg's own models,
keras.applications built with `classifier_activation=None`, your own) and returns it with
Embedding L2, Functional L2, KL standardization and embedding Dropout attached. The bnreg
builders build plain networks and attach their final-layer penalties through `regularize`; their
KL layers sit at their norm sites through `attach_kl`, the same function `regularize` calls.

Penalty layers are named after what they measure: `embedding_l2`, `functional_l2`,
`embedding_dropout`, and `<layer>_kl` for the KL on the output of `<layer>`.
"""
import logging

import keras

from bnreg_tf import layers as bl
from bnreg_tf import model_graph as mg


def attach_kl(x, coefficient):
    """`StandardizationKL(coefficient)` on `x`, named `<layer that made x>_kl`; `x` if 0."""
    if bl.check_coefficient(coefficient, "standardization_kl") == 0:
        return x
    return bl.StandardizationKL(coefficient, name=f"{mg.producer(x).name}_kl")(x)


def attach_embedding_penalties(embedding, embedding_l2, dropout, seed):
    """EL2 on `embedding`, then Dropout: returns (the embedding endpoint, the classifier's side)."""
    if embedding_l2 > 0:
        embedding = bl.EmbeddingL2(embedding_l2, name="embedding_l2")(embedding)
    x = embedding
    if dropout > 0:
        x = keras.layers.Dropout(dropout, seed=seed, name="embedding_dropout")(x)
    return embedding, x


def attach_logits_penalty(logits, functional_l2):
    if functional_l2 > 0:
        logits = bl.FunctionalL2(functional_l2, name="functional_l2")(logits)
    return logits


def _linear_copy(layer, x):
    """`layer` without its activation (same config and weights), called on `x`."""
    config = {**layer.get_config(), "activation": "linear"}
    copy = type(layer).from_config(config)
    y = copy(x)
    copy.set_weights(layer.get_weights())
    return y


def _check_coefficients(embedding_l2, functional_l2, standardization_kl, dropout):
    values = [bl.check_coefficient(v, n) for v, n in (
        (embedding_l2, "embedding_l2"), (functional_l2, "functional_l2"),
        (standardization_kl, "standardization_kl"), (dropout, "dropout"))]
    if values[3] >= 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return values


def _check_not_attached(model, requested):
    """Raises if a penalty asked for is already in `model` (e.g. regularize applied twice)."""
    for kind, coefficient in requested.items():
        found = [layer.name for layer in model.layers if isinstance(layer, kind)]
        if coefficient > 0 and found:
            raise ValueError(f"regularize: {model.name!r} already has {kind.__name__} layers "
                             f"({', '.join(found[:3])}); regularize the plain model")


def _find_embedding(flat, classifier_input, embedding):
    """The embedding tensor of the flat model: named, or the classifier's input before Dropout."""
    candidates = mg.embedding_candidates(flat, classifier_input)
    if embedding is None:
        tensor = mg.before_dropout(flat, classifier_input)
        norm = mg.norm_after_pool(flat, tensor)
        if norm is not None:
            logging.info(
                "regularize: EL2 goes on the output of %r (the classifier's input), not on the "
                "pooled features before it: through %s those could shrink to zero without "
                "changing the logits", norm.name, type(norm).__name__)
        return tensor
    tensor = mg.output_of(flat, embedding, candidates)
    if id(tensor) not in mg.ancestors(flat, classifier_input) or set(tensor.shape[1:-1]) - {1}:
        raise ValueError(f"regularize: embedding {mg.producer(tensor).name!r} is not a [B, H] "
                         "vector (or 1x1 map) feeding the classifier; candidates: "
                         f"{', '.join(map(repr, candidates))}")
    return tensor


def regularize(model, embedding_l2=0.0, functional_l2=0.0, standardization_kl=0.0, dropout=0.0,
               embedding=None, return_embedding=False, seed=None):
    """Returns `model` with the paper's penalties attached, sharing its layers and weights.

    `model` is a functional or Sequential Keras classifier whose output is its logits (a tensor,
    or a dict with "logits"; build keras.applications with `classifier_activation=None`). A
    subclassed model is refused with a one-line error (Keras records no layer graph for it).

    - The classifier is the Dense, or the 1x1 convolution on a 1x1 map, making the logits.
    - The embedding is the classifier's input before any Dropout, flattened to [B, H]; or the
      output of `embedding` (a layer or its name). Where a normalization layer sits between the
      global pool and the classifier (ConvNeXt's LayerNorm), EL2 is on its output: EL2 on the
      pool's output could be driven to zero by scaling without changing the logits (logged).
    - `embedding_l2`, `functional_l2`: coefficients of `EmbeddingL2` on the embedding and
      `FunctionalL2` on the logits (paper section 3).
    - `standardization_kl`: a `StandardizationKL` where BatchNorm sits or would sit: after each
      conv/dense layer (never the classifier) whose output feeds an activation, directly or
      through normalization, padding, local pooling, dropout, Fixup scalars or Add/Concatenate;
      so before the
      residual Add where there is one. A layer with its own activation (`Conv2D(...,
      activation="relu")`) is replaced by a copy without it (same weights, not shared with
      `model`) followed by an `Activation`, and the KL goes between the two.
    - `dropout`: Dropout of this rate on the embedding, before the classifier (section 3.2);
      `seed` seeds its masks (and nothing else).

    The result has `model`'s output structure (a logits tensor stays a tensor), so
    `compile(loss=..., metrics=["accuracy"])` and `fit(x, y)` work unchanged, on arrays or a
    `tf.data.Dataset`, with the inputs at the scale `model` expects. `return_embedding=True`
    returns bnreg's `{"logits": [B, K], "embedding": [B, H]}` instead. Penalties act in training
    only and log their raw values as metrics named after their layers. With nothing to attach,
    check or change, `model` itself is returned.
    """
    embedding_l2, functional_l2, standardization_kl, dropout = _check_coefficients(
        embedding_l2, functional_l2, standardization_kl, dropout)
    mg.check_graph_model(model)
    output = mg.output_structure(model)
    output_is_contract = isinstance(output, dict) and "embedding" in output
    if not (embedding_l2 or functional_l2 or standardization_kl or dropout) and embedding is None \
            and (output_is_contract or not return_embedding):
        return model
    flat = mg.inline(model)
    _check_not_attached(flat, {bl.EmbeddingL2: embedding_l2, bl.FunctionalL2: functional_l2,
                               bl.StandardizationKL: standardization_kl})
    logits = mg.logits_tensor(flat)
    classifier, classifier_input = mg.find_classifier(flat, logits)
    if embedding is None and output_is_contract:
        embedding = mg.producer(output["embedding"])
    embedding_tensor = _find_embedding(flat, classifier_input, embedding)
    kl_nodes = mg.kl_sites(flat, classifier.operation) if standardization_kl else []
    return _rebuild(flat, logits, embedding_tensor, kl_nodes, return_embedding,
                    embedding_l2, functional_l2, standardization_kl, dropout, seed)


def _rebuild(flat, logits, embedding, kl_nodes, return_embedding, embedding_l2, functional_l2,
             standardization_kl, dropout, seed):
    """Runs the flat graph on new inputs, attaching the penalties after the chosen tensors."""
    kl_outputs = {id(node.outputs[0]) for node in kl_nodes}
    split = {id(node) for node in kl_nodes if mg.activation_name(node.operation) != "linear"}
    endpoint = {}
    inputs = mg.fresh_inputs(flat)
    tensors = {id(x): y for x, y in zip(flat.inputs, keras.tree.flatten(inputs))}
    for node in mg.nodes(flat):
        args, kwargs = node.arguments.fill_in(tensors)
        layer = node.operation
        if id(node) in split:
            y = attach_kl(_linear_copy(layer, *args), standardization_kl)
            outputs = keras.layers.Activation(layer.activation, name=f"{layer.name}_activation")(y)
        else:
            outputs = layer(*args, **kwargs)
        for x, y in zip(node.outputs, keras.tree.flatten(outputs)):
            if id(x) in kl_outputs and id(node) not in split:
                y = attach_kl(y, standardization_kl)
            if x is embedding:
                endpoint["embedding"], y = attach_embedding_penalties(y, embedding_l2, dropout, seed)
            if x is logits:
                y = attach_logits_penalty(y, functional_l2)
            tensors[id(x)] = y
    embedding_out = endpoint.get("embedding", tensors.get(id(embedding)))
    if return_embedding:
        if len(embedding_out.shape) > 2:
            embedding_out = keras.layers.Flatten(name="embedding_flatten")(embedding_out)
        outputs = {"logits": tensors[id(logits)], "embedding": embedding_out}
    else:
        outputs = keras.tree.map_structure(
            lambda x: embedding_out if x is embedding else tensors[id(x)], flat.output)
    return keras.Model(inputs, outputs, name=flat.name)
