"""make_strategy and the batch-split check, in process (multi-device runs: test_distributed.py)."""
import pytest
import tensorflow as tf

from bnreg_tf.run.strategies import make_strategy
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.strategies import check_batch_split, is_chief


def test_default_and_one_device_strategies():
    default = make_strategy("default")
    assert default.num_replicas_in_sync == 1 and is_chief(default)
    one = make_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and is_chief(one)


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        make_strategy("multi_worker")


def test_unknown_strategy_and_uneven_batches_are_rejected(mirrored):
    with pytest.raises(ConfigError, match="--strategy: expected one of"):
        make_strategy("horovod")
    assert check_batch_split(mirrored, 64) == 32
    with pytest.raises(ConfigError, match="--batch_size=63 does not split evenly over 2"):
        check_batch_split(mirrored, 63)
