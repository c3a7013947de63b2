"""`ft-full`, `ft-last` and `bn-only`: fine-tuning some of the backbone's
own weights, with a new head."""

from keras_repnet.core import backbones
from keras_repnet.core import heads
from keras_repnet.methods import base


def _fine_tuning(method, trainable_layer, description):
    def build_model(
        backbone, num_classes, input_shape, weights, dropout, name=None
    ):
        frozen = backbones.resolve(backbone, input_shape, weights)
        for layer in frozen.layers:
            layer.trainable = trainable_layer(layer)
        logits = heads.classifier_head(frozen.outputs[0], num_classes, dropout)
        return base.method_model(frozen.inputs, logits, method, backbone, name)

    build_model.__doc__ = f"Builds `{method}`: {description}."
    return build_model


ft_full = _fine_tuning(
    "ft-full",
    lambda layer: True,
    "fine-tune every weight (batch norms in training mode)",
)
ft_last = _fine_tuning(
    "ft-last",
    lambda layer: False,
    "train the classifier on frozen pooled features",
)
bn_only = _fine_tuning(
    "bn-only",
    base.is_batch_norm,
    "train batch-norm scales and shifts + classifier",
)
