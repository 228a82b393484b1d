"""The classifier head shared by every bnreg model: the project's output contract.

`{"logits": [B, K], "embedding": [B, H]}` with the embedding taken after the final global
average pool (paper section 3: `NN(x) = W Emb(x)`). The head is plain: the builders attach EL2,
FL2 and the embedding Dropout through `regularize`, the code that attaches them to any Keras
model.
"""
import keras


def classifier_head(embedding, num_classes, *, kernel_initializer="glorot_uniform",
                    bias_initializer="zeros", pre_classifier=None):
    """The Dense classifier on `embedding`; returns the output dict.

    `pre_classifier` is a layer applied between the embedding and the classifier (Fixup's
    scalar bias). The classifier layer is named `classifier`.
    """
    x = embedding if pre_classifier is None else pre_classifier(embedding)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer,
        dtype="float32",
        name="classifier",
    )(x)
    return {"logits": logits, "embedding": embedding}
