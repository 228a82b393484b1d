"""WideResNet and ResNet v1 in every BatchNorm ablation mode of the paper (section 2, Table 1).

`build_model("wrn28_10" | "resnet50" | ..., norm=...)` returns a Keras model with the output
contract `{"logits", "embedding"}`.
"""
from bnreg_tf.param_groups import param_groups
from resnet.builder import build_model
from resnet.norm import NORM_MODES
from resnet.resnet_v1 import RESNETS, ResNetSpec, build_resnet_v1
from resnet.wide_resnet import WideResNetSpec, build_wide_resnet

__all__ = [
    "NORM_MODES",
    "RESNETS",
    "ResNetSpec",
    "WideResNetSpec",
    "build_model",
    "build_resnet_v1",
    "build_wide_resnet",
    "param_groups",
]
