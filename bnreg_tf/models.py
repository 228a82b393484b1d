"""Model names the binaries accept, and one `build_network(config, ...)` over resnet/ and efficientnet/."""
import efficientnet
import resnet
from resnet.resnet_v1 import parse_resnet
from resnet.wide_resnet import parse_wrn

EFFICIENTNET_PREFIX = "efficientnet_"


def check_model_name(name):
    """Raises ValueError with the accepted names unless `name` is a model bnreg builds."""
    if name.startswith(EFFICIENTNET_PREFIX) and name[len(EFFICIENTNET_PREFIX):] in efficientnet.SCALING:
        return name
    if parse_wrn(name) is not None or parse_resnet(name) is not None:
        return name
    raise ValueError(
        f"expected wrn<depth>_<width> (depth = 6n+4, e.g. wrn28_10), resnet18/34/50/101/152 or "
        f"efficientnet_{{{','.join(efficientnet.SCALING)}}}, got {name!r}")


def native_image_size(config, dataset_spec):
    """The training resolution: --image_size, else EfficientNet's own on ImageNet-like data
    (large or varying images, trained with random-resized crops), else the data's."""
    if config.image_size:
        return config.image_size
    if config.family == "efficientnet" and dataset_spec.augment == "goyal":
        return efficientnet.SCALING[config.model[len(EFFICIENTNET_PREFIX):]].resolution
    return dataset_spec.image_size


def build_network(config, dataset_spec, image_size):
    """The `{"logits", "embedding"}` Keras model that `config` describes, for the data's
    channels and classes."""
    shape = (image_size, image_size, dataset_spec.channels)
    if config.family == "efficientnet":
        return efficientnet.build_model(
            config.model[len(EFFICIENTNET_PREFIX):], num_classes=dataset_spec.num_classes,
            input_shape=shape, dropout=None if config.dropout == -1 else config.dropout,
            survival_prob=config.survival_prob, embedding_l2=config.embedding_l2,
            functional_l2=config.functional_l2, seed=config.seed)
    return resnet.build_model(
        config.model, num_classes=dataset_spec.num_classes, input_shape=shape, norm=config.norm,
        activation=config.activation, dropout=config.dropout,
        standardization_kl=config.standardization_kl, embedding_l2=config.embedding_l2,
        functional_l2=config.functional_l2, seed=config.seed)
