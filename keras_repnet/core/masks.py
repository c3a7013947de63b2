"""Learnable binary masks on a frozen backbone's weights (Piggyback, KSM).

`build(..., backbone_mask="kernel")` (the method `repnet-mask`) replaces each
frozen `Conv2D`, `DepthwiseConv2D` and `Dense` of the backbone by a masked
copy: the same frozen kernel and bias, plus a trainable real-valued score
per weight, per kernel or per output channel. The forward pass uses
`kernel * (score > 0)`; the backward pass passes the binary mask's gradient
straight through to the score (Mallya et al., ECCV 2018). The float weights
never change; what is learned is which of them to keep.

A mask multiplies the kernel before any batch norm that follows, and a 0/1
factor commutes with folding that norm's per-channel scale into the kernel,
so `baked()` (the plain frozen layer with the zeros written into its kernel)
folds as the backbone's own layers do (`keras_repnet.export`).

The price is memory: the score's gradient reads the layer's input, so a
training step keeps the backbone's activations (`keras_repnet.memory`
counts them), as the paper says.
"""

import keras
import numpy as np
from keras import ops

GRANULARITIES = ("weight", "kernel", "channel")
# Where a score starts: above the threshold 0, so that training starts from
# the unmasked backbone. Adam moves a score by about its learning rate per
# step, so the start over the rate is how many steps of consistent pressure
# drop a weight (here 5 at the peak rate, for a kernel of its layer's mean
# magnitude; Piggyback's 1e-2 start, 5e-3 threshold and 1e-4 rate: 50).
# Chosen on validation with the recipe's warm-up (`bench/accuracy.py`'s
# `mask` stages, in docs/results.md): the lowest start whose accuracy stayed
# at repnet's on the far sets.
DEFAULT_INITIAL_SCORE = 0.05
# The scores' learning rate and its warm-up are the recipe's
# (`keras_repnet.Recipe.mask_learning_rate`, `mask_warmup`).
# The scores' variable name, and a `MultiRateAdam` key that matches them.
SCORE_NAME = "mask_score"
SCORE_PATHS = f"*/{SCORE_NAME}"


