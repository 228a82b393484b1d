"""The penalty table is the one place a penalty is declared: a toy penalty added through a row
alone (its function and layer defined here) reaches the config and its flag, the model builders,
`regularize`, the logged metrics (History, log.csv, the progress summary) and the study's
variants and columns. It runs in a fresh interpreter that adds the row before the config is
imported, as a new row in `bnreg_tf/nn/penalty_table.py` would be."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from bnreg_tf.nn import PENALTIES, layers, penalties
from bnreg_tf.nn.penalty_table import SITES

ROOT = pathlib.Path(__file__).resolve().parent.parent

PLUGIN = '''
import keras
from keras import ops
from bnreg_tf.nn import layers, penalty_table


def toy_l1(x):
    return ops.mean(ops.abs(ops.cast(x, "float32")))


@keras.saving.register_keras_serializable(package="toy")
class ToyL1(layers.PenaltyLayer):
    def penalty(self, inputs):
        return toy_l1(inputs)


penalty_table.PENALTIES["toy_l1"] = penalty_table.Penalty(
    "toy_l1", "TL1", toy_l1, ToyL1, "embedding", "Toy L1 coefficient [loss weight]")
'''

DRIVER = '''
import csv, json, os
import toy_plugin   # the row, before anything reads the table
import keras, numpy as np
from absl import flags
from bnreg_tf import regularize
from bnreg_tf.run import config, flags as run_flags, models, presets, progress, strategies, trainer
from bnreg_tf.study import grid, tables, variants

out = {}
base = presets.digits()
out["config"] = [base.toy_l1, base.replace(toy_l1=0.5).penalties["toy_l1"]]
try:
    base.replace(toy_l1=-1.0)
except config.ConfigError as error:
    out["refused"] = str(error)
values = flags.FlagValues()
run_flags.define_run_flags(values)
values(["bnreg-train", "--toy_l1=0.3", "--model_dir=x"])
out["flag"] = run_flags.config_from_flags(values).toy_l1

built = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 1), toy_l1=0.5)
out["built"] = type(built.get_layer("toy_l1")).__name__

inputs = keras.Input((8, 8, 1))
x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
x = keras.layers.GlobalAveragePooling2D()(x)
plain = keras.Model(inputs, keras.layers.Dense(3)(x))
model = regularize(plain, toy_l1=0.5)
model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
images = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
embedding = keras.Model(plain.inputs, plain.layers[-2].output)(images)
history = model.fit(images, np.zeros(8), batch_size=8, epochs=1, verbose=0).history
out["logged"] = [history["toy_l1"][0], float(np.mean(np.abs(np.asarray(embedding, "float64"))))]

config_ = base.replace(model_dir=os.path.abspath("run"), toy_l1=0.5, epochs=1,
                       steps_per_epoch=2, norm_probe_size=8)
lines = []
trainer.train(config_, strategies.make_strategy("default"), log=lines.append, verbose=0)
with open(os.path.join("run", "log.csv")) as f:
    out["log_columns"] = next(csv.reader(f))
out["summary"] = [line for line in "\\n".join(lines).splitlines() if "penalties:" in line]

study = grid.make_study("default", {"toy_l1": 0.5}, variants=["fixup_tl1", "tl1"], seeds=["0"],
                        output_dir="study")
out["runs"] = [(s.name, s.config.norm, s.config.toy_l1) for s in study.runs]
record = dict(run="fixup_tl1_c0.5_s0", variant="fixup_tl1", coefficient=0.5, learning_rate=0.05,
              seed=0, status="ok", test_accuracy=0.5)
out["table"] = tables.main_table([record])
out["table_4"] = variants.TABLE_4_ROWS.get("tl1")
print(json.dumps(out))
'''


def test_a_toy_penalty_added_through_the_table_reaches_every_consumer(tmp_path):
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BNREG_QUIET": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", DRIVER], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["config"] == [0.0, 0.5]
    assert out["refused"].startswith("--toy_l1: expected a finite number >= 0")
    assert out["flag"] == 0.3
    assert out["built"] == "ToyL1"
    logged, want = out["logged"]
    assert abs(logged - want) <= 1e-5 * want and want > 0
    assert "toy_l1" in out["log_columns"]
    assert out["summary"] and "toy_l1=0.5" in out["summary"][0]
    assert out["runs"] == [["fixup_tl1_c0.5_s0", "fixup", 0.5], ["tl1_c0.5_s0", "batchnorm", 0.5]]
    assert "| fixup_tl1 | 0.5 |" in out["table"]
    assert out["table_4"] == "TL1"


def test_every_row_is_a_function_and_its_layer():
    """Each row's layer adds `coefficient * function(inputs)` in training and nothing at
    inference (checked against the row's function in NumPy float64 terms)."""
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    for name, row in PENALTIES.items():
        assert row.site in SITES and issubclass(row.layer, layers.PenaltyLayer)
        layer = row.layer(0.25, name=f"{name}_probe")
        layer(x, training=True)
        assert len(layer.losses) == 1
        np.testing.assert_allclose(float(layer.losses[0]), 0.25 * float(row.function(x)),
                                   rtol=1e-6)
    assert PENALTIES["embedding_l2"].function is penalties.embedding_l2
    assert np.isclose(float(PENALTIES["embedding_l2"].function(x)),
                      np.mean(np.sum(x.astype(np.float64) ** 2, axis=1)) / 6, rtol=1e-6)
