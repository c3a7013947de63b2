import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import NAMED_BACKBONES
from helpers import assert_round_trip
from helpers import changed
from helpers import compile_for_test
from helpers import random_batch
from helpers import snapshot
from helpers import tiny_model

import keras_repnet
from keras_repnet.core import graph
from keras_repnet import ActivationConnector
from keras_repnet import RepNetModule


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.mark.parametrize(
    "connect, modules, connectors",
    [("up", 4, 4), ("dual", 4, 4), ("down", 4, 4), ("none", 4, 0), ("all", 16, 16)],
)
def test_connect_modes_build_and_train_one_step(connect, modules, connectors):
    model = compile_for_test(tiny_model(connect))
    images, labels = random_batch(model)

    loss, _ = model.train_on_batch(images, labels)

    assert np.isfinite(loss)
    assert len(layers_of(model, RepNetModule)) == modules
    assert len(layers_of(model, ActivationConnector)) == connectors


def _readers(model, layer):
    """The layers that read `layer`'s output in `model`'s graph."""
    _, _, consumers = graph.walk(model)
    return {node.operation.name for node in consumers[id(layer.output)]}


def test_dual_sum_feeds_both_networks():
    model = tiny_model("dual")
    connector = model.get_layer("repnet_connector_0")
    readers = _readers(model, connector)

    # The sum goes on in the backbone (both branches of the residual block
    # that follows) and into the next side module.
    assert readers == {"block_2_expand", "block_2_add", "repnet_module_1"}


def test_up_sum_feeds_only_the_side_network():
    model = tiny_model("up")
    connector = model.get_layer("repnet_connector_0")
    readers = _readers(model, connector)
    block_input = model.get_layer("block_2_expand").input

    assert readers == {"repnet_module_1"}
    assert graph.producer(block_input).name == "block_1_project_BN"
    # The head reads both networks' pooled features.
    assert model.get_layer("repnet_join") is not None


@pytest.mark.parametrize("connect, side_reads", [("down", "repnet_module_1"), ("up", "repnet_connector_1")])
def test_one_way_modes_route_the_sum(connect, side_reads):
    model = tiny_model(connect)
    next_module = model.get_layer("repnet_module_2")

    assert graph.producer(next_module.input).name == side_reads


def test_only_side_and_head_train():
    model = compile_for_test(tiny_model("dual"))
    frozen = snapshot(model.non_trainable_weights)
    trainable = snapshot(model.trainable_weights)
    images, labels = random_batch(model, batch_size=8)

    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)

    # Backbone weights never move; only side batch-norm statistics do.
    moved = changed(frozen, model.non_trainable_weights)
    assert moved and all(
        p.startswith("repnet_module_") and "moving_" in p for p in moved
    ), moved
    # Every side module, backbone shift and the head learn. (A module's last
    # norm scale starts at zero, so its first step trains only that norm.)
    norms = {
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        and not layer.name.startswith("repnet_")
    }
    shifts = {p.split("/")[0] for p in trainable if p.endswith("_shift/bias")}
    assert shifts == {f"{name}_shift" for name in norms}
    assert all(
        p.startswith(("repnet_module_", "repnet_head")) or p.split("/")[0] in shifts
        for p in trainable
    )
    owners = {p.split("/")[0] for p in changed(trainable, model.trainable_weights)}
    assert owners == {p.split("/")[0] for p in trainable}


def test_connector_plan_names_the_taps_behind_the_shifts():
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(64, 64, 3)
    )
    model = keras_repnet.build(backbone, 3)  # Shifted: MobileNetV2 gets them.

    plan = keras_repnet.connector_plan(model)

    assert [row["tap"] for row in plan] == [
        tap.layer_name for tap in keras_repnet.select_taps(backbone)
    ]


@pytest.mark.parametrize(
    "backbone, shifts, expected",
    [
        ("MobileNetV2", "auto", True),  # ReLU6 only: masks.
        ("MobileNetV3Small", "auto", True),  # "sign-int8" (the rule).
        ("MobileNetV2", False, False),
        ("MobileNetV3Small", False, False),
    ],
)
def test_backbone_shifts_follow_the_cost_of_their_backward(
    backbone, shifts, expected
):
    model = keras_repnet.build(
        backbone, 3, input_shape=(32, 32, 3), weights=None,
        backbone_shifts=shifts,
    )
    added = [
        layer for layer in model.layers if isinstance(layer, keras_repnet.methods.ChannelBias)
    ]
    assert bool(added) == expected
    if expected:  # One after each batch norm, starting at zero.
        norms = [
            layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)
            and not layer.name.startswith("repnet_")
        ]
        assert len(added) == len(norms)
        assert all(not np.any(layer.bias) for layer in added)


