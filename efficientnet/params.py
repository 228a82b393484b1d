"""EfficientNet architecture tables (Tan & Le 2019; the TPU reference, docs/references.md §5)."""
import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class BlockRow:
    """One stage of B0: `repeats` MBConv blocks; only the first has `stride` and `in_filters`."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_filters: int
    out_filters: int
    se_ratio: float = 0.25


B0_ROWS = (
    BlockRow(1, 3, 1, 1, 32, 16),
    BlockRow(2, 3, 2, 6, 16, 24),
    BlockRow(2, 5, 2, 6, 24, 40),
    BlockRow(3, 3, 2, 6, 40, 80),
    BlockRow(3, 5, 1, 6, 80, 112),
    BlockRow(4, 5, 2, 6, 112, 192),
    BlockRow(1, 3, 1, 6, 192, 320),
)


@dataclasses.dataclass(frozen=True)
class Scaling:
    width: float
    depth: float
    resolution: int
    dropout: float


SCALING = {
    "b0": Scaling(1.0, 1.0, 224, 0.2),
    "b1": Scaling(1.0, 1.1, 240, 0.2),
    "b2": Scaling(1.1, 1.2, 260, 0.3),
    "b3": Scaling(1.2, 1.4, 300, 0.3),
    "b4": Scaling(1.4, 1.8, 380, 0.4),
    "b5": Scaling(1.6, 2.2, 456, 0.4),
    "b6": Scaling(1.8, 2.6, 528, 0.5),
    "b7": Scaling(2.0, 3.1, 600, 0.5),
    "b8": Scaling(2.2, 3.6, 672, 0.5),
    "l2": Scaling(4.3, 5.3, 800, 0.5),
}

STEM_FILTERS = 32
HEAD_FILTERS = 1280


def round_filters(filters, width, divisor=8):
    """Width scaling: nearest multiple of 8 (at least 8), never more than 10% below `f * w`."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats, depth):
    """Depth scaling: `ceil(depth * repeats)`."""
    return int(math.ceil(depth * repeats))


def scaled_rows(scaling):
    """B0's rows with filters and repeats scaled by `scaling`."""
    return tuple(
        dataclasses.replace(
            row,
            repeats=round_repeats(row.repeats, scaling.depth),
            in_filters=round_filters(row.in_filters, scaling.width),
            out_filters=round_filters(row.out_filters, scaling.width),
        )
        for row in B0_ROWS
    )


def drop_rates(num_blocks, survival_prob):
    """Drop-connect rate of each block: linear in the global block index, `(1 - p) * i / n`."""
    return [(1.0 - survival_prob) * i / num_blocks for i in range(num_blocks)]
