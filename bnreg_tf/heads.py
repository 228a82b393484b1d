"""The classifier head shared by every bnreg model: the project's output contract.

`{"logits": [B, K], "embedding": [B, H]}` with the embedding taken after the final global
average pool and before any Dropout (paper section 3: `NN(x) = W Emb(x)`).
"""
import keras

from bnreg_tf import layers as bl


def classifier_head(
    embedding,
    num_classes,
    *,
    embedding_l2=0.0,
    functional_l2=0.0,
    dropout=0.0,
    kernel_initializer="glorot_uniform",
    bias_initializer="zeros",
    pre_classifier=None,
    seed=None,
):
    """EL2 on the embedding, optional Dropout, the Dense classifier, FL2 on the logits.

    `pre_classifier` is a layer applied between dropout and the classifier (Fixup's scalar bias).
    Returns the output dict; the classifier layer is named `classifier`.
    """
    if bl.check_coefficient(embedding_l2, "embedding_l2") > 0:
        embedding = bl.EmbeddingL2(embedding_l2, name="embedding_l2")(embedding)
    x = embedding
    if bl.check_coefficient(dropout, "dropout") > 0:
        if dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        x = keras.layers.Dropout(dropout, seed=seed, name="embedding_dropout")(x)
    if pre_classifier is not None:
        x = pre_classifier(x)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer,
        dtype="float32",
        name="classifier",
    )(x)
    if bl.check_coefficient(functional_l2, "functional_l2") > 0:
        logits = bl.FunctionalL2(functional_l2, name="functional_l2")(logits)
    return {"logits": logits, "embedding": embedding}
