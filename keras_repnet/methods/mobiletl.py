"""`mobiletl`: shifts in the top blocks with a sign backward (MobileTL, 2023)."""

import keras

from keras_repnet.core import backbones
from keras_repnet.core import heads
from keras_repnet.core import taps as taps_lib
from keras_repnet.core.layers import shift_after
from keras_repnet.methods import base
from keras_repnet.methods.baseline_layers import SignBackward


def mobiletl(
    backbone, num_classes, input_shape, weights, dropout, top_blocks,
    name=None,
):
    """Builds `mobiletl`: shifts in the top blocks with a sign backward.

    The last `top_blocks` blocks (main-path segments after the
    `top_blocks`-th block boundary from the end, counting the segment from
    the last boundary to the feature map as one block) train a shift after
    each batch norm (`ChannelBias`, the norms stay in inference mode), and
    each activation layer there (`ReLU`, `Activation`) passes gradients back
    through a binary mask `x > 0` (`SignBackward`). Nothing below the top
    blocks needs a gradient. Activations made of several operations (e.g.
    MobileNetV3's hard-swish) keep their exact gradient.
    """
    if not isinstance(top_blocks, int) or top_blocks < 1:
        raise ValueError(
            f"`top_blocks` must be a positive int. Received: {top_blocks!r}"
        )
    frozen = backbones.resolve(backbone, input_shape, weights)
    frozen.trainable = False
    boundaries = [t.layer_name for t in taps_lib.find_taps(frozen, mode="all")]
    start = boundaries[-min(top_blocks, len(boundaries))]
    state = {"inside": False}

    def call_layer(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if layer.name == start:
            state["inside"] = True
        elif state["inside"]:
            if base.is_batch_norm(layer):
                outputs = shift_after(layer.name)(outputs)
            elif isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
                outputs = SignBackward(name=f"{layer.name}_sign")(
                    [args[0], outputs]
                )
        return outputs

    image = heads.new_input(frozen)
    features = heads.replay(frozen, image, call_layer)
    logits = heads.classifier_head(features, num_classes, dropout)
    return base.method_model(image, logits, "mobiletl", backbone, name)