class _BinaryMask:
    """What the masked layers share (placed before the Keras layer class)."""

    def __init__(
        self,
        *args,
        granularity="kernel",
        initial_score=DEFAULT_INITIAL_SCORE,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if granularity not in GRANULARITIES:
            raise ValueError(
                f"`granularity` must be one of {GRANULARITIES}. Received: "
                f"granularity={granularity!r}"
            )
        self.granularity = granularity
        self.initial_score = float(initial_score)

    def add_weight(self, *args, **kwargs):
        if kwargs.get("name") in ("kernel", "bias"):
            kwargs["trainable"] = False  # The backbone's weights stay.
        return super().add_weight(*args, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self.score = self.add_weight(
            name=SCORE_NAME,
            shape=self.score_shape(),
            initializer=keras.initializers.Constant(self.initial_score),
            trainable=True,
        )

    def score_shape(self) -> tuple:
        """The score's shape: the kernel's, with 1 on the axes that one
        score covers (broadcast over them)."""
        shape = tuple(self.kernel.shape)
        if self.granularity == "weight" or len(shape) == 2 and (
            self.granularity == "kernel"
        ):
            return shape
        if len(shape) == 2:  # Dense, per output unit.
            return (1, shape[1])
        if self.granularity == "kernel" or isinstance(
            self, keras.layers.DepthwiseConv2D
        ):  # A depthwise kernel is one output channel.
            return (1, 1, *shape[2:])
        return (1, 1, 1, shape[3])

    def mask(self):
        """The binary mask, shaped as the score, with the straight-through
        gradient: forward exactly 0 or 1, backward the identity."""
        binary = ops.cast(ops.greater(self.score, 0.0), self.score.dtype)
        return binary + (self.score - ops.stop_gradient(self.score))

    def masked_kernel(self):
        return self.kernel * self.mask()

    def kept(self):
        """Numpy booleans of the kernel's shape: the weights the mask keeps."""
        binary = ops.convert_to_numpy(self.score) > 0
        return np.broadcast_to(binary, tuple(self.kernel.shape))

    def _finish(self, outputs):
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)  # Channels last.
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def baked(self):
        """A frozen copy of the plain layer with the mask written into its
        kernel (zeros stored)."""
        config = super().get_config()
        config.update(name=f"{self.name}_baked", trainable=False)
        layer = self.BASE.from_config(config)
        layer.build(_input_shape(self))
        weights = [ops.convert_to_numpy(self.masked_kernel())]
        if self.use_bias:
            weights.append(ops.convert_to_numpy(self.bias))
        layer.set_weights(weights)
        return layer

    # Keras' generic variable store: the layer classes' own (which differ
    # between Keras versions) save the kernel and bias only.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        config = super().get_config()
        config.update(
            granularity=self.granularity, initial_score=self.initial_score
        )
        return config



@keras.saving.register_keras_serializable(package="keras_repnet")
class MaskedConv2D(_BinaryMask, keras.layers.Conv2D):
    """A frozen `Conv2D` whose kernel is multiplied by a learned binary mask.

    Args:
        granularity: str. One score per `"weight"`, per `"kernel"` (the
            `KH x KW` filter between one input and one output channel, as
            KSM) or per output `"channel"`. Defaults to `"kernel"`.
        initial_score: float. Every score's start; a weight is kept while its
            score is above 0. Defaults to `DEFAULT_INITIAL_SCORE` (0.05).
        **kwargs: the arguments of `keras.layers.Conv2D`.

    Example:

    >>> layer = MaskedConv2D(granularity="channel", filters=8, kernel_size=3)
    >>> tuple(layer(keras.ops.ones((1, 5, 5, 4))).shape)
    (1, 3, 3, 8)
    >>> [v.name for v in layer.trainable_weights]
    ['mask_score']
    """

    BASE = keras.layers.Conv2D

    def call(self, inputs):
        return self._finish(self.convolution_op(inputs, self.masked_kernel()))


@keras.saving.register_keras_serializable(package="keras_repnet")
class MaskedDepthwiseConv2D(_BinaryMask, keras.layers.DepthwiseConv2D):
    """A frozen `DepthwiseConv2D` with a learned binary mask: the arguments
    of `MaskedConv2D` (a kernel is one output channel here, so `"kernel"`
    and `"channel"` coincide), with `keras.layers.DepthwiseConv2D`'s."""

    BASE = keras.layers.DepthwiseConv2D

    def call(self, inputs):
        outputs = ops.depthwise_conv(
            inputs,
            self.masked_kernel(),
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        return self._finish(outputs)


@keras.saving.register_keras_serializable(package="keras_repnet")
class MaskedDense(_BinaryMask, keras.layers.Dense):
    """A frozen `Dense` with a learned binary mask: the arguments of
    `MaskedConv2D` (`"kernel"` is `"weight"` here, `"channel"` an output
    unit), with `keras.layers.Dense`'s."""

    BASE = keras.layers.Dense

    def call(self, inputs):
        return self._finish(ops.matmul(inputs, self.masked_kernel()))


# Frozen layer class -> its masked class. Subclasses (e.g. a layer of another
# library derived from Conv2D) are not masked: their `call` may differ.
MASKED_CLASSES = {
    keras.layers.Conv2D: MaskedConv2D,
    keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D,
    keras.layers.Dense: MaskedDense,
}


def _input_shape(layer):
    """The input shape that builds a copy of a convolution or dense layer."""
    kernel = layer.kernel.shape
    if isinstance(layer, keras.layers.Dense):
        return (None, kernel[0])
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return (None, None, None, kernel[2])
    return (None, None, None, kernel[2] * layer.groups)


def is_masked(layer) -> bool:
    return isinstance(layer, _BinaryMask)


def masked_copy(
    layer, granularity, initial_score=DEFAULT_INITIAL_SCORE, by_magnitude=False
):
    """The masked version of a built `Conv2D`, `DepthwiseConv2D` or `Dense`
    with its frozen weights, or `None` for any other layer (or one whose
    data format is not channels-last). With `by_magnitude`, each score
    starts at `initial_score` times the mean magnitude of the weights it
    covers over the layer's mean magnitude: small weights start near the
    threshold (as magnitude pruning would drop them first)."""
    masked_class = MASKED_CLASSES.get(type(layer))
    if masked_class is None or getattr(
        layer, "data_format", "channels_last"
    ) != "channels_last":
        return None
    config = layer.get_config()
    config.update(trainable=True)
    masked = masked_class(
        granularity=granularity, initial_score=initial_score, **config
    )
    masked.build(_input_shape(layer))
    masked.kernel.assign(layer.kernel)
    if layer.use_bias:
        masked.bias.assign(layer.bias)
    if by_magnitude:
        magnitude = np.abs(ops.convert_to_numpy(layer.kernel))
        covered = tuple(
            axis
            for axis, size in enumerate(masked.score.shape)
            if size < magnitude.shape[axis]
        )
        covered_mean = magnitude.mean(axis=covered, keepdims=True)
        masked.score.assign(
            initial_score * covered_mean / max(magnitude.mean(), 1e-12)
        )
    return masked


def sparsity(model: keras.Model) -> dict:
    """How much of a masked model's backbone its masks drop.

    Returns:
        `{"layers": [...], "masked_weights": int, "dropped_weights": int,
        "sparsity": float}`: one row per masked layer (`layer`,
        `granularity`, `weights`, `dropped`, `sparsity`) and the totals over
        the masked layers (`sparsity` 0.0 for a model without masks).
    """
    rows = []
    for layer in model.layers:
        if not is_masked(layer):
            continue
        kept = layer.kept()
        rows.append(
            {
                "layer": layer.name,
                "granularity": layer.granularity,
                "weights": int(kept.size),
                "dropped": int(kept.size - kept.sum()),
                "sparsity": float(1 - kept.mean()),
            }
        )
    total = sum(r["weights"] for r in rows)
    dropped = sum(r["dropped"] for r in rows)
    return {
        "layers": rows,
        "masked_weights": total,
        "dropped_weights": dropped,
        "sparsity": dropped / total if total else 0.0,
    }