def _defaults_of(model):
    from keras_repnet.core.layers import QuantizedGateProduct
    from keras_repnet.core.layers import RepNetModule

    modules = [l for l in model.layers if isinstance(l, RepNetModule)]
    return {
        "modules": len(modules),
        "momentum": {m.norm_momentum for m in modules},
        "int8 gates": sum(isinstance(l, QuantizedGateProduct) for l in model.layers),
        "shifts": sum(
            isinstance(l, keras_repnet.methods.ChannelBias) for l in model.layers
        ),
        "shift rate": model.recipe.shift_learning_rate,
    }


def test_defaults_follow_the_backbone_by_one_rule():
    from keras_repnet.core.shift_rule import APPROXIMATE_SHIFT_DEFAULTS

    def defaults(backbone, **kwargs):
        return _defaults_of(keras_repnet.build(
            backbone, 3, input_shape=(64, 64, 3), weights=None, **kwargs
        ))

    # MobileNetV3Small: 9 squeeze-excite gates read int8 copies; six
    # modules, their norms at 0.9, the shifts at their own rate.
    assert APPROXIMATE_SHIFT_DEFAULTS["backbone_shifts"] == "sign-int8"
    v3 = defaults("MobileNetV3Small")
    assert v3["shifts"] > 0
    assert v3 | {"shifts": None} == {
        "modules": 6, "momentum": {0.9}, "int8 gates": 9, "shifts": None,
        "shift rate": 3e-3,
    }
    # MobileNetV2: exact shifts (masks only) at the side's rate, Keras'
    # momentum, one module per level.
    v2 = defaults("MobileNetV2")
    assert v2["shifts"] > 0
    assert v2 | {"shifts": None} == {
        "modules": 4, "momentum": {0.99}, "int8 gates": 0, "shifts": None,
        "shift rate": None,
    }
    # Arguments given win, and a recipe's own shift rate stays.
    given = defaults(
        "MobileNetV3Small", num_modules=4, side_norm_momentum=0.99,
        backbone_shifts=False,
    )
    assert given == {"modules": 4, "momentum": {0.99}, "int8 gates": 0,
                     "shifts": 0, "shift rate": None}
    own = defaults(
        "MobileNetV3Small", recipe=keras_repnet.Recipe(shift_learning_rate=1e-3)
    )
    assert own["shift rate"] == 1e-3
    # The method registry builds the same model and recipe.
    by_name = keras_repnet.build_method(
        "repnet", "MobileNetV3Small", 3, input_shape=(64, 64, 3), weights=None
    )
    assert _defaults_of(by_name) == v3


@pytest.mark.parametrize(
    "shifts, signed, held, rounded",
    [(True, False, False, False), ("masks", True, True, False),
     ("sign", True, False, False), ("held-gates", False, True, False),
     ("sign-int8", True, False, True)],
)
def test_approximate_shift_modes_place_their_layers(shifts, signed, held, rounded):
    from keras_repnet.core.layers import QuantizedGateProduct
    from keras_repnet.core.layers import SignGradient
    from keras_repnet.core.layers import StopGradient

    # At 64 px the last feature maps are 2x2, so every gate (1x1) differs
    # from the feature it scales.
    model = keras_repnet.build(
        "MobileNetV3Small", 3, input_shape=(64, 64, 3), weights=None,
        backbone_shifts=shifts,
    )
    count = lambda cls: sum(isinstance(l, cls) for l in model.layers)  # noqa: E731
    # MobileNetV3Small: hard-swish after 18 layers, 9 squeeze-excite gates.
    assert count(SignGradient) == (18 if signed else 0)
    assert count(StopGradient) == (9 if held else 0)
    assert count(QuantizedGateProduct) == (9 if rounded else 0)
    assert count(keras_repnet.methods.ChannelBias) > 0


def test_new_model_starts_from_the_backbone_features():
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    model = keras_repnet.build(backbone, 3)
    images, _ = random_batch(model)
    pooled = keras.Model(model.input, model.get_layer("repnet_pool").output)

    np.testing.assert_allclose(
        pooled.predict(images, verbose=0),
        keras.ops.mean(backbone(images), axis=(1, 2)),
        atol=1e-5,
    )


@pytest.mark.parametrize("connect", ["dual", "none"])
def test_keras_file_round_trip(connect, tmp_path):
    model = compile_for_test(tiny_model(connect))
    images, labels = random_batch(model)
    model.train_on_batch(images, labels)

    restored = assert_round_trip(model, tmp_path / "model.keras", images)

    assert restored.count_params() == model.count_params()
    assert len(restored.trainable_weights) == len(model.trainable_weights)
    restored.train_on_batch(images, labels)


