"""The layers the compared methods add to a frozen backbone."""

import keras

from keras_repnet.core.layers import AddedWeight


@keras.saving.register_keras_serializable(package="keras_repnet")
class InputPerturbation(AddedWeight):
    """Adds a learnable perturbation of the input's shape: `x + p`, with `p`
    initialised to zero (adversarial reprogramming, Rep-Net Eq. 2)."""

    weight_name = "perturbation"

    def weight_shape(self, input_shape):
        return tuple(input_shape[1:])


@keras.saving.register_keras_serializable(package="keras_repnet")
class SignBackward(keras.layers.Layer):
    """Passes an activation's output forward and a binary-mask gradient back.

    Called on `[x, y]` with `y = activation(x)`, it returns `y` exactly, but
    the gradient reaches `x` as `dy * (x > 0)` and never reaches `y`'s own
    backward (MobileTL's sign approximation of ReLU6 and hard-swish
    derivatives). Only the boolean mask `x > 0` is needed for the backward
    pass.
    """

    def call(self, inputs):
        x, y = inputs
        passed = keras.ops.where(x > 0, x, keras.ops.zeros_like(x))
        return keras.ops.stop_gradient(y) + (
            passed - keras.ops.stop_gradient(passed)
        )

    def compute_output_shape(self, input_shape):
        return input_shape[1]


@keras.saving.register_keras_serializable(package="keras_repnet")
class LabelMapping(keras.layers.Layer):
    """Maps source-class logits to `num_classes` target logits, many to one.

    Source class `s` belongs to target class `s % num_classes`; the target
    logit is the log-sum-exp of its source logits, so a softmax over the
    target logits equals the summed source probabilities of each group.

    Args:
        num_classes: int. Number of target classes.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def build(self, input_shape):
        if input_shape[-1] < self.num_classes:
            raise ValueError(
                f"Cannot map {input_shape[-1]} source classes onto "
                f"{self.num_classes} target classes: a many-to-one mapping "
                "needs at least as many source classes."
            )

    def call(self, inputs):
        groups = keras.ops.one_hot(
            keras.ops.arange(inputs.shape[-1]) % self.num_classes,
            self.num_classes,
            dtype=inputs.dtype,
        )
        peak = keras.ops.stop_gradient(
            keras.ops.max(inputs, axis=-1, keepdims=True)
        )
        summed = keras.ops.matmul(keras.ops.exp(inputs - peak), groups)
        return keras.ops.log(summed) + peak

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="keras_repnet")
class InferenceMode(keras.layers.Wrapper):
    """Runs the wrapped layer in inference mode, also while training.

    Around a `BatchNormalization`, the norm normalises with its moving
    statistics in training too (they stay as they are), while its scale
    and shift still train: the Keras transfer-learning guide's fine-tuning
    recipe. (A functional model passes its own `training` flag to every
    layer that takes one; this layer takes none.)

    Args:
        layer: `keras.layers.Layer`. The layer to run in inference mode.
        **kwargs: `keras.layers.Wrapper` arguments.
    """

    def call(self, inputs):
        return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)
