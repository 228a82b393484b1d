"""EfficientNet per the TPU reference, for the paper's EfficientNet-B8 experiment (section 4.3).

The model code (`build_model` for B0..B8 and L2, the scaling tables of `params`) imports only
bnreg's building blocks and runs on every Keras backend. The reference's TensorFlow recipe sits
in modules the model code does not import: `efficientnet.input_pipeline` (crop, resize,
`preprocess`), `efficientnet.augment_ops` (`randaugment`) and `efficientnet.optim` (TF1
RMSProp with the reference's weight average, the warm-up exponential schedule).
"""
from efficientnet.model import build_model
from efficientnet.params import B0_ROWS, SCALING, drop_rates, round_filters, round_repeats

__all__ = ["B0_ROWS", "SCALING", "build_model", "drop_rates", "round_filters", "round_repeats"]
