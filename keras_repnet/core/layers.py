"""The trainable parts of Rep-Net: side modules and activation connectors."""

import keras
import tensorflow as tf

from keras_repnet import backward
from keras_repnet.backward import bits
from keras_repnet.backward import builtin
from keras_repnet.backward import ops as backward_ops


@keras.saving.register_keras_serializable(package="keras_repnet")
class RepNetModule(keras.layers.Layer):
    """One Rep-Net side module: two stacked convolutions.

    The module maps the previous side feature (or the input image) to the
    resolution and channels of its connector: average pooling by the integer
    resolution ratio, a `kernel_size` convolution, batch norm, ReLU, a
    1x1 convolution to `filters` channels and a batch norm whose scale starts
    at zero, so that a new module is a no-op and training starts from the
    pretrained backbone's features. A bilinear resize fixes any remaining
    size mismatch (e.g. inputs whose size is not a multiple of the stride).
    With `downscale=2` the convolutions run at half the output resolution
    (pooled 2x further) and the resize upsamples their result, as the
    reference code's modules do: a quarter of the activations and work.

    Args:
        filters: int. Output channels, equal to the connector's channels.
        output_size: tuple of 2 ints. Output height and width.
        hidden_filters: int. Channels of the first convolution. Defaults to
            `filters`.
        kernel_size: int. Size of the first convolution. Defaults to 3.
        groups: int. Groups of the first convolution, used when the input and
            hidden channels are divisible by it, else 1. Defaults to 1: the
            reference code's 5x5 convolutions in 2 groups train slower on CPU,
            where TensorFlow's grouped convolution is slow (measured by
            `bench/step_time.py`).
        downscale: int. The convolutions run at `1/downscale` of the output
            resolution (where the output is at least `2 * downscale` pixels
            high and wide). Defaults to 1.
        norm_momentum: float. Momentum of the two batch norms' moving
            statistics. Defaults to 0.99 (Keras' default).

    Example:

    >>> module = RepNetModule(filters=24, output_size=(56, 56))
    >>> tuple(module(keras.ops.zeros((2, 112, 112, 16))).shape)
    (2, 56, 56, 24)
    """

    def __init__(
        self,
        filters,
        output_size,
        hidden_filters=None,
        kernel_size=3,
        groups=1,
        downscale=1,
        norm_momentum=0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if filters < 1 or len(output_size) != 2 or min(output_size) < 1:
            raise ValueError(
                "`filters` must be positive and `output_size` a pair of "
                f"positive ints. Received: filters={filters}, "
                f"output_size={output_size}"
            )
        self.filters = int(filters)
        self.output_size = tuple(int(s) for s in output_size)
        self.hidden_filters = int(hidden_filters or filters)
        self.kernel_size = int(kernel_size)
        self.groups = int(groups)
        self.downscale = _positive_int("downscale", downscale)
        self.norm_momentum = float(norm_momentum)

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        # "same" pooling by the rounded ratio gives the backbone's ceil-rounded
        # sizes (e.g. 25 -> 13); anything else is resized at the end.
        pool = max(
            1,
            min(
                round(height / self.output_size[0]),
                round(width / self.output_size[1]),
            ),
        )
        if min(self.output_size) >= 2 * self.downscale:
            pool *= self.downscale
        groups = self.groups
        if channels % groups or self.hidden_filters % groups:
            groups = 1
        self.pool = (
            keras.layers.AveragePooling2D(pool, padding="same", name="pool")
            if pool > 1
            else None
        )
        self.conv = keras.layers.Conv2D(
            self.hidden_filters,
            self.kernel_size,
            padding="same",
            groups=groups,
            use_bias=False,
            name="conv",
        )
        self.norm = keras.layers.BatchNormalization(
            momentum=self.norm_momentum, name="norm"
        )
        self.project = keras.layers.Conv2D(
            self.filters, 1, use_bias=False, name="project"
        )
        self.project_norm = keras.layers.BatchNormalization(
            momentum=self.norm_momentum,
            gamma_initializer="zeros",
            name="project_norm",
        )
        shape = input_shape
        if self.pool is not None:
            self.pool.build(shape)
            shape = self.pool.compute_output_shape(shape)
        self.conv.build(shape)
        shape = self.conv.compute_output_shape(shape)
        self.norm.build(shape)
        self.project.build(shape)
        shape = self.project.compute_output_shape(shape)
        self.project_norm.build(shape)
        self.resize = None
        if tuple(shape[1:3]) != self.output_size:
            self.resize = keras.layers.Resizing(
                *self.output_size, interpolation="bilinear", name="resize"
            )

    def steps(self) -> list:
        """The module's operations in the order `call` runs them: its
        pooling, then `recomputed_steps()` (read by
        `keras_repnet.memory.profile` as well)."""
        return [self.pool] * (self.pool is not None) + self.recomputed_steps()

    def recomputed_steps(self) -> list:
        """The operations after the pooling, which `call(...,
        recompute=True)` runs again in the backward pass: the sublayers, and
        `keras.activations.relu` between the two convolutions."""
        steps = [
            self.conv,
            self.norm,
            keras.activations.relu,
            self.project,
            self.project_norm,
            self.resize,
        ]
        return [step for step in steps if step is not None]

    def call(self, inputs, training=None, recompute=False):
        """Runs the module. With `recompute` (`RepNetModel`'s lean training
        calls), the forward pass keeps only the pooled input, a
        `pool ** 2`-th of the input, and the backward pass runs the
        convolutions again (`keras_repnet.backward.recompute`)."""
        x = inputs if self.pool is None else self.pool(inputs)
        convolve = self._convolve
        if recompute:
            convolve = backward.recompute(convolve)
        return convolve(x, training=training)

    def _convolve(self, x, training=None):
        for step in self.recomputed_steps():
            if isinstance(step, keras.layers.BatchNormalization):
                x = step(x, training=training)
            else:
                x = step(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "output_size": self.output_size,
                "hidden_filters": self.hidden_filters,
                "kernel_size": self.kernel_size,
                "groups": self.groups,
                "downscale": self.downscale,
                "norm_momentum": self.norm_momentum,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_repnet")
class SideTop(keras.layers.Layer):
    """The side network's last convolution: 1x1 to `filters` channels,
    batch norm and ReLU on its final feature before the head pools it, as
    a backbone's own last convolution widens its features.

    Args:
        filters: int. Output channels.
        norm_momentum: float. The batch norm's momentum. Defaults to 0.99.

    Example:

    >>> top = SideTop(filters=64)
    >>> tuple(top(keras.ops.zeros((2, 4, 4, 96))).shape)
    (2, 4, 4, 64)
    """

    def __init__(self, filters, norm_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int("filters", filters)
        self.norm_momentum = float(norm_momentum)

    def build(self, input_shape):
        self.conv = keras.layers.Conv2D(
            self.filters, 1, use_bias=False, name="conv"
        )
        self.conv.build(input_shape)
        self.norm = keras.layers.BatchNormalization(
            momentum=self.norm_momentum, name="norm"
        )
        self.norm.build(self.compute_output_shape(input_shape))

    def steps(self) -> list:
        """Its operations in `call`'s order (for `flat_graph`'s walkers)."""
        return [self.conv, self.norm, keras.activations.relu]

    def call(self, inputs, training=None):
        features = self.norm(self.conv(inputs), training=training)
        return keras.activations.relu(features)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters, "norm_momentum": self.norm_momentum,
        }


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}"
        )
    return value