@pytest.mark.parametrize("name", sorted(NAMED_BACKBONES))
def test_named_backbones_build_and_summarize(name):
    model = keras_repnet.build(
        getattr(keras.applications, name),
        num_classes=5,
        weights=None,
        input_shape=(128, 128, 3),
    )
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    text = keras_repnet.describe(model, print_fn=lambda _: None)

    counts = keras_repnet.parameter_counts(model)

    # Where the shifts' exact backward would keep float activations
    # (EfficientNet's swish, MobileNetV3's hard-swish, squeeze-excite), the
    # defaults of `APPROXIMATE_SHIFT_DEFAULTS`: six modules.
    approximate = name in ("EfficientNetB0", "MobileNetV3Large", "MobileNetV3Small")
    assert "repnet_connector_0" in "\n".join(lines)
    assert f"{6 if approximate else 4} modules" in text and "Frozen:" in text
    assert model.output_shape == (None, 5)
    # `side_top_channels="auto"`: the side network's last feature widened to
    # the backbone's output channels where it is narrower (not ResNet50's).
    output_channels = model.get_layer("repnet_pool").input.shape[-1]
    widened = NAMED_BACKBONES[name][-1] < output_channels
    top_params = 0
    if widened:
        top = model.get_layer("repnet_side_top")
        assert top.filters == output_channels
        top_params = sum(np.prod(w.shape) for w in top.trainable_weights)
    else:
        assert "repnet_side_top" not in [layer.name for layer in model.layers]
    # `side_width="auto"`: its modules within 10% of the backbone.
    assert counts["side"] - top_params <= 0.1 * counts["frozen"]
    # One shift per channel of each backbone batch norm; the head is the
    # rest.
    norms = [
        layer for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        and not layer.name.startswith("repnet_")
    ]
    channels = sum(layer.moving_mean.shape[0] for layer in norms)
    assert counts["shifts"] == channels
    assert counts["head"] == model.get_layer("repnet_head").count_params()
    assert "backbone shifts" in text


def test_side_top_widens_what_the_head_reads_of_the_side_network():
    """`side_top_channels`: a 1x1 conv, batch norm and ReLU between the side
    network's last feature and the head, counted with the side network."""
    plain, top = (
        keras_repnet.build(
            "MobileNetV2", 3, input_shape=(64, 64, 3), weights=None,
            side_top_channels=channels,
        )
        for channels in (0, 48)
    )
    last = plain.get_layer("repnet_side_pool").input.shape[-1]
    assert top.get_layer("repnet_side_top").output.shape[1:] == (2, 2, 48)
    before, after = (keras_repnet.parameter_counts(m) for m in (plain, top))
    assert after["side"] - before["side"] == last * 48 + 2 * 48  # Conv, norm.
    assert after["head"] - before["head"] == (48 - last) * 3  # The head's input.
    assert after["frozen"] == before["frozen"]  # Its statistics are side's.
    # One multiply-add per kernel weight and output position (2x2).
    added = keras_repnet.multiply_adds(top)["dense"] - keras_repnet.multiply_adds(
        plain
    )["dense"]
    assert added == 2 * 2 * last * 48 + (48 - last) * 3


def test_side_top_widens_to_the_backbones_output_channels_by_default():
    """`side_top_channels="auto"`: the side network's last feature widened to
    the channels the head pools of the backbone (MobileNetV3Small: 96 to
    576); nothing where the head reads no side network."""
    model, dual = (
        keras_repnet.build(
            "MobileNetV3Small", 3, input_shape=(64, 64, 3), weights=None,
            connect=connect,
        )
        for connect in ("up", "dual")
    )
    top = model.get_layer("repnet_side_top")
    assert top.input.shape[-1] == 96
    assert top.filters == model.get_layer("repnet_pool").input.shape[-1] == 576
    assert not any(isinstance(layer, keras_repnet.SideTop) for layer in dual.layers)


