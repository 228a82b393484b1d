"""The worker of test_jax_step.py (issue 24, item 6), run with KERAS_BACKEND=jax: checks that
`benchmarks.jax_step` times a real training step, and prints one JSON line.

- `fit_difference`: two SGD-with-momentum steps of `jax_step.Cell` on a small BatchNorm network
  with an EL2 penalty, against `model.fit` on the same weights and batch (Keras' own step): the
  largest relative difference over every variable (weights, moving statistics, momenta).
- `rates`, `table`: `jax_step.measure` over two small models in both precisions, 2 rounds.
"""
import json

import keras
import numpy as np

from benchmarks import jax_step
from bnreg_tf.nn import PenalizedModel, layers


def small(size, classes, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(6, 3, use_bias=False, name="conv")(inputs)   # its bias: no gradient
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(x))
    embedding = layers.EmbeddingL2(0.5, name="embedding_l2")(
        keras.layers.GlobalAveragePooling2D()(x))
    logits = keras.layers.Dense(classes, name="classifier")(embedding)
    return PenalizedModel(inputs, {"logits": logits, "embedding": embedding})


def fit_difference():
    cell = jax_step.build_cell(small, "float32", 8, 6, 4)
    reference = small(8, 4)
    reference.set_weights(cell.model.get_weights())
    cell.run(2)
    cell.write_back()
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    reference.compile(optimizer, {"logits": keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)})
    x, y = np.asarray(cell.x), np.asarray(cell.y)
    reference.fit(x, {"logits": y}, batch_size=len(x), epochs=2, shuffle=False, verbose=0)
    ours = [*cell.model.weights, *cell.optimizer.variables[1:]]   # not the iteration count
    theirs = [*reference.weights, *optimizer.variables[1:]]
    moved = max(float(np.abs(keras.ops.convert_to_numpy(a) - b).max())
                for a, b in zip(cell.model.weights, small(8, 4).get_weights()))
    worst = 0.0
    for a, b in zip(ours, theirs):
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)))
    return worst, moved


if __name__ == "__main__":
    worst, moved = fit_difference()
    table_models = {"a": ("model a", small, "b"), "b": ("model b", small, None)}
    rates, seconds = jax_step.measure(["a", "b"], jax_step.PRECISIONS, 8, 4, 2, 2, num_classes=3,
                                      models=table_models, log=lambda s: None)
    print(json.dumps({"backend": keras.backend.backend(), "worst": worst, "moved": moved,
                      "rates": {f"{k[0]}/{k[1]}": v for k, v in rates.items()},
                      "table": jax_step.table(rates, seconds, ["a", "b"], jax_step.PRECISIONS,
                                              table_models)}))
