"""Tests for keras_repnet.core.masks and core.flops: masked layers against
plain Keras layers and plain autodiff, sparsity, multiply-adds, export."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import keras_repnet
from keras_repnet.core import flops
from keras_repnet.core import masks

SIZE = 32


def _layer_and_input(kind):
    rng = np.random.default_rng(0)
    if kind == "dense":
        layer, x = keras.layers.Dense(5), rng.normal(size=(2, 4))
    elif kind == "depthwise":
        layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")
        x = rng.normal(size=(2, 6, 6, 4))
    else:
        layer = keras.layers.Conv2D(8, 3, strides=2)
        x = rng.normal(size=(2, 7, 7, 4))
    x = x.astype("float32")
    layer(x)  # Build.
    layer.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    )
    return layer, x


def _random_scores(model_or_layers, seed=0):
    rng = np.random.default_rng(seed)
    layers = getattr(model_or_layers, "layers", model_or_layers)
    for layer in layers:
        if masks.is_masked(layer):
            layer.score.assign(rng.normal(size=layer.score.shape).astype("float32"))


@pytest.mark.parametrize("granularity", masks.GRANULARITIES)
@pytest.mark.parametrize("kind", ["conv", "depthwise", "dense"])
def test_masked_layer_is_the_plain_layer_on_the_kept_weights(kind, granularity):
    layer, x = _layer_and_input(kind)
    masked = masks.masked_copy(layer, granularity)
    assert [w.name for w in masked.trainable_weights] == ["mask_score"]
    np.testing.assert_array_equal(masked(x), layer(x))  # Starts unmasked.
    _random_scores([masked])
    keep = np.broadcast_to(
        masked.score.numpy() > 0, layer.kernel.shape
    ).astype("float32")
    # One score covers a kernel (KH x KW) or an output channel.
    if granularity != "weight" and kind != "dense":
        assert len(np.unique(keep.reshape(-1, *keep.shape[2:]), axis=0)) == 1
    reference = keras.layers.deserialize(keras.layers.serialize(layer))
    reference.set_weights([layer.kernel.numpy() * keep, layer.bias.numpy()])
    np.testing.assert_allclose(masked(x), reference(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(masked.baked()(x), reference(x))
    assert masks.sparsity(keras.Sequential([masked]))["sparsity"] == pytest.approx(
        1 - keep.mean()
    )

    # Straight-through: the score gets the gradient of a float mask
    # multiplying the kernel, summed over the weights it covers.
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(tf.sin(masked(x)))
    actual = tape.gradient(value, masked.score)
    expected = _float_mask_gradient(layer, keep, x)
    covered = tuple(
        i for i, n in enumerate(masked.score.shape) if n < expected.shape[i]
    )
    expected = np.sum(expected, axis=covered, keepdims=True)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def _float_mask_gradient(layer, keep, x):
    """d sum(sin(y)) / d factor at factor = `keep`, where y is the layer's
    operation on its kernel times a float factor, by plain autodiff."""
    factor = tf.constant(keep)
    with tf.GradientTape() as tape:
        tape.watch(factor)
        weighted = layer.kernel * factor
        if isinstance(layer, keras.layers.Dense):
            y = tf.matmul(x, weighted)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            y = tf.nn.depthwise_conv2d(x, weighted, [1, 1, 1, 1], "SAME")
        else:
            y = tf.nn.conv2d(x, weighted, 2, "VALID")
        value = tf.reduce_sum(tf.sin(y + layer.bias))
    return tape.gradient(value, factor).numpy()


def test_scores_by_magnitude_start_small_weights_near_the_threshold():
    layer, _ = _layer_and_input("conv")
    masked = masks.masked_copy(layer, "kernel", 0.1, by_magnitude=True)
    kernel_magnitude = np.abs(layer.kernel.numpy()).mean(axis=(0, 1))
    scores = masked.score.numpy()[0, 0]
    np.testing.assert_allclose(
        scores, 0.1 * kernel_magnitude / np.abs(layer.kernel.numpy()).mean(),
        rtol=1e-5,
    )
    assert (scores > 0).all()  # Every weight kept at the start.


def test_masked_layers_round_trip_through_keras_files(tmp_path):
    layer, x = _layer_and_input("conv")
    masked = masks.masked_copy(layer, "channel", initial_score=0.5)
    _random_scores([masked])
    model = keras.Sequential([keras.Input(x.shape[1:]), masked])
    model.save(tmp_path / "masked.keras")
    restored = keras.models.load_model(tmp_path / "masked.keras")
    np.testing.assert_array_equal(restored(x), model(x))
    assert restored.layers[0].granularity == "channel"
    assert restored.layers[0].initial_score == 0.5


def test_multiply_adds_of_mobilenet_v2_and_of_masked_kernels():
    # Sandler et al. 2018, Table 4: MobileNetV2 1.0 at 224 px, 300M
    # multiply-adds (convolutions and the classifier).
    backbone = keras.applications.MobileNetV2(weights=None)
    assert flops.multiply_adds(backbone)["dense"] == pytest.approx(300e6, rel=0.01)

    image = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same")
    model = keras.Model(image, keras.layers.Dense(2)(conv(image)))
    dense = 8 * 8 * 3 * 3 * 3 * 4 + 8 * 8 * 4 * 2  # By hand.
    assert flops.multiply_adds(model) == {
        "dense": dense, "masked": dense, "granularity": None
    }
    masked = masks.masked_copy(conv, "kernel")
    model = keras.Model(image, keras.layers.Dense(2)(masked(image)))
    masked.score.assign(np.where(np.arange(12).reshape(1, 1, 3, 4) < 5, -1.0, 1.0))
    cost = flops.multiply_adds(model)
    assert cost["masked"] == dense - 5 * 8 * 8 * 3 * 3  # 5 kernels skipped.
    assert cost["granularity"] == "kernel"


def test_build_masks_every_frozen_convolution_and_describes_it():
    model = keras_repnet.build_method(
        "repnet-mask", "MobileNetV3Small", 3, input_shape=(SIZE, SIZE, 3),
        weights=None, backbone_mask="channel",
    )
    plain = keras_repnet.build("MobileNetV3Small", 3, input_shape=(SIZE, SIZE, 3),
                               weights=None)
    backbone_weighted = sum(
        type(layer) in masks.MASKED_CLASSES and not layer.trainable
        for layer in plain.layers
    )
    masked = [layer for layer in model.layers if masks.is_masked(layer)]
    assert len(masked) == backbone_weighted  # Squeeze-excite convs too.
    assert {layer.granularity for layer in masked} == {"channel"}
    counts = keras_repnet.parameter_counts(model)
    assert counts["mask"] == sum(layer.score.shape[-1] * (
        layer.score.shape[-2] if isinstance(layer, masks.MaskedDepthwiseConv2D) else 1
    ) for layer in masked)
    assert counts["frozen"] == keras_repnet.parameter_counts(plain)["frozen"]
    _random_scores(model)
    text = keras_repnet.describe(model, print_fn=lambda s: None)
    report = masks.sparsity(model)
    assert f"{report['sparsity']:.1%} of {report['masked_weights']:,}" in text
    assert "M multiply-adds" in text
    with pytest.raises(ValueError, match="backbone_mask=None"):
        keras_repnet.build_method("repnet-mask", "MobileNetV2", 3, weights=None,
                                  backbone_mask=None)
    with pytest.raises(ValueError, match="Received: backbone_mask='pixel'"):
        keras_repnet.build("MobileNetV2", 3, weights=None, backbone_mask="pixel")


def test_export_applies_the_masks_and_trains_the_rest(tmp_path):
    model = keras_repnet.build_method(
        "repnet-mask", "MobileNetV2", 3, input_shape=(SIZE, SIZE, 3),
        weights=None, dropout=0.0,
    )
    _random_scores(model)
    path = keras_repnet.export_tflite(model, tmp_path / "masked.tflite", batch_size=2)
    interpreter = Interpreter(model_path=str(path))
    pixels = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(
        "float32"
    )
    logits = interpreter.get_signature_runner("infer")(x=pixels)["logits"]
    expected = model.predict(
        keras.applications.mobilenet_v2.preprocess_input(pixels.copy()), verbose=0
    )
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    names = interpreter.get_signature_runner("get_weights")(unused=np.int32(0))
    assert not [name for name in names if "mask_score" in name]
    # Backbone kernels stay in the file as constants, not device weights.
    assert {n for n in names if n.endswith("kernel")} == {
        weight for weight in names if weight.startswith("repnet") and weight.endswith("kernel")
    }
    loss = interpreter.get_signature_runner("train")(
        x=pixels, y=np.array([0, 1], "int32"), learning_rate=np.float32(1e-3)
    )["loss"]
    assert np.isfinite(loss)
