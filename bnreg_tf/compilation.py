"""Per-device choice of XLA compilation (`jit_compile`), measured on this project's machines.

- CPU: plain graph mode. XLA made training steps 4-8x slower (EfficientNet-B0, ResNet-50 at
  64 px, 2-core AVX-512 CPU), and Keras's `"auto"` also turns it off there.
- MirroredStrategy with more than one replica: off. XLA there failed (a variable placed on
  another device).
- One GPU or a TPU: on.
"""
import tensorflow as tf


def choose_jit_compile(strategy=None):
    """Returns the `jit_compile` value bnreg uses for `strategy` (default: the current one)."""
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    if strategy.num_replicas_in_sync > 1:
        return False
    return bool(tf.config.list_logical_devices("GPU"))
