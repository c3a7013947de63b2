"""The private TensorFlow/Keras entry points of `keras_repnet.compat` still
exist and still take effect on the installed versions.

Each test fails loudly when an upgrade moves one: the lean backward would
otherwise silently fall back to plain autodiff (same gradients, lost
memory saving) or the export would store its zeros.
"""

import keras
import numpy as np
import tensorflow as tf
from helpers import random_batch
from helpers import tiny_model

from keras_repnet import backward
from keras_repnet import compat
from keras_repnet.backward import ops as backward_ops
from keras_repnet.core.layers import RepNetModule
from keras_repnet.export import operators


def test_installed_versions_are_supported():
    assert compat.supported(), (
        f"TensorFlow {tf.__version__} / Keras {keras.__version__} outside "
        f"{compat.SUPPORTED}: test it, then widen the range (and setup.cfg)."
    )


def test_override_swaps_the_gradient_registry():
    original = compat.gradient_registry()["Relu"]["type"]
    with backward.override():
        swapped = compat.gradient_registry()["Relu"]["type"]
        x = tf.constant([-1.0, 2.0])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.relu(x)
        backward.reset_counts()
        gradient = tape.gradient(y, x)
    assert swapped is not original
    assert swapped.__name__ == "keras_repnet_Relu_grad"
    assert backward.counts() == {"Relu": 1}, "TensorFlow did not read the rule"
    np.testing.assert_array_equal(gradient, [0.0, 1.0])
    assert compat.gradient_registry()["Relu"]["type"] is original


def test_forward_summary_orders_the_consumers():
    @tf.function
    def traced(x):
        square = tf.square(x)
        summary = backward_ops.forward(x, lambda t: t > 0)
        return square, summary

    graph = traced.get_concrete_function(tf.TensorSpec([2])).graph
    (square,) = [op for op in graph.get_operations() if op.type == "Square"]
    assert [op.type for op in square.control_inputs] == ["Greater"]


def test_lean_training_call_recomputes_the_side_modules(monkeypatch):
    """`RepNetModel._run_through_graph` is still on Keras' call path."""
    model = tiny_model("up")
    images, _ = random_batch(model)
    wrapped = []
    recompute = backward.recompute

    def counting(call):
        wrapped.append(call)
        return recompute(call)

    monkeypatch.setattr(backward, "recompute", counting)
    model(images, training=False)
    assert wrapped == []
    model(images, training=True)
    modules = [layer for layer in model.layers if isinstance(layer, RepNetModule)]
    assert modules and len(wrapped) == len(modules)


def test_converter_writes_zeros_as_fill_ops():
    @tf.function
    def padded(x):
        return tf.concat([x, tf.zeros([100_000])], 0)

    function = padded.get_concrete_function(tf.TensorSpec([1]))

    def convert(unfold):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
        if unfold:
            compat.unfold_splat_constants(converter)
        return converter.convert()

    stored, unfolded = convert(False), convert(True)
    assert len(stored) > 400_000  # 100,000 float32 zeros
    assert len(unfolded) < 10_000, "the converter ignored the switch"
    assert "FILL" in operators.operators(unfolded)


def test_missing_entry_point_says_what_to_do():
    error = compat.unavailable("X", "do Y")
    assert "X is not available in TensorFlow" in str(error)
    assert "tensorflow 2.19-2.21" in str(error) and "do Y" in str(error)
    assert str(compat.unavailable("X")).endswith("install a supported pair.")
