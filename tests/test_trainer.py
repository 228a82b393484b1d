"""The training step and the run loop, in process: loss vs NumPy, Fixup scalar LR, replicas, NaN stop."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf.run import callbacks as cb, trainer
from bnreg_tf.data import catalog
from bnreg_tf.data.digits import digits_arrays
from bnreg_tf.run.models import build_network
from bnreg_tf.run.presets import PRESETS
from bnreg_tf.run.training import Classifier
from bnreg_tf.run import inputs

DEFAULT = tf.distribute.get_strategy()  # the process strategy the binaries would pass

SPEC = catalog.DATASETS["digits"]


def _config(**changes):
    return PRESETS["digits"].replace(**{"model_dir": "/tmp/unused", **changes})


def _batch(size=32):
    images, labels = digits_arrays("train")
    prep = inputs.preprocessing_for(_config(), 8)
    return prep.normalize(images[:size]).numpy(), labels[:size]


def _classifier(config, optimizer):
    network = build_network(config, SPEC, 8)
    model = Classifier(network, 10, config.label_smoothing, config.weight_decay,
                       config.weight_decay_exclude, config.fixup_scalar_lr)
    model.compile(optimizer=optimizer, jit_compile=False)
    return model


def _numpy_loss(model, x, y, config):
    out = model.network(x, training=False)  # no BN and no dropout: same as training mode
    logits = out["logits"].numpy().astype(np.float64)
    embedding = out["embedding"].numpy().astype(np.float64)
    target = np.full((len(y), 10), config.label_smoothing / 10)
    target[np.arange(len(y)), y] += 1 - config.label_smoothing
    shifted = logits - logits.max(1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    cross_entropy = -np.mean(np.sum(target * log_softmax, axis=1))
    el2 = np.mean(np.sum(embedding**2, 1)) / embedding.shape[1]
    fl2 = np.mean(np.sum(logits**2, 1)) / 10
    decayed = [v.numpy().astype(np.float64) for v in model.decay_variables]
    wd = config.weight_decay * sum(0.5 * np.sum(v**2) for v in decayed)
    return cross_entropy, cross_entropy + config.embedding_l2 * el2 + \
        config.functional_l2 * fl2 + wd


def test_training_loss_is_cross_entropy_plus_penalties_plus_weight_decay():
    config = _config(norm="none", embedding_l2=0.3, functional_l2=0.2, weight_decay=1e-3,
                     label_smoothing=0.1, weight_decay_exclude="batchnorm_and_bias")
    model = _classifier(config, keras.optimizers.SGD(0.01))
    x, y = _batch()
    cross_entropy, want = _numpy_loss(model, x, y, config)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(want, rel=1e-5)
    assert logs["cross_entropy"] == pytest.approx(cross_entropy, rel=1e-5)
    assert want - cross_entropy > 0.01  # the penalties are not negligible here
    assert not any(v.path.endswith("bias") for v in model.decay_variables)


def test_weight_decay_exclusions():
    config = _config(weight_decay=1e-4, weight_decay_exclude="batchnorm")
    model = _classifier(config, keras.optimizers.SGD(0.01))
    bn = {id(v) for layer in model.network._flatten_layers()
          if isinstance(layer, keras.layers.BatchNormalization) for v in layer.trainable_variables}
    assert bn and not bn & {id(v) for v in model.decay_variables}
    assert any(v.path.endswith("bias") for v in model.decay_variables)
    everything = _classifier(_config(weight_decay=1e-4), keras.optimizers.SGD(0.01))
    assert len(everything.decay_variables) == len(everything.trainable_variables)


def test_fixup_scalars_move_at_a_tenth_of_the_learning_rate():
    x, y = _batch()
    deltas = []
    for factor in (1.0, 0.1):
        config = _config(norm="fixup", fixup_scalar_lr=factor, seed=3)
        model = _classifier(config, keras.optimizers.SGD(0.5))
        # Fixup's zero-initialised classifier gives the scalars no gradient at the first step
        # (so both runs are in the same state after it); compare the second step.
        model.train_on_batch(x, y)
        before = [v.numpy().copy() for v in model.trainable_variables]
        model.train_on_batch(x, y)
        deltas.append([v.numpy() - b for v, b in zip(model.trainable_variables, before)])
        scalars = model._scalar_ids
        is_scalar = [id(v) in scalars for v in model.trainable_variables]
    assert sum(is_scalar) > 10
    moved = 0
    for d1, d01, scalar in zip(*deltas, is_scalar):
        if scalar:
            np.testing.assert_allclose(d01, 0.1 * d1, rtol=1e-4, atol=1e-9)
            moved += bool(np.any(d1 != 0))
        else:
            np.testing.assert_allclose(d01, d1, rtol=1e-4, atol=1e-9)
    assert moved > 0


def test_mirrored_training_step_matches_one_device(mirrored):
    config = _config(norm="fixup", embedding_l2=0.2, functional_l2=0.1, weight_decay=1e-3,
                     label_smoothing=0.1)
    x, y = _batch(32)
    single = _classifier(config, keras.optimizers.SGD(0.1, momentum=0.9))
    with mirrored.scope():
        multi = _classifier(config, keras.optimizers.SGD(0.1, momentum=0.9))
    for _ in range(2):
        a = single.train_on_batch(x, y, return_dict=True)
        b = multi.train_on_batch(x, y, return_dict=True)
        for key in ("loss", "cross_entropy", "embedding_l2", "functional_l2", "accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    for v1, v2 in zip(single.trainable_variables, multi.trainable_variables):
        np.testing.assert_allclose(v1.numpy(), v2.numpy(), rtol=1e-4, atol=1e-6)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = _config(model_dir=str(tmp_path / "run"), epochs=3, steps_per_epoch=4,
                     checkpoint_steps=2, export=False)
    original = inputs.train_dataset

    def poisoned(*args, **kwargs):  # images become NaN from the 7th batch on
        dataset = original(*args, **kwargs).enumerate()
        return dataset.map(lambda i, batch: (
            batch[0] * tf.where(i >= 6, float("nan"), 1.0), batch[1]))

    monkeypatch.setattr(inputs, "train_dataset", poisoned)
    with pytest.raises(cb.NonFiniteLoss) as error:
        trainer.train(config, DEFAULT, log=lambda *_: None)
    message = str(error.value)
    assert "non-finite at step 7" in message and "ckpt-6" in message
    assert f"--init_from={config.model_dir} --model_dir=NEW_DIR" in message
    manager_dir = tmp_path / "run" / "checkpoints"
    latest = tf.train.latest_checkpoint(str(manager_dir))
    assert latest.endswith("ckpt-6")
    network = build_network(config, SPEC, 8)
    tf.train.Checkpoint(network=network).restore(latest).expect_partial()
    assert all(np.all(np.isfinite(v.numpy())) for v in network.weights)
    assert not os.path.exists(tmp_path / "run" / "results.json")


def test_finished_run_is_not_trained_again(tmp_path):
    config = _config(model_dir=str(tmp_path / "run"), epochs=1, steps_per_epoch=3, export=False)
    first = trainer.train(config, DEFAULT, log=lambda *_: None)
    again = trainer.train(config, DEFAULT, log=lambda *_: None)
    assert first["steps"] == again["steps"] == 3
    assert again["eval_accuracy"] == pytest.approx(first["eval_accuracy"])
    with open(tmp_path / "run" / "log.csv") as f:
        assert len(f.read().strip().splitlines()) == 2  # header + one epoch, not repeated
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["steps_per_epoch"] == 3


def test_export_holds_the_averaged_weights_when_the_recipe_averages(tmp_path):
    # A fast average (decay 0.5) so that averaged and raw weights differ clearly.
    config = _config(model_dir=str(tmp_path / "run"), epochs=1, steps_per_epoch=4,
                     optimizer="rmsprop_reference", learning_rate=0.01, ema_decay=0.5)
    results = trainer.train(config, DEFAULT, log=lambda *_: None)
    loaded = tf.saved_model.load(results["export"])
    images, _ = digits_arrays("test")
    exported = loaded.serve(tf.constant(images[:16]))["logits"].numpy()
    run = trainer.build_run(config, DEFAULT)  # restores the last checkpoint + EMA
    inputs = run.preprocessing.evaluate_batch(tf.constant(images[:16]))
    raw = run.network(inputs, training=False)["logits"].numpy()
    with run.averaged():
        averaged = run.network(inputs, training=False)["logits"].numpy()
    np.testing.assert_allclose(exported, averaged, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(raw - averaged)) > 1e-3


def test_export_only_rebuilds_the_export_from_the_checkpoint(tmp_path):
    config = _config(model_dir=str(tmp_path / "run"), epochs=1, steps_per_epoch=2, export=False)
    trainer.train(config, DEFAULT, log=lambda *_: None)
    assert not os.path.exists(tmp_path / "run" / "export")
    path = trainer.export_from_checkpoint(config, DEFAULT, log=lambda *_: None)
    loaded = tf.saved_model.load(path)
    images, _ = digits_arrays("test")
    run = trainer.build_run(config, DEFAULT)
    want = run.network(run.preprocessing.evaluate_batch(tf.constant(images[:8])),
                       training=False)["logits"].numpy()
    np.testing.assert_allclose(loaded.serve(tf.constant(images[:8]))["logits"].numpy(), want,
                               rtol=1e-5, atol=1e-6)
