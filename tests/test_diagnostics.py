"""NormMonitor's logged values against NumPy float64 on the probe batch."""
import csv

import keras
import numpy as np

from bnreg_tf import NormMonitor
from tests.test_regularize import contract_model


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
