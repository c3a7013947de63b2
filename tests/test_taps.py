import keras
import pytest
from helpers import NAMED_BACKBONES

import keras_repnet
from keras_repnet.core import taps


def application(name, size=224, **kwargs):
    return getattr(keras.applications, name)(
        weights=None, include_top=False, input_shape=(size, size, 3), **kwargs
    )


@pytest.mark.parametrize("name", sorted(NAMED_BACKBONES))
def test_one_tap_per_downsampling_stage(name):
    found = keras_repnet.find_taps(application(name))

    assert [t.shape[:2] for t in found] == [(s, s) for s in (112, 56, 28, 14, 7)]
    assert [t.channels for t in found] == NAMED_BACKBONES[name]
    assert {t.reason for t in found} == {"downsampling"}


def test_taps_are_block_outputs_not_inner_tensors():
    found = keras_repnet.find_taps(application("MobileNetV2"))

    # The output of each downsampling block (its linear bottleneck), not the
    # expanded tensors inside it; the stem level ends at the first block.
    assert [t.layer_name for t in found] == [
        "expanded_conv_project_BN",
        "block_1_project_BN",
        "block_3_project_BN",
        "block_6_project_BN",
        "block_13_project_BN",
    ]


def test_squeeze_excite_branches_are_ignored():
    backbone = application("MobileNetV3Small")
    found = keras_repnet.find_taps(backbone)

    for tap in found:
        layer = backbone.get_layer(tap.layer_name)
        assert not isinstance(layer, keras.layers.GlobalAveragePooling2D)
        assert tap.shape[0] > 1


def test_pooling_stage_is_tapped_after_the_pool():
    found = keras_repnet.find_taps(application("ResNet50"))

    assert found[1].layer_name == "pool1_pool"
    assert found[2].layer_name == "conv3_block1_out"


def test_mode_all_adds_every_block_boundary():
    backbone = application("MobileNetV2", size=64)
    downsampling = keras_repnet.find_taps(backbone)
    everywhere = keras_repnet.find_taps(backbone, mode="all")

    assert len(everywhere) == 16
    assert set(downsampling) <= set(everywhere)
    assert "block_2_add" in [t.layer_name for t in everywhere]


def test_plain_functional_cnn_without_residuals():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same")(x)
    model = keras.Model(inputs, x)

    found = keras_repnet.find_taps(model)

    assert [(t.shape, type(model.get_layer(t.layer_name))) for t in found] == [
        ((16, 16, 8), keras.layers.MaxPooling2D),
        ((8, 8, 32), keras.layers.Conv2D),
    ]


def test_feature_output_cuts_a_classification_top():
    model = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(96, 96, 3), include_top=True
    )

    feature = taps.feature_output(model)

    assert tuple(feature.shape[1:3]) == (3, 3)


def test_no_downsampling_is_refused():
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))

    with pytest.raises(ValueError, match="never reduces"):
        keras_repnet.find_taps(model)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional keras.Model.*Received: Net"):
        keras_repnet.find_taps(Net())


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="Received: mode='every'"):
        keras_repnet.find_taps(application("MobileNetV2", size=32), mode="every")


def test_levels_without_a_cut_point_get_their_cell_output():
    # Each cell reads the two cells before it, as NASNet's do, so no tensor
    # at 16x16 is on every input-output path: the main path jumps from the
    # stem (32x32) to the last cell (8x8).
    inputs = keras.Input((32, 32, 3))
    stem = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    previous, x = stem, stem
    for strides in (2, 1, 2, 1):
        a = keras.layers.Conv2D(8, 3, strides=strides, padding="same")(x)
        pool = previous.shape[1] // a.shape[1]
        b = keras.layers.AveragePooling2D(pool)(previous) if pool > 1 else previous
        b = keras.layers.Conv2D(8, 1)(b)
        previous, x = x, keras.layers.Concatenate()([a, b])
    backbone = keras.Model(inputs, x)

    found = keras_repnet.find_taps(backbone)

    assert [t.shape[:2] for t in found] == [(16, 16), (8, 8)]
    cell = backbone.get_layer(found[0].layer_name)
    assert isinstance(cell, keras.layers.Concatenate)


def test_nasnet_gets_a_tap_per_level():
    found = keras_repnet.select_taps(application("NASNetMobile", size=96))

    assert [t.shape[:2] for t in found] == [(s, s) for s in (24, 12, 6, 3)]
