import dataclasses
import types
"""Tests for keras_repnet.methods: every method builds, trains what it should
and nothing else, and survives a `.keras` round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_round_trip
from helpers import changed
from helpers import compile_for_test
from helpers import random_batch
from helpers import snapshot

import keras_repnet
from keras_repnet import methods
from keras_repnet.core.builder import HEAD_NAME
from keras_repnet.core import masks
from keras_repnet.core.layers import RepNetModule
from keras_repnet.core.layers import SideTop

SIZE = 32


def _weights_of(model, layer_types):
    """Paths of the variables of the model's layers of `layer_types`."""
    return {
        w.path
        for layer in model.layers
        if isinstance(layer, layer_types)
        for w in layer.weights
    }


def _head(model):
    return {w.path for w in model.get_layer(HEAD_NAME).weights}


# Per method: the variables that may change in a step, and a subset that
# must (a Rep-Net module's convolutions get no gradient in the first step,
# as its last batch-norm scale starts at zero).
def _expected(name, model):
    if name.startswith("repnet"):
        side = _weights_of(model, RepNetModule) | _weights_of(model, SideTop)
        shifts = _weights_of(model, methods.ChannelBias)  # `build()`'s "auto".
        # Only the scores of masked layers: their frozen kernels stay. Deep
        # scores of a random backbone at 32 px may get no gradient yet.
        scores = [
            layer.score.path for layer in model.layers if masks.is_masked(layer)
        ]
        allowed = side | shifts | set(scores) | _head(model)
        return allowed, shifts | set(scores[:1]) | _head(model)
    if name == "ft-full":
        everything = {w.path for w in model.weights}
        return everything, {w.path for w in model.trainable_weights}
    if name == "ft-last":
        return _head(model), _head(model)
    if name == "bn-only":
        norms = _weights_of(model, keras.layers.BatchNormalization)
        return norms | _head(model), norms | _head(model)
    if name == "tinytl":
        shifts = _weights_of(model, methods.ChannelBias)
        residuals = _weights_of(model, RepNetModule)
        return shifts | residuals | _head(model), shifts | _head(model)
    if name == "mobiletl":
        shifts = _weights_of(model, methods.ChannelBias)
        return shifts | _head(model), shifts | _head(model)
    perturbation = _weights_of(model, methods.InputPerturbation)
    if name == "adv-rep":
        return perturbation, perturbation
    return perturbation | _head(model), perturbation | _head(model)


# Methods with their own builder, and Rep-Net once (its connect modes are
# covered by test_builder.py).
OWN_METHODS = [n for n, m in methods.METHODS.items() if not m.is_repnet]


def _count(model, layer_type):
    return sum(isinstance(layer, layer_type) for layer in model.layers)


# Structure found by walking MobileNetV2's graph: find_taps(mode="all")
# gives 16 block boundaries, so 15 blocks get a lite residual; every one of
# its 52 batch norms gets a shift; the top 5 blocks (4 inverted residuals
# after the 5th boundary from the end, the 160->320 block, the last 1x1
# convolution) have 16 norms and 11 ReLUs.
STRUCTURE = {
    "repnet": {methods.ChannelBias: 52},
    # Every Conv2D and DepthwiseConv2D of MobileNetV2 (no top): 52.
    "repnet-mask": {methods.ChannelBias: 52, masks.MaskedConv2D: 35,
                    masks.MaskedDepthwiseConv2D: 17},
    "tinytl": {RepNetModule: 15, methods.ChannelBias: 52},
    "mobiletl": {methods.ChannelBias: 16, methods.SignBackward: 11},
    "adv-rep": {methods.InputPerturbation: 1, methods.LabelMapping: 1},
    "adv-rep-last": {methods.InputPerturbation: 1},
}


@pytest.mark.parametrize("name", ["repnet", "repnet-mask", *OWN_METHODS])
def test_method_starts_from_backbone_trains_its_variables_round_trips(
    name, tmp_path
):
    backbone = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)
    )
    model = methods.build_method(name, backbone, 3)
    assert model.output_shape == (None, 3)
    for layer_type, count in STRUCTURE.get(name, {}).items():
        assert _count(model, layer_type) == count, layer_type.__name__
    images, labels = random_batch(model)
    if name != "adv-rep":  # New modules, shifts, perturbations start at 0.
        features = keras.Model(
            model.input, model.get_layer("repnet_pool").input
        )
        np.testing.assert_allclose(
            features(images), backbone(images), rtol=1e-5, atol=1e-5
        )
    compile_for_test(model)
    before = snapshot(model.weights)
    model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    moved = set(changed(before, model.weights))
    allowed, required = _expected(name, model)
    assert moved <= allowed, sorted(moved - allowed)[:5]
    assert required <= moved, sorted(required - moved)[:5]
    assert_round_trip(model, tmp_path / f"{name}.keras", images)


