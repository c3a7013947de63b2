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


def tiny_model(connect="dual", backbone="MobileNetV2", size=32, classes=3):
    """A Rep-Net on a randomly initialised backbone at a tiny resolution."""
    return keras_repnet.build(
        backbone,
        classes,
        input_shape=(size, size, 3),
        weights=None,
        connect=connect,
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
