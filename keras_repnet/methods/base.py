"""What the method builders share besides `keras_repnet.core.heads`."""

import keras

from keras_repnet.core import backbones
from keras_repnet.core.models import RepNetModel


def model_name(method: str, backbone) -> str:
    """The default model name of `method` on `backbone`, e.g.
    `"tinytl_mobilenetv2"`."""
    backbone_name = backbones.backbone_name(backbone).lower()
    return f"{method.replace('-', '_')}_{backbone_name}"


def method_model(inputs, logits, method, backbone, name) -> RepNetModel:
    """Every method's model is a `RepNetModel`: the same lean backward (exact
    gradients, bool ReLU masks) for all, and the backbone's name for export."""
    return RepNetModel(
        inputs,
        logits,
        name=name or model_name(method, backbone),
        backbone=backbones.backbone_name(backbone),
    )


def is_batch_norm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)
