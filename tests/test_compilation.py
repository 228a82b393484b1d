"""The per-device jit_compile choice recorded in BUILD_NOTES.md."""
import tensorflow as tf

from bnreg_tf.run.strategies import choose_jit_compile


def test_cpu_uses_graph_mode_not_xla(mirrored):
    assert not tf.config.list_logical_devices("GPU")  # CI and dev machines have no GPU
    assert choose_jit_compile() is False
    assert choose_jit_compile(mirrored) is False  # 2 replicas: XLA failed under Mirrored
