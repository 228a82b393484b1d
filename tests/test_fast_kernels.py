"""Issue 17's other fused kernels against what they replace: the pointwise convolution as a
matmul (`bnreg_tf.nn.conv.Conv2D` vs `keras.layers.Conv2D`) and SGD with momentum as one kernel
(`bnreg_tf.run.optimizers.SGD` vs `keras.optimizers.SGD` and NumPy float64)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnet
from bnreg_tf.run import models
from bnreg_tf.nn import conv
from bnreg_tf.run import optimizers
from bnreg_tf.run.config import RunConfig


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=1),                                   # the matmul path
    dict(kernel_size=1, use_bias=True, activation="relu"),
    dict(kernel_size=1, strides=2),                        # Keras' path from here on
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=1, dilation_rate=2),
    dict(kernel_size=1, groups=2)])
def test_conv_matches_keras_outputs_and_gradients(rng, kwargs):
    x = tf.constant(rng.normal(size=(3, 5, 7, 4)), tf.float32)
    ours, theirs = conv.Conv2D(6, **kwargs), keras.layers.Conv2D(6, **kwargs)
    theirs.build(x.shape)
    ours.build(x.shape)
    for weight in theirs.weights:
        weight.assign(rng.normal(size=weight.shape))
    ours.set_weights(theirs.get_weights())
    assert [w.path.split("/")[-1] for w in ours.weights] == ["kernel", "bias"][:len(ours.weights)]
    upstream = rng.normal(size=theirs.compute_output_shape(x.shape))
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * upstream)
        results.append([y, *tape.gradient(loss, [x, *layer.trainable_weights])])
    for got, want in zip(*results):
        assert got.shape == want.shape
        assert rel(got, want) < 1e-6
    # The pointwise case against NumPy float64: x @ W (+ b).
    if kwargs == dict(kernel_size=1):
        want = np.einsum("bhwc,cf->bhwf", x.numpy().astype(np.float64),
                         ours.kernel.numpy()[0, 0].astype(np.float64)) + ours.bias.numpy()
        assert rel(results[0][0], want) < 1e-6


def test_conv_unknown_batch_and_mixed_precision(rng):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, conv.Conv2D(5, 1, dtype="mixed_bfloat16")(inputs))
    x = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, 4, 6, 5) and y.dtype == tf.bfloat16
    kernel = model.layers[1].kernel.numpy()[0, 0]
    assert rel(tf.cast(y, tf.float32), x @ kernel) < 1e-2


def sgd_run(optimizer, init, grads):
    variable = tf.Variable(init)
    for grad in grads:
        optimizer.apply_gradients([(tf.constant(grad), variable)])
    return variable.numpy(), optimizer.momentums[0].numpy()


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_keras_and_numpy(rng, nesterov):
    init = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(5)]
    lr = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    fused = sgd_run(optimizers.SGD(lr, momentum=0.9, nesterov=nesterov), init, grads)
    plain = sgd_run(keras.optimizers.SGD(lr, momentum=0.9, nesterov=nesterov), init, grads)
    var, m = init.astype(np.float64), np.zeros((3, 4))
    for step, grad in enumerate(grads):
        rate = 0.1 * 0.5**step
        m = 0.9 * m - rate * grad
        var = var + (0.9 * m - rate * grad if nesterov else m)
    for got in (fused, plain):
        np.testing.assert_allclose(got[0], var, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-6, atol=1e-7)


def test_sgd_runs_the_fused_kernel():
    variable = tf.Variable(tf.ones((2, 2)))
    optimizer = optimizers.SGD(0.1, momentum=0.9)
    step = tf.function(lambda g: optimizer.apply_gradients([(g, variable)]))
    graph = step.get_concrete_function(tf.TensorSpec((2, 2))).graph
    ops = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():
        ops |= {node.op for node in function.definition.node_def}
    assert "ResourceApplyKerasMomentum" in ops


def test_sgd_under_mirrored_strategy_matches_one_device(mirrored, rng):
    init = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3)]
    want = sgd_run(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), init, grads)
    with mirrored.scope():
        variable = tf.Variable(init)
        optimizer = optimizers.SGD(0.1, momentum=0.9, nesterov=True)
        optimizer.build([variable])

    @tf.function
    def step(grad):
        def replica_step():  # each replica's gradient is half: the sum is the step's gradient
            optimizer.apply_gradients([(grad / 2, variable)])
        mirrored.run(replica_step)

    for grad in grads:
        step(tf.constant(grad))
    for values in (variable, optimizer.momentums[0].value):
        components = mirrored.experimental_local_results(values)
        assert len(components) == 2
        for component in components:
            np.testing.assert_allclose(component, want[0] if values is variable else want[1],
                                       rtol=1e-5, atol=1e-6)


def test_trainer_optimizer_and_keras_file_round_trip(tmp_path):
    config = RunConfig(momentum=0.9, nesterov=True, steps_per_epoch=10)
    optimizer = optimizers.make_optimizer(config, steps_per_epoch=10)
    assert type(optimizer) is optimizers.SGD
    model = models.build("wrn10_1", num_classes=3, input_shape=(8, 8, 3))
    model.compile(optimizer, {"logits": keras.losses.SparseCategoricalCrossentropy(True)})
    x, y = np.ones((4, 8, 8, 3), np.float32), np.arange(4) % 3
    model.train_on_batch(x, {"logits": y})
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is optimizers.SGD
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.nesterov and loaded.optimizer.momentum == 0.9
    assert any(type(layer) is conv.Conv2D for layer in loaded.layers)


@pytest.mark.parametrize("family", ["resnet", "efficientnet"])
def test_checkpoints_of_keras_conv_and_sgd_restore(tmp_path, rng, monkeypatch, family):
    """Models and optimizer state saved before issue 17's kernels restore into the new ones."""
    build = {"resnet": lambda: models.build("resnet18", num_classes=3, input_shape=(16, 16, 3)),
             "efficientnet": lambda: efficientnet.build_model("b0", num_classes=3,
                                                              input_shape=(32, 32, 3))}[family]
    with monkeypatch.context() as patch:
        patch.setattr(conv, "Conv2D", keras.layers.Conv2D)
        patch.setattr(optimizers, "SGD", keras.optimizers.SGD)
        old = build()
        old_optimizer = keras.optimizers.SGD(1e-3, momentum=0.9)
    assert not any(type(layer) is conv.Conv2D for layer in old.layers)
    old_optimizer.build(old.trainable_weights)
    for weight in old.weights + old_optimizer.variables:
        weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(weight.dtype) * 0.1)
    path = tf.train.Checkpoint(network=old, optimizer=old_optimizer).write(str(tmp_path / "c"))
    new, new_optimizer = build(), optimizers.SGD(1e-3, momentum=0.9)
    assert any(type(layer) is conv.Conv2D for layer in new.layers)
    new_optimizer.build(new.trainable_weights)
    tf.train.Checkpoint(network=new, optimizer=new_optimizer).read(path) \
        .assert_existing_objects_matched()
    for a, b in zip(new.weights + new_optimizer.variables, old.weights + old_optimizer.variables):
        np.testing.assert_array_equal(a, b)
    x = rng.normal(size=(2, *old.input_shape[1:])).astype(np.float32)
    want = old(x, training=False)["logits"]
    assert np.all(np.isfinite(want))
    assert rel(new(x, training=False)["logits"], want) < 1e-5
