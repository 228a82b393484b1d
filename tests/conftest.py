"""Test set-up: two logical CPU devices (for MirroredStrategy) before TensorFlow initialises.

TensorFlow allows one MirroredStrategy per process in practice: a second one reuses collective
instance keys and collides with the first ("Shape mismatch in the collective instance").
Tests share the session-scoped `mirrored` fixture instead of making their own.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

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