def test_backbones_deeper_than_pythons_recursion_limit_build_and_load(
    tmp_path,
):
    """Keras' functional graph walk recurses once per layer of depth: a
    Rep-Net whose shifts take its main path past Python's default limit of
    1000 (EfficientNetV2L's did) builds, saves and loads under it."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        x = inputs = keras.Input((64, 64, 3))
        for _ in range(5):  # Strides 2 to 32, 90 norms each.
            x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
            for _ in range(90):
                x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        model = keras_repnet.build(keras.Model(inputs, x), 3, weights=None)
        model.save(tmp_path / "deep.keras")
        restored = keras.models.load_model(tmp_path / "deep.keras")
    finally:
        sys.setrecursionlimit(previous)
    assert len(model.layers) > 1300
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3))
    np.testing.assert_allclose(restored(images), model(images), atol=1e-6)


def test_default_taps_start_at_stride_4_and_num_modules():
    model = keras_repnet.build(
        "MobileNetV2", 3, input_shape=(224, 224, 3), weights=None
    )
    six = keras_repnet.build(
        "MobileNetV2", 3, input_shape=(224, 224, 3), weights=None,
        num_modules=6,
    )

    shapes = [m.output.shape[1] for m in layers_of(model, RepNetModule)]
    assert shapes == [56, 28, 14, 7]
    assert len(layers_of(six, RepNetModule)) == 6


def test_side_modules_compute_at_half_resolution():
    model = tiny_model("up", size=64)
    module = layers_of(model, RepNetModule)[1]  # 8x8 tap, reads 16x16

    assert module.output.shape[1:3] == (8, 8)
    assert module.input.shape[1:3] == (16, 16)
    assert module.pool.pool_size == (4, 4)  # 16x16 -> 4x4 convolutions
    assert module.resize is not None


def test_custom_taps():
    model = tiny_model()
    chosen = keras_repnet.build(
        "MobileNetV2", 3, input_shape=(32, 32, 3), weights=None,
        taps=["block_3_project_BN", "block_6_project_BN"],
    )

    assert len(layers_of(chosen, RepNetModule)) == 2
    assert chosen.count_params() < model.count_params()


def test_mirrored_strategy_on_cpu_devices():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        model = compile_for_test(tiny_model("dual"), run_eagerly=False)
    images, labels = random_batch(model, batch_size=8)

    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)

    assert strategy.num_replicas_in_sync == len(devices) == 2
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_classes": 1}, ValueError, "num_classes=1"),
        ({"connect": "sideways"}, ValueError, "connect='sideways'"),
        ({"backbone": "MobileNetV9"}, ValueError, "Unknown backbone 'MobileNetV9'"),
        ({"weights": "/nowhere/w.h5"}, FileNotFoundError, "/nowhere/w.h5"),
        ({"input_shape": (8, 8, 3)}, ValueError, r"refused input_shape=\(8, 8, 3\)"),
        ({"taps": ["Conv1"]}, ValueError, r"Cannot connect at \['Conv1'\]"),
        ({"dropout": 1.0}, ValueError, "dropout=1.0"),
        ({"side_width": "wide"}, ValueError, "side_width='wide'"),
        ({"side_downscale": 0}, ValueError, "side_downscale=0"),
        ({"side_norm_momentum": 1.5}, ValueError, "side_norm_momentum=1.5"),
        ({"backbone_shifts": "yes"}, ValueError, "backbone_shifts='yes'"),
        ({"num_modules": 0}, ValueError, "num_modules=0"),
        ({"side_top_channels": -1}, ValueError, "side_top_channels=-1"),
        ({"side_top_channels": True}, ValueError, "side_top_channels=True"),
        ({"side_top_channels": "wide"}, ValueError, "side_top_channels='wide'"),
        (
            {"side_top_channels": 8, "connect": "dual"}, ValueError,
            "side_top_channels=8, connect='dual'",
        ),
    ],
)
def test_bad_arguments_say_what_was_received(kwargs, error, match):
    arguments = {
        "backbone": "MobileNetV2",
        "num_classes": 3,
        "input_shape": (32, 32, 3),
        "weights": None,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        keras_repnet.build(**arguments)


def test_backbone_without_fixed_input_is_refused():
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False)
    with pytest.raises(ValueError, match=r"fixed .* input.*\(None, None, 3\)"):
        keras_repnet.build(backbone, 3)


def test_a_random_backbone_draws_a_warning():
    with pytest.warns(keras_repnet.backbones.RandomWeightsWarning, match="weights=None"):
        keras_repnet.build("MobileNetV3Small", 3, input_shape=(32, 32, 3), weights=None)


def test_data_of_another_image_size_is_caught_with_what_to_pass():
    model = tiny_model("up", size=32)
    splits = keras_repnet.data.load(
        (np.zeros((8, 20, 20, 3)), np.arange(8) % 3), image_size=40, batch_size=4
    )
    model.recipe.compile(model, total_steps=2)
    with pytest.raises(ValueError, match=r"takes 32x32.*holds 40x40.*input_shape=\(40, 40, 3\)"):
        model.fit(splits.train, epochs=1, verbose=0)


def test_the_recipe_sets_the_input_size():
    recipe = keras_repnet.Recipe(image_size=48)
    model = keras_repnet.build("MobileNetV3Small", 3, weights=None, recipe=recipe)
    assert model.input_shape == (None, 48, 48, 3)
    model = keras_repnet.build_method("ft-last", "MobileNetV3Small", 3, weights=None,
                                      recipe=recipe)
    assert model.input_shape == (None, 48, 48, 3)
