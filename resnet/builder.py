"""`build_model(name, ...)`: one entry point over the WRN and ResNet v1 families."""
from resnet.resnet_v1 import build_resnet_v1, parse_resnet
from resnet.wide_resnet import build_wide_resnet, parse_wrn

DEFAULT_INPUT_SHAPES = {"wrn": (32, 32, 3), "resnet": (224, 224, 3)}


def build_model(
    name,
    *,
    num_classes,
    input_shape=None,
    norm="batchnorm",
    activation="relu",
    dropout=0.0,
    standardization_kl=0.0,
    embedding_l2=0.0,
    functional_l2=0.0,
    seed=None,
):
    """Builds `wrn{depth}_{width}` (depth = 6n+4) or `resnet{18,34,50,101,152}`; returns an
    uncompiled `keras.Model` with bnreg's output contract `{"logits": [B, K], "embedding": [B, H]}`
    (H = the final feature width: 64k for WRN-d-k, 2048 for ResNet-50; logits in float32).

    Inputs: float images [B, H, W, C] normalised per channel, `(x - mean) / std` on the 0..255
    scale (what `bnreg_tf.data.pipeline` gives); no preprocessing is inside the model. It takes
    what any Keras model takes: arrays, tensors or a `tf.data.Dataset` in `fit`/`predict`.
    `input_shape` defaults to 32x32x3 (WRN), 224x224x3 (ResNet).

    `norm` is one of `resnet.NORM_MODES` (the paper's Table 1 ablations, see `NormPolicy`);
    `activation` `relu` or `swish` (paper section 4.1, rho initialised to 0). `dropout` acts on the
    embedding, before the classifier; `embedding_l2`, `functional_l2` attach `EmbeddingL2` on
    the embedding and `FunctionalL2` on the logits through `bnreg_tf.regularize`, and
    `standardization_kl` a `StandardizationKL` at every norm site. `seed` (int or None) makes
    the initial weights and the Dropout masks reproducible: same seed, same model.
    """
    kwargs = dict(
        num_classes=num_classes, norm=norm, activation=activation, dropout=dropout,
        standardization_kl=standardization_kl, embedding_l2=embedding_l2,
        functional_l2=functional_l2, seed=seed,
    )
    wrn = parse_wrn(name)
    if wrn is not None:
        return build_wide_resnet(wrn, input_shape=input_shape or DEFAULT_INPUT_SHAPES["wrn"],
                                 **kwargs)
    spec = parse_resnet(name)
    if spec is not None:
        return build_resnet_v1(spec, input_shape=input_shape or DEFAULT_INPUT_SHAPES["resnet"],
                               name=name, **kwargs)
    raise ValueError(
        f"model {name!r} is unknown: expected wrn<depth>_<width> (e.g. wrn28_10) or "
        "resnet18/34/50/101/152"
    )
