import keras
import numpy as np
import pytest

from keras_repnet import ActivationConnector
from keras_repnet import RepNetModule


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
