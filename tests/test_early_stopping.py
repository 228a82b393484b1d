"""Early stopping: the exported and scored model is the best holdout epoch's checkpoint."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf.run import early_stopping, trainer
from bnreg_tf.run.config import ConfigError
from bnreg_tf.data.digits import digits_arrays
from bnreg_tf.run.presets import PRESETS

DEFAULT = tf.distribute.get_strategy()
STEPS = 3


def test_early_stopping_exports_the_best_holdout_epoch(tmp_path, monkeypatch):
    # The holdout accuracy is made to peak at epoch 2 of 3 (scripted values seen by the callback).
    scripted = {0: 0.5, 1: 0.9, 2: 0.6}
    original = early_stopping.BestCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, {**(logs or {}), "val_accuracy": scripted[epoch]})

    monkeypatch.setattr(early_stopping.BestCheckpoint, "on_epoch_end", on_epoch_end)
    config = PRESETS["digits"].replace(model_dir=str(tmp_path / "run"), epochs=3,
                                       steps_per_epoch=STEPS, batch_size=32, holdout=True,
                                       early_stopping=True, learning_rate=0.2, norm_probe_size=16)
    results = trainer.train(config, DEFAULT, log=lambda *_: None, verbose=0)
    assert results["best_epoch"] == 2 and results["best_step"] == 2 * STEPS
    assert results["best_val_accuracy"] == 0.9 and results["steps"] == 3 * STEPS
    with open(tmp_path / "run" / "results.json") as f:
        assert json.load(f)["best_epoch"] == 2

    images, _ = digits_arrays("test")
    loaded = tf.saved_model.load(results["export"])
    exported = loaded.serve(tf.constant(images[:16]))["logits"]
    # Reference: a fresh model restored from the numbered checkpoint of epoch 2 (kept in
    # checkpoints/, max 3), and the last epoch's weights, which must differ.
    run = trainer.build_run(config, DEFAULT, log=lambda *_: None)   # restores the latest (epoch 3)
    inputs = run.preprocessing.evaluate_batch(tf.constant(images[:16]))
    last = run.network(inputs, training=False)["logits"].numpy()
    epoch_2 = os.path.join(config.model_dir, "checkpoints", f"ckpt-{2 * STEPS}")
    tf.train.Checkpoint(network=run.network).restore(epoch_2).expect_partial()
    best = run.network(inputs, training=False)["logits"].numpy()
    np.testing.assert_allclose(exported.numpy(), best, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(last - best)) > 1e-3
    # Exporting again from the model dir (bnreg-train's export-only path) exports the best too.
    again = tf.saved_model.load(trainer.export_from_checkpoint(config, DEFAULT, log=lambda *_: None))
    np.testing.assert_allclose(again.serve(tf.constant(images[:16]))["logits"].numpy(), best,
                               rtol=1e-5, atol=1e-5)


def test_early_stopping_needs_the_holdout():
    with pytest.raises(ConfigError, match="--early_stopping: expected --holdout too"):
        PRESETS["digits"].replace(model_dir="/tmp/unused", early_stopping=True, holdout=False)
    assert PRESETS["efficientnet_b8_imagenet"].early_stopping


class Killed(Exception):
    pass


def test_a_kill_between_the_best_checkpoint_and_best_json_repeats_that_epoch(tmp_path,
                                                                            monkeypatch):
    scripted = {0: 0.5, 1: 0.9, 2: 0.6}
    original = early_stopping.BestCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, {**(logs or {}), "val_accuracy": scripted[epoch]})

    monkeypatch.setattr(early_stopping.BestCheckpoint, "on_epoch_end", on_epoch_end)
    write = early_stopping.write_atomically

    def dies_at_epoch_2(path, text):
        if json.loads(text)["epoch"] == 2:
            raise Killed   # after best/ckpt-6 is written, before best.json and ckpt-6 of the run
        write(path, text)

    monkeypatch.setattr(early_stopping, "write_atomically", dies_at_epoch_2)
    config = PRESETS["digits"].replace(model_dir=str(tmp_path / "run"), epochs=3,
                                       steps_per_epoch=STEPS, batch_size=32, holdout=True,
                                       early_stopping=True, learning_rate=0.2, norm_probe_size=16)
    with pytest.raises(Killed):
        trainer.train(config, DEFAULT, log=lambda *_: None, verbose=0)
    assert early_stopping.read_best(config.model_dir)["epoch"] == 1
    assert tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints")).endswith(
        f"ckpt-{STEPS}")
    monkeypatch.setattr(early_stopping, "write_atomically", write)
    results = trainer.train(config, DEFAULT, log=lambda *_: None, verbose=0)   # resumes at epoch 2
    assert results["best_epoch"] == 2 and results["best_step"] == 2 * STEPS
    images, _ = digits_arrays("test")
    loaded = tf.saved_model.load(results["export"])
    run = trainer.build_run(config, DEFAULT, log=lambda *_: None)
    epoch_2 = os.path.join(config.model_dir, "checkpoints", f"ckpt-{2 * STEPS}")
    tf.train.Checkpoint(network=run.network).restore(epoch_2).expect_partial()
    want = run.network(run.preprocessing.evaluate_batch(tf.constant(images[:16])),
                       training=False)["logits"].numpy()
    np.testing.assert_allclose(loaded.serve(tf.constant(images[:16]))["logits"].numpy(), want,
                               rtol=1e-5, atol=1e-5)
