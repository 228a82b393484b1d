"""The one place that attaches the paper's penalties to a Keras model (paper sections 2-3).

`regularize(model, ...)` takes any functional or Sequential classifier (bnreg's own models,
keras.applications built with `classifier_activation=None`, your own) and returns it with the
penalties of `bnreg_tf.nn.penalty_table.PENALTIES` (Embedding L2, Functional L2, KL
standardization) and embedding Dropout attached. The bnreg builders build plain networks and
attach every penalty through it, passing the norm sites they know.

Penalty layers are named after what they measure: `embedding_l2`, `functional_l2`,
`embedding_dropout`, and `<layer>_kl` for the KL on the output of `<layer>`.
"""
import logging

import keras

from bnreg_tf.nn import graph as mg
from bnreg_tf.nn import layers as bl
from bnreg_tf.nn.penalized import PenalizedModel
from bnreg_tf.nn.penalty_table import PENALTIES


def _linear_copy(layer, x):
    """`layer` without its activation (same config and weights), called on `x`."""
    config = {**layer.get_config(), "activation": "linear"}
    copy = type(layer).from_config(config)
    y = copy(x)
    copy.set_weights(layer.get_weights())
    return y


def check_coefficients(coefficients):
    """`{name: float}` of every penalty in `PENALTIES` (0 when not given); raises ValueError
    (one line) for an unknown name or a value that is not a finite number >= 0."""
    unknown = sorted(set(coefficients) - set(PENALTIES))
    if unknown:
        raise ValueError(f"regularize: unknown penalty {unknown[0]!r}; the penalties are "
                         f"{', '.join(PENALTIES)} (bnreg_tf.nn.penalty_table)")
    return {name: bl.check_coefficient(coefficients.get(name, 0.0), name) for name in PENALTIES}


def check_dropout(dropout):
    dropout = bl.check_coefficient(dropout, "dropout")
    if dropout >= 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return dropout


def _check_not_attached(model, active):
    """Raises if a penalty asked for is already in `model` (e.g. regularize applied twice)."""
    for name in active:
        kind = PENALTIES[name].layer
        found = [layer.name for layer in model.layers if isinstance(layer, kind)]
        if found:
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


def regularize(model, *, dropout=0.0, embedding=None, return_embedding=False, seed=None,
               norm_sites=None, **coefficients):
    """Returns `model` with the paper's penalties attached, sharing its layers and weights.

    `model` is a functional or Sequential Keras classifier whose output is its logits (a tensor,
    or a dict with "logits"; build keras.applications with `classifier_activation=None`). A
    subclassed model is refused with a one-line error (Keras records no layer graph for it).

    - The classifier is the Dense, or the 1x1 convolution on a 1x1 map, making the logits.
    - The embedding is the classifier's input before any Dropout, flattened to [B, H]; or the
      output of `embedding` (a layer or its name). Where a normalization layer sits between the
      global pool and the classifier (ConvNeXt's LayerNorm), EL2 is on its output: EL2 on the
      pool's output could be driven to zero by scaling without changing the logits (logged).
    - `**coefficients`: one coefficient per penalty, by its name in `PENALTIES`
      (`bnreg_tf.nn.penalty_table`): `embedding_l2` puts `EmbeddingL2` on the embedding,
      `functional_l2` `FunctionalL2` on the logits (paper section 3), `standardization_kl` a
      `StandardizationKL` at every norm site (section 2.2), where BatchNorm sits or would sit.
    - `norm_sites`: those places, as tensors of `model`'s graph (bnreg's builders pass where
      their BatchNorm sits); by default after each conv/dense layer (never the classifier)
      whose output feeds an activation, directly or through normalization, padding, local
      pooling, dropout, Fixup scalars or Add/Concatenate; so before the residual Add where there
      is one. There a layer with its own activation (`Conv2D(..., activation="relu")`) is
      replaced by a copy without it (same weights, not shared with `model`) followed by an
      `Activation`, and the penalty goes between the two.
    - `dropout`: Dropout of this rate on the embedding, before the classifier (section 3.2);
      `seed` seeds its masks (and nothing else).

    The result has `model`'s output structure (a logits tensor stays a tensor), so
    `compile(loss=..., metrics=["accuracy"])` and `fit(x, y)` work unchanged, on arrays or a
    `tf.data.Dataset`, with the inputs at the scale `model` expects. `return_embedding=True`
    returns bnreg's `{"logits": [B, K], "embedding": [B, H]}` instead. Penalties act in training
    only and log their raw values as metrics named after their layers; the result is then a
    `bnreg_tf.nn.PenalizedModel` (a functional `keras.Model` that logs them on JAX as well). With
    nothing to attach, check or change, `model` itself is returned.
    """
    coefficients = check_coefficients(coefficients)
    dropout = check_dropout(dropout)
    active = {name: value for name, value in coefficients.items() if value > 0}
    mg.check_graph_model(model)
    output = mg.output_structure(model)
    output_is_contract = isinstance(output, dict) and "embedding" in output
    if not active and not dropout and embedding is None \
            and (output_is_contract or not return_embedding):
        return model
    flat = mg.inline(model)
    _check_not_attached(flat, active)
    logits = mg.logits_tensor(flat)
    classifier, classifier_input = mg.find_classifier(flat, logits)
    if embedding is None and output_is_contract:
        embedding = mg.producer(output["embedding"])
    attach = _Attachments(flat, active, dropout, seed)
    attach.embedding = _find_embedding(flat, classifier_input, embedding)
    attach.logits = logits
    if any(PENALTIES[name].site == "norm_sites" for name in active):
        attach.find_norm_sites(classifier.operation, norm_sites)
    return attach.rebuild(return_embedding)