def test_repnet_names_select_their_build_arguments(monkeypatch):
    received = []
    monkeypatch.setattr(
        methods.registry,
        "build",
        lambda *args, **kwargs: received.append(kwargs) or types.SimpleNamespace(),
    )
    repnet_methods = [n for n, m in methods.METHODS.items() if m.is_repnet]
    for name in repnet_methods:
        methods.build_method(name, "MobileNetV2", 3, weights=None)
    assert [kwargs["connect"] for kwargs in received] == [
        "up", "up", "up", "dual", "down", "none", "all"
    ]
    assert [kwargs.get("backbone_mask") for kwargs in received[:3]] == [
        None, None, "kernel"
    ]
    assert [kwargs.get("backbone_shifts") for kwargs in received[:2]] == [
        None,  # `build()`'s default: shifts on.
        False,
    ]
    assert received[0]["name"] == "repnet_mobilenetv2"
    with pytest.raises(ValueError, match="sets \\['connect'\\] itself"):
        methods.build_method("repnet", "MobileNetV2", 3, connect="dual")


def test_sign_backward_passes_values_forward_and_a_mask_back():
    x = tf.constant([[-2.0, -0.5, 0.5, 3.0, 8.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = keras.layers.ReLU(max_value=6.0)(x)
        out = methods.SignBackward()([x, y])
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(tape.gradient(out, x), [[0, 0, 1, 1, 1]])


def test_label_mapping_sums_source_probabilities_per_group():
    logits = np.random.default_rng(0).normal(size=(2, 10)).astype("float32")
    mapped = methods.LabelMapping(3)(logits)
    probabilities = keras.ops.softmax(logits)
    expected = np.stack(
        [np.sum(probabilities[:, g::3], axis=-1) for g in range(3)], axis=-1
    )
    np.testing.assert_allclose(
        keras.ops.softmax(mapped), expected, rtol=1e-5, atol=1e-6
    )


def test_adv_rep_uses_the_backbone_top_when_the_weights_have_one(tmp_path):
    shape = (SIZE, SIZE, 3)
    with_top = tmp_path / "top.weights.h5"
    keras.applications.MobileNetV2(weights=None, input_shape=shape).save_weights(
        with_top
    )
    model = methods.build_method(
        "adv-rep", "MobileNetV2", 3, input_shape=shape, weights=str(with_top)
    )
    names = {layer.name for layer in model.layers}
    assert "predictions" in names and "adv_random_top" not in names
    random = methods.build_method(
        "adv-rep", "MobileNetV2", 3, input_shape=shape, weights=None
    )
    assert "adv_random_top" in {layer.name for layer in random.layers}
    assert [w.path for w in random.trainable_weights] == [
        "adv_perturbation/perturbation"
    ]


def test_recipes_and_argument_errors():
    for name, method in methods.METHODS.items():
        recipe = methods.recipe_for(name)
        assert recipe is method.recipe and isinstance(recipe, keras_repnet.Recipe)
    # Only the rates differ between methods: one run, many methods.
    assert {
        dataclasses.replace(
            m.recipe, side_learning_rate=1.0, head_learning_rate=1.0
        )
        for m in methods.METHODS.values()
    } == {
        dataclasses.replace(
            keras_repnet.Recipe(), side_learning_rate=1.0, head_learning_rate=1.0
        )
    }
    with pytest.raises(ValueError, match="Unknown method 'lora'"):
        methods.recipe_for("lora")
    with pytest.raises(ValueError, match="has no option"):
        methods.build_method("ft-last", "MobileNetV2", 3, kernel_size=3)
    with pytest.raises(ValueError, match="num_classes"):
        methods.build_method("ft-last", "MobileNetV2", 1)


@pytest.mark.parametrize("method", ["ft-full", "bn-only"])
def test_batch_norm_variants_of_the_methods_that_train_norms(method):
    """`bn_momentum` sets the moving statistics' momentum; `bn_inference`
    keeps the norms in inference mode in training (their statistics stay,
    their scales and shifts train), the Keras guide's recipe."""
    images, labels = random_batch(
        keras_repnet.build("MobileNetV2", 3, input_shape=(SIZE, SIZE, 3),
                           weights=None), 8
    )
    fast = methods.build_method(method, "MobileNetV2", 3, weights=None,
                                input_shape=(SIZE, SIZE, 3), bn_momentum=0.9)
    norms = [l for l in fast.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert norms and {l.momentum for l in norms} == {0.9}

    held = methods.build_method(method, "MobileNetV2", 3, weights=None,
                                input_shape=(SIZE, SIZE, 3), bn_inference=True)
    wrapped = [l.layer for l in held.layers
               if isinstance(l, methods.baseline_layers.InferenceMode)]
    assert len(wrapped) == len(norms)
    before = snapshot(held.weights)
    compile_for_test(held, learning_rate=0.1)
    held.fit(images, labels, epochs=1, verbose=0)
    moved = set(changed(before, held.weights))
    assert moved and not any("moving" in path for path in moved)
    # The scales still get a gradient (a random backbone makes it tiny).
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(held(images, training=True) ** 2)
    gammas = [w for w in held.trainable_weights if w.path.endswith("gamma")]
    assert gammas and all(g is not None for g in tape.gradient(loss, gammas))
    with pytest.raises(ValueError, match="no effect"):
        methods.build_method(method, "MobileNetV2", 3, weights=None,
                             input_shape=(SIZE, SIZE, 3), bn_momentum=0.9,
                             bn_inference=True)
