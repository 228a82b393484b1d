"""Every bnreg model's parameter counts, variable names and penalty layers on the current Keras
backend (issue 24): `python -m tests.any_backend.census` prints them as one JSON line, so that a
test on one backend can compare them with the other's.

The models are the model table's (`bnreg_tf.run.models`, a TensorFlow floor, is not imported):
ResNet-18..152 in every norm mode of `resnet.MODES`, WRN-16-2 in every mode and WRN-28-10, and
EfficientNet B0..B8 and L2, each with the penalties its modes take attached by `regularize`.
They are built inside `keras.StatelessScope(initialize_variables=False)`: every layer is built
and called symbolically as usual, but no weight is allocated or initialised (EfficientNet-L2
alone has 480M), which keeps the whole census to seconds. Counts and names depend on shapes only.
"""
import json
import math
import sys

import keras

import efficientnet
import resnet

INPUT = (32, 32, 3)   # parameters do not depend on the resolution; the census is fast at 32 px


def penalties(norm):
    """EL2 and FL2 everywhere; KL where a run may take it (`PENALTIES`' norm modes)."""
    kl = 1e-6 if norm in ("fixup_standardize", "none") else 0.0
    return dict(embedding_l2=0.1, functional_l2=0.1, standardization_kl=kl)


def builders():
    """{key: function building the model}; keys `resnet50/fixup`, `wrn16_2/none`, `efficientnet_b0`."""
    table = {}
    for depth, spec in resnet.RESNETS.items():
        for norm in resnet.NORM_MODES:
            table[f"resnet{depth}/{norm}"] = (
                lambda spec=spec, depth=depth, norm=norm: resnet.build_resnet_v1(
                    spec, num_classes=1000, input_shape=INPUT, norm=norm, seed=0,
                    name=f"resnet{depth}", **penalties(norm)))
    for depth, width, norms in ((16, 2, resnet.NORM_MODES), (28, 10, ("batchnorm",))):
        for norm in norms:
            table[f"wrn{depth}_{width}/{norm}"] = (
                lambda depth=depth, width=width, norm=norm: resnet.wide_resnet(
                    depth, width, num_classes=10, input_shape=INPUT, norm=norm, seed=0,
                    **penalties(norm)))
    for variant in efficientnet.SCALING:
        table[f"efficientnet_{variant}"] = (
            lambda variant=variant: efficientnet.build_model(
                variant, num_classes=1000, input_shape=INPUT, seed=0, **penalties("batchnorm")))
    return table


def describe(model):
    """Counts, every weight as [path, shape, trainable] in order, and the penalty layers."""
    from bnreg_tf.nn.layers import PenaltyLayer

    def count(weights):
        return sum(math.prod(w.shape) for w in weights)

    return {
        "trainable": count(model.trainable_weights),
        "non_trainable": count(model.non_trainable_weights),
        "weights": [[w.path, list(w.shape), bool(w.trainable)] for w in model.weights],
        "penalty_layers": [layer.name for layer in model._flatten_layers(include_self=False)
                           if isinstance(layer, PenaltyLayer)],
        "class": type(model).__name__,
    }


def census(keys=None):
    """{key: describe(model)} for `keys` of `builders()` (all by default).

    Keras' functional graph walk (`keras.src.ops.function._build_map_helper`) recurses once
    per layer of the longest path: EfficientNet-L2 needs 700-1000 frames, past Python's default
    limit under pytest-xdist's deeper stack, so the limit is raised while building.
    """
    table = builders()
    result = {}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        for key in keys or table:
            keras.backend.clear_session()   # the same automatic layer names in every process
            with keras.StatelessScope(initialize_variables=False):
                result[key] = describe(table[key]())
    finally:
        sys.setrecursionlimit(limit)
    return result


if __name__ == "__main__":
    print(json.dumps({"backend": keras.backend.backend(), "census": census()}))
