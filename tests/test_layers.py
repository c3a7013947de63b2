import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_layer_test

from keras_repnet import ActivationConnector
from keras_repnet import RepNetModule
from keras_repnet import SideTop
from keras_repnet import methods
from keras_repnet.core import masks
from keras_repnet.core.layers import ChannelBias
from keras_repnet.core.layers import QuantizedGateProduct
from keras_repnet.core.layers import SignGradient
from keras_repnet.core.layers import StopGradient
from keras_repnet.export import model as export_model


@pytest.mark.parametrize(
    "input_shape, output_size, resized",
    [
        ((2, 64, 64, 3), (32, 32), False),  # pooled by 2
        ((2, 25, 25, 8), (13, 13), False),  # "same" pooling rounds up
        ((2, 10, 10, 8), (3, 3), True),  # no integer ratio: resized
        ((2, 7, 7, 8), (7, 7), False),  # same resolution: no pooling
    ],
)
def test_module_matches_its_connector(input_shape, output_size, resized):
    module = RepNetModule(filters=6, output_size=output_size)

    outputs = module(np.ones(input_shape, "float32"))

    assert outputs.shape == (input_shape[0], *output_size, 6)
    assert (module.resize is not None) == resized


@pytest.mark.parametrize("training", [False, True])
def test_new_module_is_a_no_op(training):
    module = RepNetModule(filters=4, output_size=(8, 8))
    inputs = np.random.default_rng(0).normal(size=(2, 16, 16, 3))

    outputs = module(inputs.astype("float32"), training=training)

    np.testing.assert_array_equal(outputs, np.zeros((2, 8, 8, 4)))


def test_module_config_round_trip():
    module = RepNetModule(
        filters=8, output_size=(4, 4), hidden_filters=12, kernel_size=5, groups=2
    )
    inputs = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    module(inputs)
    for weight in module.weights:
        weight.assign(np.random.default_rng(1).normal(size=weight.shape))

    clone = RepNetModule.from_config(module.get_config())
    clone(inputs)
    clone.set_weights(module.get_weights())

    np.testing.assert_allclose(clone(inputs), module(inputs), rtol=1e-6)
    assert clone.conv.groups == 2
    assert clone.get_config() == module.get_config()


def test_module_norms_average_their_statistics_at_its_momentum():
    module = RepNetModule(filters=4, output_size=(4, 4), norm_momentum=0.9)
    inputs = np.random.default_rng(0).normal(2.0, size=(2, 4, 4, 3))
    inputs = inputs.astype("float32")

    module(inputs, training=True)

    # One training call moves the moving mean from 0 by (1 - momentum) of
    # the batch mean of the normalised layer's input (numpy, independently).
    hidden = module.conv(inputs).numpy()
    np.testing.assert_allclose(
        module.norm.moving_mean.numpy(),
        0.1 * hidden.mean(axis=(0, 1, 2)),
        rtol=1e-4,
        atol=1e-6,
    )
    assert RepNetModule.from_config(module.get_config()).norm_momentum == 0.9


def test_recomputed_module_matches_autodiff_and_keeps_its_pooled_input():
    module = RepNetModule(filters=4, output_size=(4, 4), downscale=2)
    inputs = tf.constant(
        np.random.default_rng(0).normal(size=(2, 16, 16, 3)), "float32"
    )
    module(inputs)
    for weight in module.trainable_weights:
        weight.assign(np.random.default_rng(1).normal(size=weight.shape))
    saved = [v.numpy() for v in module.non_trainable_weights]

    def gradients(recompute):
        for v, value in zip(module.non_trainable_weights, saved):
            v.assign(value)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = module(inputs, training=True, recompute=recompute)
            loss = tf.reduce_sum(outputs**2)
        return [outputs] + tape.gradient(
            loss, [inputs, *module.trainable_weights]
        )

    for actual, expected in zip(gradients(True), gradients(False)):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    # The backward pass runs the convolutions again from the pooled input
    # (kept from the forward pass), not the pooling.
    graph = tf.function(lambda: gradients(True)).get_concrete_function().graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("Conv2D") == 4 and types.count("AvgPool") == 1


