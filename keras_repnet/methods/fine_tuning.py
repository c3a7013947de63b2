"""`ft-full`, `ft-last` and `bn-only`: fine-tuning some of the backbone's
own weights, with a new head.

Methods that train batch norms take two options that decide what the
network computes at test time:

- `bn_momentum`: the momentum of the norms' moving statistics. Keras'
  applications build them with 0.999, so that in a few hundred steps the
  statistics barely leave ImageNet's and the test-time network is not the
  one that trained; `None` keeps the backbone's.
- `bn_inference`: the norms normalise with their moving (ImageNet)
  statistics in training too, as the Keras transfer-learning guide
  recommends; their scales and shifts still train.
"""

import keras

from keras_repnet.core import backbones
from keras_repnet.core import heads
from keras_repnet.methods import base
from keras_repnet.methods.baseline_layers import InferenceMode


def _fine_tuning(method, trainable_layer, description):
    def build_model(
        backbone, num_classes, input_shape, weights, dropout,
        bn_momentum=None, bn_inference=False, name=None,
    ):
        _check_options(bn_momentum, bn_inference)
        frozen = backbones.resolve(backbone, input_shape, weights)
        for layer in frozen.layers:
            layer.trainable = trainable_layer(layer)
            if bn_momentum is not None and base.is_batch_norm(layer):
                layer.momentum = bn_momentum
        if bn_inference:
            image = heads.new_input(frozen)
            features = heads.replay(frozen, image, _inference_norms)
        else:
            image, features = frozen.inputs, frozen.outputs[0]
        logits = heads.classifier_head(features, num_classes, dropout)
        return base.method_model(image, logits, method, backbone, name)

    build_model.__doc__ = f"Builds `{method}`: {description}."
    return build_model


def _inference_norms(layer, *args, **kwargs):
    if base.is_batch_norm(layer):
        return InferenceMode(layer, name=f"{layer.name}_inference")(args[0])
    return layer(*args, **kwargs)


def _check_options(bn_momentum, bn_inference):
    if bn_momentum is not None and not 0 <= bn_momentum < 1:
        raise ValueError(
            f"`bn_momentum` must be in [0, 1) or None. Received: {bn_momentum!r}"
        )
    if bn_inference and bn_momentum is not None:
        raise ValueError(
            "`bn_momentum` has no effect with `bn_inference=True` (the norms "
            f"keep their statistics). Received: bn_momentum={bn_momentum!r}"
        )


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
