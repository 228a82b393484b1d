"""Test set-up: two logical CPU devices (for MirroredStrategy) before TensorFlow initialises
(on the TensorFlow backend).

TensorFlow allows one MirroredStrategy per process in practice: a second one reuses collective
instance keys and collides with the first ("Shape mismatch in the collective instance").
Tests share the session-scoped `mirrored` fixture instead of making their own.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Under another Keras backend (`.ci/run`'s KERAS_BACKEND=jax run of tests/any_backend, issue 24)
# TensorFlow is neither imported nor configured. On JAX, XLA compiles every new shape (the
# initialisers' random draws included) and its LLVM back end at level 0 compiles the tests' tiny
# networks 2-3x faster on CPU (BUILD_NOTES, "Issue 24"); XLA's own passes run as usual.
if os.environ.get("KERAS_BACKEND") == "jax":
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

    @pytest.fixture(scope="session")
    def mirrored():
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