@pytest.mark.parametrize(
    "layer, summed_axes",
    [(ChannelBias(), (0, 1, 2)), (methods.InputPerturbation(), (0,))],
)
def test_added_weight_gradients_are_sums_of_the_incoming_one(
    layer, summed_axes
):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 4, 4, 3)), "float32")
    dy = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    layer(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * dy)
    dx, dweight = tape.gradient(loss, [x, layer.trainable_weights[0]])

    np.testing.assert_allclose(y, x.numpy(), rtol=0)  # the weight starts at 0
    np.testing.assert_allclose(dx, dy, rtol=0)
    np.testing.assert_allclose(dweight, dy.sum(summed_axes), rtol=1e-5)


def test_groups_fall_back_when_channels_do_not_divide():
    module = RepNetModule(filters=8, output_size=(4, 4), groups=2)
    module(np.ones((1, 8, 8, 3), "float32"))

    assert module.conv.groups == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": 0, "output_size": (4, 4)}, "filters=0"),
        ({"filters": 4, "output_size": (4,)}, r"output_size=\(4,\)"),
    ],
)
def test_module_rejects_bad_shapes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RepNetModule(**kwargs)


def test_connector_adds():
    connector = ActivationConnector()
    x, p = np.ones((1, 2, 2, 3), "float32"), np.full((1, 2, 2, 3), 2.0, "float32")

    np.testing.assert_array_equal(connector([x, p]), np.full((1, 2, 2, 3), 3.0))
    assert isinstance(connector, keras.layers.Add)


# Every custom layer of the package, through the same checks
# (`helpers.run_layer_test`): layer class, constructor arguments, inputs,
# output shape, trainable and non-trainable weight counts.
def _images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


LAYER_CASES = {
    "RepNetModule": (
        RepNetModule, {"filters": 6, "output_size": (4, 4)},
        _images((2, 8, 8, 3)), (2, 4, 4, 6), 6, 4,
    ),
    "SideTop": (
        SideTop, {"filters": 5}, _images((2, 4, 4, 3)), (2, 4, 4, 5), 3, 2,
    ),
    "ActivationConnector": (
        ActivationConnector, {},
        [_images((2, 4, 4, 3)), _images((2, 4, 4, 3), 1)], (2, 4, 4, 3), 0, 0,
    ),
    "ChannelBias": (
        ChannelBias, {}, _images((2, 4, 4, 3)), (2, 4, 4, 3), 1, 0,
    ),
    "MaskedConv2D": (
        masks.MaskedConv2D, {"filters": 4, "kernel_size": 3, "granularity": "kernel"},
        _images((2, 6, 6, 3)), (2, 4, 4, 4), 1, 2,
    ),
    "MaskedDepthwiseConv2D": (
        masks.MaskedDepthwiseConv2D, {"kernel_size": 3, "granularity": "channel"},
        _images((2, 6, 6, 3)), (2, 4, 4, 3), 1, 2,
    ),
    "MaskedDense": (
        masks.MaskedDense, {"units": 5, "granularity": "weight"},
        _images((2, 3)), (2, 5), 1, 2,
    ),
    "InputPerturbation": (
        methods.InputPerturbation, {}, _images((2, 4, 4, 3)), (2, 4, 4, 3), 1, 0,
    ),
    "SignBackward": (
        methods.SignBackward, {},
        [_images((2, 5)), _images((2, 5), 1)], (2, 5), 0, 0,
    ),
    "LabelMapping": (
        methods.LabelMapping, {"num_classes": 3}, _images((2, 10)), (2, 3), 0, 0,
    ),
    "SignGradient": (
        SignGradient, {"activation": "hard_swish"}, _images((2, 4, 4, 3)),
        (2, 4, 4, 3), 0, 0,
    ),
    "StopGradient": (
        StopGradient, {}, _images((2, 1, 1, 3)), (2, 1, 1, 3), 0, 0,
    ),
    "QuantizedGateProduct": (
        QuantizedGateProduct, {},
        [_images((2, 4, 4, 3)), _images((2, 1, 1, 3), 1)], (2, 4, 4, 3), 0, 0,
    ),
    "InferenceMode": (
        methods.baseline_layers.InferenceMode,
        {"layer": keras.layers.BatchNormalization()}, _images((2, 4, 4, 3)),
        (2, 4, 4, 3), 2, 2,
    ),
    "UniformDropout": (
        export_model.UniformDropout, {"rate": 0.5}, _images((2, 8)), (2, 8), 0, 0,
    ),
}