@keras.saving.register_keras_serializable(package="keras_repnet")
class ActivationConnector(keras.layers.Add):
    """Adds a backbone feature and a Rep-Net feature: `x_hat = x + p`.

    A plain elementwise sum, so its gradient needs no stored activation. It is
    a separate class so that the connector plan of a model can be found by
    type (see `keras_repnet.describe`).
    """


class AddedWeight(keras.layers.Layer):
    """Adds a trainable weight, initialised to zero, to its input. The
    weight's gradient is a sum of the incoming gradient: it reads no stored
    activation (`weight_gradient_reads_input`, read by
    `keras_repnet.memory.profile`)."""

    weight_gradient_reads_input = False
    weight_name = None  # The variable's name, and this layer's attribute.

    def weight_shape(self, input_shape):
        raise NotImplementedError

    def build(self, input_shape):
        weight = self.add_weight(
            shape=self.weight_shape(input_shape),
            initializer="zeros",
            name=self.weight_name,
        )
        setattr(self, self.weight_name, weight)

    def call(self, inputs):
        weight = getattr(self, self.weight_name)
        return _add_weight(inputs, keras.ops.cast(weight, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape


@tf.custom_gradient
def _add_weight(x, weight):
    """`x + weight` (over `x`'s leading axes), whose gradient passes on to
    `x` only once the weight's own, a sum of it, is computed. TensorFlow's
    gradient of an addition makes the sum a side branch that nothing waits
    for; an executor that postpones it (always, with one inter-op thread)
    keeps the gradient of every shift alive until the backward pass ends."""

    def gradient(dy):
        axes = list(range(len(dy.shape) - len(weight.shape)))
        dweight = tf.reduce_sum(dy, axes)
        with tf.control_dependencies([dweight]):
            return tf.identity(dy), dweight

    return x + weight, gradient


# A backbone shift is named after the batch norm it follows; its variable's
# path, as a `MultiRateAdam` key (`keras_repnet.Recipe.shift_learning_rate`).
SHIFT_SUFFIX = "_shift"
SHIFT_PATHS = f"*{SHIFT_SUFFIX}/bias"


def shift_after(layer_name: str) -> "ChannelBias":
    """The `ChannelBias` that trains the shift of the batch norm
    `layer_name`."""
    return ChannelBias(name=f"{layer_name}{SHIFT_SUFFIX}")


@keras.saving.register_keras_serializable(package="keras_repnet")
class ChannelBias(AddedWeight):
    """Adds a trainable per-channel shift, initialised to zero.

    Placed after a frozen (inference-mode) batch norm it trains that norm's
    shift (beta) without touching the frozen layer: `beta + bias`. Its
    gradient is the sum of the incoming gradient, so it stores no activation.
    """

    weight_name = "bias"

    def weight_shape(self, input_shape):
        return (input_shape[-1],)


@keras.saving.register_keras_serializable(package="keras_repnet")
class SignGradient(keras.layers.Layer):
    """An activation whose backward pass keeps only a mask, as bits.

    The forward pass is `activation(x)`, exactly; the gradient reaches `x`
    as `dy * (x > 0)`, MobileTL's sign approximation of the derivative of
    hard-swish (and of any activation that is near 0 below 0 and near the
    identity above). The exact derivative would need the float input.

    Args:
        activation: str or callable. The forward activation, as
            `keras.layers.Activation` takes it. Defaults to `"hard_swish"`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> layer = SignGradient("hard_swish")
    >>> [round(float(v), 3) for v in layer(keras.ops.array([-1.0, 1.0]))]
    [-0.333, 0.667]
    """

    def __init__(self, activation="hard_swish", **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)

    def call(self, inputs):
        @keras.ops.custom_gradient
        def forward(x):
            y = self.activation(x)
            if backward.builtins_only():  # TFLite has no bitwise AND.
                # An int8 mask, which XNNPACK stores and reads, where a
                # bool one and a select would be reference kernels.
                mask = builtin.positive_mask(x)
                select = lambda dy: builtin.masked(dy, mask)  # noqa: E731
            else:
                kept = bits.keep(x, lambda x: x > 0)
                select = lambda dy: bits.where(kept, dy)  # noqa: E731

            def grad(*args, upstream=None):
                return select(args[0] if upstream is None else upstream)

            return y, grad

        return forward(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "activation": keras.activations.serialize(self.activation),
        }


@keras.saving.register_keras_serializable(package="keras_repnet")
class StopGradient(keras.layers.Layer):
    """Passes its input on and no gradient back (`keras.ops.stop_gradient`).

    Placed on a squeeze-excite gate, it holds the gate constant in the
    backward pass: the product `x * gate` then passes `dy * gate` to `x` and
    keeps only the gate (one value per channel) instead of `x`.
    """

    def call(self, inputs):
        return keras.ops.stop_gradient(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_repnet")
class QuantizedGateProduct(keras.layers.Layer):
    """A squeeze-excite product `x * gate` whose backward keeps `x` in int8.

    Takes `[x, gate]`, `gate` one value per example and channel (shape
    `(batch, 1, 1, channels)`). The forward pass is `x * gate`, exactly. The
    gradient reaching `x` is `dy * gate`, exact; the gate's is
    `sum(dy * x)` over height and width, which needs the float `x`: it
    reads instead a copy of `x` rounded to int8 per example and channel
    (scale `max |x| / 127`), a quarter of the bytes, made in the forward
    pass. Each product's rounding error is at most half a step of 1/127
    of its channel's largest value.

    Example:

    >>> x = keras.ops.ones((1, 2, 2, 3))
    >>> gate = keras.ops.full((1, 1, 1, 3), 0.5)
    >>> y = QuantizedGateProduct()([x, gate])
    >>> keras.ops.convert_to_numpy(y)[0, 0, 0].tolist()
    [0.5, 0.5, 0.5]
    """

    def call(self, inputs):
        x, gate = inputs

        @tf.custom_gradient
        def product(x, gate):
            scale = tf.reduce_max(tf.abs(x), axis=(1, 2), keepdims=True) / 127.0
            scale = tf.maximum(scale, keras.config.epsilon())
            rounded = backward_ops.forward(
                x, lambda x: builtin.to_int8(tf.round(x / scale))
            )

            def grad(dy):
                with tf.control_dependencies([dy]):  # In the backward pass.
                    restored = builtin.from_int8(
                        tf.identity(rounded), dy.dtype
                    ) * scale
                gate_grad = tf.reduce_sum(
                    dy * restored, axis=(1, 2), keepdims=True
                )
                return dy * gate, gate_grad

            return x * gate, grad

        return product(x, gate)

    def compute_output_shape(self, input_shape):
        return input_shape[0]
