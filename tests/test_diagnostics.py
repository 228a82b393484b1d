"""NormMonitor's logged values against NumPy float64 on the probe batch."""
import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf import NormMonitor


def contract_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    embedding = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(5, name="classifier")(embedding)
    return keras.Model(inputs, {"logits": logits, "embedding": embedding})


def np_norms(model, probe):
    out = model(probe, training=False)
    e = out["embedding"].numpy().astype(np.float64)
    z = out["logits"].numpy().astype(np.float64)
    w = model.get_layer("classifier").kernel.numpy().astype(np.float64)
    return {
        "probe_embedding_norm_sq": np.mean(np.sum(e**2, 1)),
        "probe_output_norm_sq": np.mean(np.sum(z**2, 1)),
        "probe_embedding_l2": np.mean(np.sum(e**2, 1)) / e.shape[1],
        "probe_functional_l2": np.mean(np.sum(z**2, 1)) / z.shape[1],
        "probe_dropout_penalty": np.sum(np.sum(w**2, 1) * np.mean(e**2, 0)),
    }


def test_norm_monitor_logs_match_numpy(rng, tmp_path):
    model = contract_model()
    model.compile("sgd", loss={"logits": keras.losses.SparseCategoricalCrossentropy(True)})
    x = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
    y = {"logits": rng.integers(0, 5, 32)}
    probe = x[:10]
    monitor = NormMonitor((probe, None))
    at_init = np_norms(model, probe)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[
        monitor, keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))])
    after = np_norms(model, probe)
    for key, value in at_init.items():
        np.testing.assert_allclose(monitor.initial[key], value, rtol=1e-5)
    for key, value in after.items():
        np.testing.assert_allclose(history.history[key][-1], value, rtol=1e-5)
        assert len(history.history[key]) == 2
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    np.testing.assert_allclose(float(rows[-1]["probe_output_norm_sq"]), after["probe_output_norm_sq"],
                               rtol=1e-5)
    assert after["probe_output_norm_sq"] != at_init["probe_output_norm_sq"]


def test_norm_monitor_reads_a_tf_data_probe_once(rng):
    images = rng.normal(size=(10, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 5, 10)
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    model = contract_model()
    from_array, from_dataset = NormMonitor(images), NormMonitor(batches)
    np.testing.assert_array_equal(from_dataset.probe, images)
    for monitor in (from_array, from_dataset):
        monitor.set_model(model)
    assert from_dataset.measure() == from_array.measure()
    capped = NormMonitor(batches.map(lambda x, y: x).repeat(), max_examples=6)
    np.testing.assert_array_equal(capped.probe, images[:6])
    with pytest.raises(ValueError, match="infinite; pass max_examples"):
        NormMonitor(batches.repeat())
