"""`tinytl`: lite residual modules, shifts and a head (TinyTL, Cai 2020)."""

import math

import keras

from keras_repnet.core import backbones
from keras_repnet.core import heads
from keras_repnet.core import taps as taps_lib
from keras_repnet.core.layers import RepNetModule
from keras_repnet.core.layers import shift_after
from keras_repnet.methods import base


def tinytl(
    backbone, num_classes, input_shape, weights, dropout, kernel_size, groups,
    name=None,
):
    """Builds `tinytl`: lite residual modules, shifts and a head.

    Every backbone batch norm stays frozen in inference mode and gets a
    trainable shift (`ChannelBias`). Every block (main-path segment between
    consecutive `find_taps(mode="all")` boundaries) gets a lite residual
    module: the block's input, average-pooled to half the block's output
    resolution, a `kernel_size` convolution in `groups` groups, batch norm,
    ReLU, a 1x1 convolution to the block's output channels and a batch norm
    with zero-initialised scale (a `RepNetModule`), bilinearly upsampled and
    added to the block's output.

    Differences from TinyTL: the modules start from zero (as TinyTL's
    "random initialisation" row), not from ImageNet-pretrained modules; the
    first block after the stem and blocks that end on no boundary (e.g.
    MobileNetV2's last 160->320 block) get shifts only; TinyTL's weight
    standardisation and group norms are not used.
    """
    frozen = backbones.resolve(backbone, input_shape, weights)
    frozen.trainable = False
    boundaries = [t.layer_name for t in taps_lib.find_taps(frozen, mode="all")]
    # Boundary layer name -> the boundary where the block it ends begins.
    block_inputs = dict(zip(boundaries[1:], boundaries))
    outputs_by_name = {}

    def call_layer(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if base.is_batch_norm(layer):
            outputs = shift_after(layer.name)(outputs)
        if layer.name in block_inputs:
            index = boundaries.index(layer.name) - 1
            block_input = outputs_by_name[block_inputs[layer.name]]
            outputs = keras.layers.Add(name=f"tinytl_add_{index}")(
                [outputs, _lite_residual(block_input, outputs, index,
                                         kernel_size, groups)]
            )
        if layer.name in boundaries:
            outputs_by_name[layer.name] = outputs
        return outputs

    image = heads.new_input(frozen)
    features = heads.replay(frozen, image, call_layer)
    logits = heads.classifier_head(features, num_classes, dropout)
    return base.method_model(image, logits, "tinytl", backbone, name)


def _lite_residual(block_input, block_output, index, kernel_size, groups):
    height, width, channels = block_output.shape[1:]
    half = (math.ceil(height / 2), math.ceil(width / 2))
    residual = RepNetModule(
        filters=channels,
        output_size=half,
        hidden_filters=block_input.shape[-1],
        kernel_size=kernel_size,
        groups=groups,
        name=f"tinytl_residual_{index}",
    )(block_input)
    if half != (height, width):
        residual = keras.layers.Resizing(
            height,
            width,
            interpolation="bilinear",
            name=f"tinytl_upsample_{index}",
        )(residual)
    return residual
