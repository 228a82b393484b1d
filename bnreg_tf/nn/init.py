"""Initializers for networks without BatchNorm (Fixup, Zhang et al. 2019; paper section 2.2).

All are `keras.initializers.VarianceScaling` instances, so they serialize with any model.
"""
import keras


class Seeds:
    """Distinct initializer seeds from one model seed: Keras initializers given the same int seed
    draw the same values, so each layer needs its own. `None` stays unseeded."""

    def __init__(self, seed):
        self.seed, self.count = seed, 0

    def __call__(self):
        self.count += 1
        return None if self.seed is None else self.seed * 100003 + self.count


def he_normal_fan_out(seed=None):
    """He-normal with fan_out (`std = sqrt(2 / fan_out)`, untruncated): the Fixup reference's base."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=seed
    )


def fixup_branch_initializer(num_blocks, layers_per_branch, seed=None):
    """Fixup rule 2 for every branch layer but the last: He-normal(fan_out) * L^(-1/(2m-2)).

    `num_blocks` is L, the number of residual blocks; `layers_per_branch` is m (2 for a basic
    block, where the factor is L^-1/2; 3 for a bottleneck, L^-1/4). Scaling the std by `f`
    scales the variance by `f^2`, hence `scale = 2 * L^(-1/(m-1))`.
    """
    if num_blocks < 1 or layers_per_branch < 2:
        raise ValueError(
            f"need num_blocks >= 1 and layers_per_branch >= 2, got {num_blocks}, {layers_per_branch}"
        )
    scale = 2.0 * float(num_blocks) ** (-1.0 / (layers_per_branch - 1))
    return keras.initializers.VarianceScaling(
        scale=scale, mode="fan_out", distribution="untruncated_normal", seed=seed
    )


def zero_initializer():
    """Fixup rule 1: the last layer of each residual branch and the classifier start at zero."""
    return keras.initializers.Zeros()


def standardization_last_layer_initializer(num_blocks, seed=None):
    """The paper's init for the KL-standardization runs (section 4.1, Table 2).

    Residual branches are NOT zero: the last layer of each branch is He-normal(fan_out) with its
    std scaled by `1/sqrt(num_blocks)`, so the sum of L branches keeps O(1) variance at init.
    """
    if num_blocks < 1:
        raise ValueError(f"need num_blocks >= 1, got {num_blocks}")
    return keras.initializers.VarianceScaling(
        scale=2.0 / num_blocks, mode="fan_out", distribution="untruncated_normal", seed=seed
    )
