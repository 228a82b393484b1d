"""Fixup initializers: their standard deviation against the closed form of the reference rules."""
import numpy as np
import pytest

from bnreg_tf.nn import init

SHAPE = (3, 3, 32, 256)  # fan_out = 3 * 3 * 256 = 2304, 73,728 samples
FAN_OUT = 3 * 3 * 256


@pytest.mark.parametrize("blocks,m", [(12, 2), (16, 3), (1, 2), (50, 3)])
def test_fixup_branch_std(blocks, m):
    kernel = np.asarray(init.fixup_branch_initializer(blocks, m, seed=0)(SHAPE))
    expected = np.sqrt(2.0 / FAN_OUT) * blocks ** (-1.0 / (2 * m - 2))
    assert abs(kernel.std() / expected - 1) < 0.02
    assert abs(kernel.mean()) < 4 * expected / np.sqrt(kernel.size)
    assert np.abs(kernel).max() > 3 * expected  # untruncated normal


def test_basic_and_bottleneck_factors():
    """Basic blocks (m=2) scale by L^-1/2, bottlenecks (m=3) by L^-1/4 (docs/references.md §4.2)."""
    basic = init.fixup_branch_initializer(16, 2).get_config()["scale"]
    bottleneck = init.fixup_branch_initializer(16, 3).get_config()["scale"]
    np.testing.assert_allclose([basic, bottleneck], [2 * 16**-1.0, 2 * 16**-0.5])


def test_standardization_last_layer_std():
    kernel = np.asarray(init.standardization_last_layer_initializer(12, seed=1)(SHAPE))
    assert abs(kernel.std() / (np.sqrt(2.0 / FAN_OUT) / np.sqrt(12)) - 1) < 0.02


def test_zero_initializer_and_validation():
    assert not np.any(np.asarray(init.zero_initializer()((4, 5))))
    with pytest.raises(ValueError):
        init.fixup_branch_initializer(0, 2)
    with pytest.raises(ValueError):
        init.fixup_branch_initializer(4, 1)
