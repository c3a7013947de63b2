"""Helpers shared by the tests: offline assets, tiny models, weight checks."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_repnet

# The repository is cloned with the shared assets beside it.
SHARED_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MOBILENET_V2_WEIGHTS = (
    SHARED_ASSETS
    / "weights"
    / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
FLOWERS = SHARED_ASSETS / "datasets" / "flowers5_128px"
FASHION_MNIST = SHARED_ASSETS / "datasets" / "fashion_mnist"

# The five backbones the issue names, with the channels of their taps.
NAMED_BACKBONES = {
    "MobileNetV2": [16, 24, 32, 64, 160],
    "MobileNetV3Small": [16, 16, 24, 40, 96],
    "MobileNetV3Large": [16, 24, 40, 80, 160],
    "ResNet50": [64, 64, 512, 1024, 2048],
    "EfficientNetB0": [16, 24, 40, 80, 192],
}


def requires(path):
    """Skips a test when an offline asset is absent."""
    return pytest.mark.skipif(
        not os.path.exists(path),
        reason=f"offline asset not found: {path} (clone with ../shared beside)",
    )


def tiny_model(connect="dual", backbone="MobileNetV2", size=32, classes=3, **kwargs):
    """A Rep-Net on a randomly initialised backbone at a tiny resolution;
    `kwargs` go to `keras_repnet.build`."""
    return keras_repnet.build(
        backbone,
        classes,
        input_shape=(size, size, 3),
        weights=None,
        connect=connect,
        **kwargs,
    )


def random_batch(model, batch_size=4, seed=0):
    """Images in [-1, 1] and integer labels that fit `model`."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, *model.input_shape[1:])
    images = rng.uniform(-1, 1, shape).astype("float32")
    labels = rng.integers(0, model.output_shape[-1], batch_size)
    return images, labels


def compile_for_test(model, learning_rate=1e-2, run_eagerly=True):
    """Compiles for integer labels. Eager by default: for the one or two
    steps of a unit test that is ~4x faster than tracing the train step."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_eagerly=run_eagerly,
    )
    return model


def snapshot(weights):
    """Copies of variable values keyed by variable path."""
    return {w.path: np.array(w.numpy()) for w in weights}


def changed(before, weights):
    """Paths of the variables whose value differs from `before`."""
    return [w.path for w in weights if not np.array_equal(before[w.path], w.numpy())]


def assert_round_trip(model, path, inputs):
    """Saves to `.keras`, loads, and checks identical predictions."""
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(
        model.predict(inputs, verbose=0), restored.predict(inputs, verbose=0)
    )
    return restored


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    *,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    tmp_path,
    set_weights=True,
):
    """The checks every custom layer gets, after keras-hub's `run_layer_test`.

    - eager call: the output shape;
    - symbolic call on `keras.Input`s: the same shape, and
      `compute_output_shape` where the layer has one;
    - trainable and non-trainable weight counts;
    - `get_config` / `from_config`: the same config, the same outputs with
      the same weights;
    - a `.keras` round trip of a functional model around the layer: the
      same predictions;
    - a gradient step: every trainable weight gets a finite gradient.

    `input_data` is one array or a list of arrays (a layer of several
    inputs). With `set_weights`, the weights are randomised first, so that
    zero-initialised weights do not hide a round trip that drops them.
    """
    inputs = input_data if isinstance(input_data, list) else [input_data]
    call_input = inputs if isinstance(input_data, list) else inputs[0]
    layer = layer_cls(**init_kwargs)
    output = layer(call_input)
    assert tuple(output.shape) == tuple(expected_output_shape)
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    if set_weights:
        rng = np.random.default_rng(0)
        for weight in layer.weights:
            value = rng.normal(size=weight.shape)
            if "variance" in weight.path:
                value = np.abs(value) + 0.5  # A variance stays positive.
            weight.assign(value.astype(weight.dtype))
    output = np.asarray(layer(call_input))

    # Symbolic call, with the batch size left open.
    symbolic = [keras.Input(tuple(x.shape[1:]), dtype=str(x.dtype)) for x in inputs]
    symbolic_input = symbolic if isinstance(input_data, list) else symbolic[0]
    symbolic_output = layer_cls(**init_kwargs)(symbolic_input)
    assert tuple(symbolic_output.shape[1:]) == tuple(expected_output_shape[1:])
    if type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape:
        shapes = [tuple(x.shape) for x in inputs]
        computed = layer.compute_output_shape(
            shapes if isinstance(input_data, list) else shapes[0]
        )
        assert tuple(computed) == tuple(expected_output_shape)

    # Config round trip.
    clone = layer_cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(call_input)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(call_input), output, rtol=1e-5, atol=1e-6)

    # `.keras` round trip inside a functional model.
    model = keras.Model(symbolic_input, layer(symbolic_input))
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(
        restored.predict(call_input, verbose=0),
        model.predict(call_input, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )

    # A training step reaches every trainable weight.
    if layer.trainable_weights:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = keras.ops.sum(keras.ops.square(layer(call_input, training=True)))
        gradients = tape.gradient(loss, layer.trainable_weights)
        for weight, gradient in zip(layer.trainable_weights, gradients):
            assert gradient is not None, f"no gradient reaches {weight.path}"
            assert np.all(np.isfinite(gradient)), weight.path
