"""Attach the paper's penalties to any Keras functional model (paper sections 2-3).

The project's output contract: a model returns `{"logits": [B, K], "embedding": [B, H]}`, the
embedding being the output of the final global average pool (right before the classifier).
"""
import keras

from bnreg_tf import layers as bl

KL_LAYER_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)


def _layer_of(model, tensor_or_name, what):
    if isinstance(tensor_or_name, str):
        try:
            return model.get_layer(tensor_or_name)
        except ValueError:
            raise ValueError(f"{what}: model {model.name!r} has no layer {tensor_or_name!r}") from None
    return tensor_or_name._keras_history.operation


def find_endpoints(model, embedding_layer=None, logits_layer=None):
    """Returns the (embedding, logits) layers of `model`, named or taken from the contract."""
    outputs = model.output
    if embedding_layer is None:
        if not (isinstance(outputs, dict) and "embedding" in outputs):
            raise ValueError(
                "regularize: the model does not return {'logits', 'embedding'}; name its "
                "embedding layer, e.g. embedding_layer='avg_pool'"
            )
        embedding_layer = outputs["embedding"]
    if logits_layer is None:
        if isinstance(outputs, dict):
            if "logits" not in outputs:
                raise ValueError("regularize: the model's output dict has no 'logits' key")
            logits_layer = outputs["logits"]
        elif len(model.outputs) == 1:
            logits_layer = model.outputs[0]
        else:
            raise ValueError("regularize: the model has several outputs; name its logits_layer")
    embedding = _layer_of(model, embedding_layer, "embedding_layer")
    logits = _layer_of(model, logits_layer, "logits_layer")
    activation = getattr(logits, "activation", None)
    if getattr(activation, "__name__", "") in ("softmax", "sigmoid"):
        raise ValueError(
            f"regularize: layer {logits.name!r} applies {activation.__name__}; the penalties act on "
            "logits (build keras.applications models with classifier_activation=None)"
        )
    return embedding, logits


def regularize(
    model,
    *,
    embedding_l2=0.0,
    functional_l2=0.0,
    standardization_kl=0.0,
    dropout=0.0,
    embedding_layer=None,
    logits_layer=None,
    kl_layer_types=KL_LAYER_TYPES,
    seed=None,
):
    """Returns a model sharing `model`'s layers and weights, with the penalties attached.

    - `embedding_l2`, `functional_l2`: coefficients of `EmbeddingL2` after the embedding layer
      and `FunctionalL2` after the logits layer;
    - `standardization_kl`: a `StandardizationKL` after every layer of `kl_layer_types` (where
      BatchNorm would sit) other than the classifier;
    - `dropout`: Dropout on the embedding, before the classifier (the paper's comparison).

    Works on contract models, and on any single-output functional model (e.g. keras.applications
    with `classifier_activation=None`) once `embedding_layer` is named. The result always
    returns `{"logits", "embedding"}`; its embedding is taken before the dropout.
    """
    embedding_l2 = bl.check_coefficient(embedding_l2, "embedding_l2")
    functional_l2 = bl.check_coefficient(functional_l2, "functional_l2")
    standardization_kl = bl.check_coefficient(standardization_kl, "standardization_kl")
    dropout = bl.check_coefficient(dropout, "dropout")
    if dropout >= 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    embedding_op, logits_op = find_endpoints(model, embedding_layer, logits_layer)
    endpoints = {}

    def call_function(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer is embedding_op:
            if embedding_l2 > 0:
                out = bl.EmbeddingL2(embedding_l2, name="embedding_l2")(out)
            endpoints["embedding"] = out
            if dropout > 0:
                out = keras.layers.Dropout(dropout, seed=seed, name="embedding_dropout")(out)
        elif layer is logits_op:
            if functional_l2 > 0:
                out = bl.FunctionalL2(functional_l2, name="functional_l2")(out)
            endpoints["logits"] = out
        elif standardization_kl > 0 and isinstance(layer, kl_layer_types):
            out = bl.StandardizationKL(standardization_kl, name=f"kl_{layer.name}")(out)
        return out

    clone = keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call_function
    )
    return keras.Model(clone.input, endpoints, name=f"{model.name}_regularized")