def test_every_custom_layer_has_a_case():
    """A new layer of the package gets the shared checks too."""
    import inspect

    import keras_repnet.core.layers
    import keras_repnet.core.masks
    import keras_repnet.export.model
    import keras_repnet.methods.baseline_layers

    found = {
        name
        for module in (
            keras_repnet.core.layers,
            keras_repnet.core.masks,
            keras_repnet.methods.baseline_layers,
            keras_repnet.export.model,
        )
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, keras.layers.Layer)
        and value.__module__ == module.__name__
        and not name.startswith("_")
        and name != "AddedWeight"  # abstract: ChannelBias, InputPerturbation
    }
    assert found == set(LAYER_CASES)


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_layer(name, tmp_path):
    layer_cls, kwargs, data, shape, trainable, non_trainable = LAYER_CASES[name]
    run_layer_test(
        layer_cls,
        kwargs,
        data,
        expected_output_shape=shape,
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=non_trainable,
        tmp_path=tmp_path,
    )


def test_sign_gradient_passes_the_mask_of_a_positive_input():
    """Forward: the activation, exactly. Backward: `dy * (x > 0)`, against
    the plain autodiff of `where(x > 0, x, 0)`, whose derivative that is."""
    import tensorflow as tf

    x = tf.constant([[-4.0, -1.0, 0.0, 0.5, 2.0, 5.0]])
    upstream = tf.constant([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = SignGradient("hard_swish")(x)
        reference = tf.where(x > 0, x, 0.0)
    np.testing.assert_allclose(y, keras.activations.hard_swish(x))
    np.testing.assert_array_equal(
        tape.gradient(y, x, upstream), tape.gradient(reference, x, upstream)
    )


def test_stop_gradient_holds_a_gate_constant():
    import tensorflow as tf

    x = tf.constant(np.ones((1, 2, 2, 3), "float32"))
    gate = tf.constant(np.full((1, 1, 1, 3), 0.5, "float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, gate])
        y = x * StopGradient()(gate)
    assert tape.gradient(y, gate) is None
    np.testing.assert_array_equal(tape.gradient(y, x), np.full((1, 2, 2, 3), 0.5))


def test_quantized_gate_product_is_the_product_with_a_rounded_gate_gradient():
    """Forward and `x`'s gradient: plain autodiff of `x * gate`, exactly.
    The gate's: within the rounding bound, each product `dy * x` off by at
    most half an int8 step of its channel's largest `|x|`."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 7, 7, 5)), tf.float32)
    gate = tf.constant(rng.uniform(size=(2, 1, 1, 5)), tf.float32)
    upstream = tf.constant(rng.normal(size=(2, 7, 7, 5)), tf.float32)

    @tf.function  # Graph mode, as in a training step.
    def gradients(product):
        with tf.GradientTape() as tape:
            tape.watch([x, gate])
            y = product([x, gate])
        return y, *tape.gradient(y, [x, gate], output_gradients=upstream)

    y, dx, dgate = gradients(QuantizedGateProduct())
    y_ref, dx_ref, dgate_ref = gradients(lambda inputs: inputs[0] * inputs[1])
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    step = np.max(np.abs(x), axis=(1, 2), keepdims=True) / 127
    bound = np.sum(np.abs(upstream) * step / 2, axis=(1, 2), keepdims=True)
    error = np.abs(dgate - dgate_ref)
    assert np.all(error <= bound * (1 + 1e-5))
    assert error.max() > 0  # It reads the rounded copy, not `x`.