class _Attachments:
    """Where each active penalty goes in the flat graph, and the rebuilt model with them."""

    def __init__(self, flat, active, dropout, seed):
        self.flat, self.dropout, self.seed = flat, dropout, seed
        self.by_site = {site: [(PENALTIES[name], value) for name, value in active.items()
                               if PENALTIES[name].site == site]
                        for site in ("embedding", "logits", "norm_sites")}
        self.embedding = self.logits = None
        self.site_outputs, self.split = set(), set()

    def find_norm_sites(self, classifier, norm_sites):
        """The tensors given, or the conv/dense nodes before an activation (`graph.kl_sites`)."""
        if norm_sites is not None:
            self.site_outputs = {id(x) for x in norm_sites}
            return
        found = mg.kl_sites(self.flat, classifier)
        self.site_outputs = {id(node.outputs[0]) for node in found}
        self.split = {id(node) for node in found
                      if mg.activation_name(node.operation) != "linear"}

    def _at_norm_site(self, x):
        for row, value in self.by_site["norm_sites"]:
            x = row.layer(value, name=row.layer_name(mg.producer(x).name))(x)
        return x

    def _at_embedding(self, x):
        """The penalties on the embedding, then Dropout: (the embedding endpoint, the
        classifier's side)."""
        for row, value in self.by_site["embedding"]:
            x = row.layer(value, name=row.layer_name())(x)
        side = x
        if self.dropout > 0:
            side = keras.layers.Dropout(self.dropout, seed=self.seed,
                                        name="embedding_dropout")(x)
        return x, side

    def _at_logits(self, x):
        for row, value in self.by_site["logits"]:
            x = row.layer(value, name=row.layer_name())(x)
        return x

    def _call(self, node, tensors):
        args, kwargs = node.arguments.fill_in(tensors)
        layer = node.operation
        if id(node) not in self.split:
            return layer(*args, **kwargs)
        y = self._at_norm_site(_linear_copy(layer, *args))
        return keras.layers.Activation(layer.activation, name=f"{layer.name}_activation")(y)

    def rebuild(self, return_embedding):
        """Runs the flat graph on new inputs, attaching the penalties after the chosen tensors."""
        flat, endpoint = self.flat, {}
        inputs = mg.fresh_inputs(flat)
        tensors = {id(x): y for x, y in zip(flat.inputs, keras.tree.flatten(inputs))}
        for node in mg.nodes(flat):
            outputs = self._call(node, tensors)
            for x, y in zip(node.outputs, keras.tree.flatten(outputs)):
                if id(x) in self.site_outputs and id(node) not in self.split:
                    y = self._at_norm_site(y)
                if x is self.embedding:
                    endpoint["embedding"], y = self._at_embedding(y)
                if x is self.logits:
                    y = self._at_logits(y)
                tensors[id(x)] = y
        embedding_out = endpoint.get("embedding", tensors.get(id(self.embedding)))
        if return_embedding:
            if len(embedding_out.shape) > 2:
                embedding_out = keras.layers.Flatten(name="embedding_flatten")(embedding_out)
            outputs = {"logits": tensors[id(self.logits)], "embedding": embedding_out}
        else:
            outputs = keras.tree.map_structure(
                lambda x: embedding_out if x is self.embedding else tensors[id(x)], flat.output)
        # A PenalizedModel logs its penalty layers' values on JAX too (bnreg_tf.nn.penalized).
        penalized = any(self.by_site.values()) or any(
            isinstance(layer, bl.PenaltyLayer) for layer in flat._flatten_layers())
        model_class = PenalizedModel if penalized else keras.Model
        return model_class(inputs, outputs, name=flat.name)
