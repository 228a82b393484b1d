"""EfficientNet per the TPU reference, for the paper's EfficientNet-B8 experiment (section 4.3)."""
from efficientnet.model import build_model
from efficientnet.params import B0_ROWS, SCALING, drop_rates, round_filters, round_repeats

__all__ = ["B0_ROWS", "SCALING", "build_model", "drop_rates", "round_filters", "round_repeats"]
