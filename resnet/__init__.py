"""WideResNet and ResNet v1 in every BatchNorm ablation mode of the paper (section 2, Table 1)
and the normalizer-free modes after it (`resnet.norm.MODES`).

`build_wide_resnet(WideResNetSpec(28, 10), num_classes=10, norm="fixup")` and
`build_resnet_v1(RESNETS[50], num_classes=1000, norm="single_bn")` return Keras models with the
output contract `{"logits", "embedding"}`; `wide_resnet(28, 10, ...)` and `resnet50(...)` are
the same with the architecture named. The binaries pick a model by its name through
`bnreg_tf.run.models.MODELS`.
"""
import functools

from bnreg_tf.nn.revisions import LATEST as LATEST_REVISION
from resnet.norm import MODES, NORM_MODES, NormMode, NormPolicy
from resnet.resnet_v1 import RESNETS, ResNetSpec, build_resnet_v1
from resnet.wide_resnet import WideResNetSpec, build_wide_resnet, parse_wrn


def wide_resnet(depth, width, **kwargs):
    """WRN-`depth`-`width` (depth = 6n + 4); keyword arguments as `build_wide_resnet`."""
    return build_wide_resnet(WideResNetSpec(depth, width), **kwargs)


resnet18 = functools.partial(build_resnet_v1, RESNETS[18], name="resnet18")
resnet34 = functools.partial(build_resnet_v1, RESNETS[34], name="resnet34")
resnet50 = functools.partial(build_resnet_v1, RESNETS[50], name="resnet50")
resnet101 = functools.partial(build_resnet_v1, RESNETS[101], name="resnet101")
resnet152 = functools.partial(build_resnet_v1, RESNETS[152], name="resnet152")

__all__ = ["LATEST_REVISION", "MODES", "NORM_MODES", "NormMode", "NormPolicy", "RESNETS",
           "ResNetSpec", "WideResNetSpec", "build_resnet_v1", "build_wide_resnet", "parse_wrn",
           "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet"]
