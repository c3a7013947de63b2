"""The model that `export_tflite` traces, rewritten for LiteRT.

`exportable(model)` returns a functional model that computes the same
function as `model` and shares its trainable layers, with three changes:

- Each masked backbone layer (`keras_repnet.core.masks`) becomes the plain
  frozen layer with its mask written into the kernel (zeros stored): the
  masks are fixed on device.
- Each frozen batch norm that directly follows a frozen convolution is
  folded into it (kernel and bias scaled once, in numpy). The converter
  folds them anyway for inference, but only in the forward direction; a
  backward pass that reads the folded kernel too can then share its bytes
  with the forward convolution instead of storing a second copy.
- `Dropout` draws its mask with `tf.random.uniform`, a LiteRT builtin
  (Keras' stateless random ops are select-TF ops).
"""

import collections

import keras
import numpy as np
import tensorflow as tf

from keras_repnet import compat
from keras_repnet.core import graph as graph_lib
from keras_repnet.core import masks

FOLDABLE_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def exportable(model: keras.Model) -> tuple[keras.Model, list]:
    """Rewrites `model` for export (see the module docstring).

    Args:
        model: `keras.Model`. A functional model; other models are returned
            unchanged.

    Returns:
        `(model, new_variables)`: the rewritten model (which shares every
        layer of `model` except the masked layers, the folded pairs and
        `Dropout`s) and the Keras variables of the layers it created (the
        baked and folded convolutions), which the export must save with the
        others.
    """
    if not compat.is_functional(model):
        return model, []
    model, baked_variables = _bake_masks(model)
    pairs = foldable_pairs(model)
    dropouts = [layer for layer in model.layers if type(layer) is keras.layers.Dropout]
    if not pairs and not dropouts:
        return model, baked_variables
    folded = {id(conv): fold(conv, norm) for conv, norm in pairs}
    norms = {id(norm) for _, norm in pairs}

    def call(layer, *args, **kwargs):
        if id(layer) in norms:
            return args[0]  # Already applied by the folded convolution.
        if id(layer) in folded:
            layer = folded[id(layer)]
        elif type(layer) is keras.layers.Dropout:
            layer = UniformDropout(
                layer.rate, layer.noise_shape, name=layer.name + "_builtin"
            )
        return layer(*args, **kwargs)

    rewritten = keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call
    )
    new_variables = [v for layer in folded.values() for v in layer.variables]
    return rewritten, baked_variables + new_variables


def _bake_masks(model):
    """`model` with each masked layer replaced by its `baked()` copy, and the
    copies' variables."""
    baked = {
        id(layer): layer.baked() for layer in model.layers if masks.is_masked(layer)
    }
    if not baked:
        return model, []

    def call(layer, *args, **kwargs):
        return baked.get(id(layer), layer)(*args, **kwargs)

    rewritten = keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call
    )
    return rewritten, [v for layer in baked.values() for v in layer.variables]


def foldable_pairs(model: keras.Model) -> list[tuple]:
    """`(convolution, batch_norm)` layer pairs of `model` that can be fused.

    A pair qualifies when both layers are frozen and called once in
    `model`, the convolution (a `Conv2D` without groups or a
    `DepthwiseConv2D`, channels-last, no activation) feeds only the batch
    norm, and the batch norm normalizes the last axis.
    """
    order, producer, consumers = graph_lib.walk(model)
    nodes = {id(node): node for node in producer.values()}.values()
    calls = collections.Counter(id(node.operation) for node in nodes)
    outputs = {id(tensor) for tensor in model.outputs}
    pairs = []
    for tensor in order:
        node = producer[id(tensor)]
        norm = node.operation
        if not (
            isinstance(norm, keras.layers.BatchNormalization)
            and not norm.trainable
            and norm.axis in (-1, len(tensor.shape) - 1)
            and len(node.input_tensors) == 1
        ):
            continue
        source = node.input_tensors[0]
        conv = producer[id(source)].operation
        if (
            isinstance(conv, FOLDABLE_CONVOLUTIONS)
            and not conv.trainable
            and calls[id(conv)] == calls[id(norm)] == 1
            and len(consumers[id(source)]) == 1
            and id(source) not in outputs
            and conv.data_format == "channels_last"
            and conv.activation in (None, keras.activations.linear)
            and getattr(conv, "groups", 1) == 1
        ):
            pairs.append((conv, norm))
    return pairs


def fold(conv, norm):
    """A frozen copy of `conv` with `norm` (inference mode) folded in."""
    mean, variance = (np.asarray(v) for v in (norm.moving_mean, norm.moving_variance))
    scale = 1 / np.sqrt(variance + norm.epsilon)
    if norm.scale:
        scale = scale * np.asarray(norm.gamma)
    shift = -mean * scale
    if norm.center:
        shift = shift + np.asarray(norm.beta)
    kernel = np.asarray(conv.kernel)
    bias = np.asarray(conv.bias) if conv.use_bias else 0.0
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        # Output channel c * multiplier + m comes from kernel[..., c, m].
        kernel = kernel * scale.reshape(kernel.shape[2:])
    else:
        kernel = kernel * scale
    config = conv.get_config()
    config.update(use_bias=True, name=f"{conv.name}_folded", trainable=False)
    folded = type(conv).from_config(config)
    folded.build((None, None, None, conv.kernel.shape[2]))
    folded.set_weights([kernel.astype("float32"), (bias * scale + shift).astype("float32")])
    return folded


@keras.saving.register_keras_serializable(package="keras_repnet")
class UniformDropout(keras.layers.Layer):
    """`Dropout` whose mask comes from `tf.random.uniform`, which LiteRT has
    as the builtin `RANDOM_UNIFORM` (Keras' stateless random ops are not
    builtins)."""

    def __init__(self, rate, noise_shape=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.noise_shape = noise_shape

    def call(self, inputs, training=None):
        if not training or not self.rate:
            return inputs
        shape = tf.shape(inputs)
        if self.noise_shape is not None:
            shape = [
                shape[i] if size is None else size
                for i, size in enumerate(self.noise_shape)
            ]
        keep = tf.random.uniform(shape) >= self.rate
        return inputs * tf.cast(keep, inputs.dtype) / (1 - self.rate)
