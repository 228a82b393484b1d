"""EfficientNet per the TPU reference, for the paper's EfficientNet-B8 experiment (section 4.3).

`build_model` (B0..B8, L2), `randaugment` and `preprocess` (the reference input pipeline), and
`optim` (TF1 RMSProp with the reference's weight average, the warm-up exponential schedule).
"""
from efficientnet.model import build_model
from efficientnet.optim import ReferenceRMSprop, WarmupExponentialDecay
from efficientnet.params import B0_ROWS, SCALING, drop_rates, round_filters, round_repeats
from efficientnet.input_pipeline import preprocess
from efficientnet.augment_ops import randaugment

__all__ = ["B0_ROWS", "SCALING", "ReferenceRMSprop", "WarmupExponentialDecay", "build_model",
           "drop_rates", "preprocess", "randaugment", "round_filters", "round_repeats"]
