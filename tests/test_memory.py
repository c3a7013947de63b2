"""Tests of the analytic memory profile, the measured peak and the CLI."""

import collections
import concurrent.futures
import contextlib
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import tensorflow as tf
from helpers import tiny_model
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.framework import meta_graph
from tensorflow.python.grappler import tf_optimizer

import keras_repnet
from keras_repnet import gradients
from keras_repnet import memory
from keras_repnet import methods

CLI = Path(sys.executable).parent / "keras-repnet"


def _method(name, size=32):
    return methods.build_method(
        name, "MobileNetV2", 3, input_shape=(size, size, 3), weights=None
    )


@pytest.fixture(scope="module")
def repnet():
    return tiny_model()


def test_profile_counts_are_consistent(repnet):
    model = repnet
    profile = memory.profile(model, batch_size=2)
    counts = keras_repnet.parameter_counts(model)
    assert profile.trainable_params == counts["trainable"]
    assert profile.frozen_int8_bytes * 4 == profile.frozen_bytes
    assert profile.frozen_bytes == 4 * profile.frozen_params
    assert profile.trainable_bytes == 4 * profile.trainable_params
    assert profile.gradient_bytes == profile.trainable_bytes
    assert profile.optimizer_bytes == 2 * profile.trainable_bytes
    # Plain autodiff keeps at least what the TinyTL accounting counts (the
    # lean backward recomputes the side modules, so it may keep less).
    plain = memory.profile(model, 2, lean_backward=False).ours
    assert 0 < profile.ideal.stored_bytes <= plain.stored_bytes
    assert 0 < profile.ideal.peak_bytes <= plain.peak_bytes
    for ours in (profile.ours, plain):
        assert 0 < ours.stored_bytes <= ours.peak_bytes


def test_activations_scale_with_the_batch(repnet):
    one, four = memory.profile(repnet, 1), memory.profile(repnet, 4)
    assert four.ideal.stored_bytes == 4 * one.ideal.stored_bytes
    assert four.trainable_bytes == one.trainable_bytes


def test_lean_backward_keeps_less_than_plain_autodiff(repnet):
    assert repnet.lean_backward  # build()'s default, read by profile().
    lean = memory.profile(repnet, 2)
    plain = memory.profile(repnet, 2, lean_backward=False)
    assert lean.lean_backward and not plain.lean_backward
    assert lean.ours.stored_bytes < plain.ours.stored_bytes
    assert lean.ours.peak_bytes < plain.ours.peak_bytes
    assert lean.ideal == plain.ideal


def test_masks_keep_the_backbone_activations():
    plain, masked = (
        memory.profile(_method(name), 2).ours for name in ("repnet", "repnet-mask")
    )
    assert masked.stored_bytes > 2 * plain.stored_bytes


def test_repnet_stores_less_than_full_fine_tuning(repnet):
    ours = memory.profile(repnet, 2, lean_backward=False)
    full = memory.profile(_method("ft-full"), 2, lean_backward=False)
    assert ours.ideal.stored_bytes < full.ideal.stored_bytes
    assert ours.ours.stored_bytes < full.ours.stored_bytes
    assert ours.trainable_params < full.trainable_params


def test_frozen_backbone_stores_only_the_head_input():
    last = memory.profile(_method("ft-last"), 2, lean_backward=False)
    head_input = 2 * 4 * 1280  # Pooled MobileNetV2 features, fp32.
    assert last.ideal.stored_bytes == head_input
    assert last.ours.stored_bytes == head_input


@pytest.mark.parametrize(
    "name", ["repnet-none", "repnet-all", "bn-only", "tinytl", "mobiletl"]
)
def test_other_connect_modes_and_methods_profile(name):
    model = _method(name)
    plain = memory.profile(model, 2, lean_backward=False)
    assert 0 < plain.ideal.peak_bytes <= plain.ours.peak_bytes
    assert 0 < memory.profile(model, 2).ours.peak_bytes


def test_ours_follows_the_lean_rules_declarations(repnet, monkeypatch):
    before = memory.profile(repnet, 2).ours
    # Declare that the lean ReLU6 rule kept the float output, as
    # TensorFlow's `Relu6Grad` does: the lean count keeps more.
    relu6 = gradients.LEAN_RULES["Relu6"]
    monkeypatch.setattr(relu6, "keeps", gradients.TENSORFLOW_KEEPS["Relu6"])
    float_relu6 = memory.profile(repnet, 2).ours
    assert float_relu6.stored_bytes > before.stored_bytes
    # The depthwise rule no longer fusing the padding: a padded gradient.
    depthwise = gradients.LEAN_RULES["DepthwiseConv2dNative"]
    monkeypatch.setattr(depthwise, "keeps", gradients.Keeps())
    assert memory.profile(repnet, 2).ours.peak_bytes > float_relu6.peak_bytes
    monkeypatch.undo()
    assert memory.profile(repnet, 2).ours == before


def test_ours_follows_the_recompute_policy(repnet, monkeypatch):
    recomputed = memory.profile(repnet, 2).ours
    monkeypatch.setattr(
        keras_repnet.core.models, "recomputed", lambda operation: False
    )
    kept = memory.profile(repnet, 2).ours
    assert kept.stored_bytes > recomputed.stored_bytes


def _tensorflow_kept_bytes(model, batch_size):
    """Bytes of the forward tensors that the backward ops of TensorFlow's
    optimised (grappler) training graph read: the ground truth of `ours`.

    Backward ops are those that depend on the loss gradient, i.e. on the
    softmax cross-entropy op; tensors without a batch axis are weights,
    but for the masks' bits (uint8, `keras_repnet.backward.bits`).
    Relies on TensorFlow's private grappler binding (pinned TF version).
    """
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return [loss, *tape.gradient(loss, model.trainable_variables)]

    lean = model.lean_backward
    with gradients.override() if lean else contextlib.nullcontext():
        function = step.get_concrete_function(
            tf.TensorSpec((batch_size, *model.input_shape[1:])),
            tf.TensorSpec((batch_size,), tf.int32),
        )
    sizes = {
        t.name: t.shape.num_elements() * t.dtype.size
        for op in function.graph.get_operations()
        for t in op.outputs
        if t.shape.is_fully_defined()
        and t.shape.rank
        and (t.shape[0] == batch_size or t.dtype == tf.uint8)
    }
    graph_def = meta_graph.create_meta_graph_def(graph=function.graph)
    graph_def.collection_def["train_op"].node_list.value.extend(
        t.name for t in function.outputs
    )
    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.min_graph_nodes = -1
    nodes = tf_optimizer.OptimizeGraph(config, graph_def).node
    source = lambda name: name.lstrip("^").split(":")[0]  # noqa: E731
    consumers = collections.defaultdict(list)
    for node in nodes:
        for name in node.input:
            consumers[source(name)].append(node.name)
    (loss,) = [
        n.name for n in nodes if n.op == "SparseSoftmaxCrossEntropyWithLogits"
    ]
    backward, stack = set(), list(consumers[loss])
    while stack:
        name = stack.pop()
        if name not in backward:
            backward.add(name)
            stack.extend(consumers[name])
    inputs = {n.name for n in nodes if n.op in ("Placeholder", "_Arg")}
    kept = {}
    for node in nodes:
        if node.name not in backward or node.op in ("Shape", "ShapeN"):
            continue
        for name in node.input:
            tensor = name if ":" in name else name + ":0"
            if not name.startswith("^") and source(name) not in (
                backward | inputs  # The batch exists before the step.
            ):
                kept[tensor] = sizes.get(tensor, 0)
    return sum(kept.values())


@pytest.mark.parametrize(
    "backbone, lean, options",
    [
        ("MobileNetV2", True, {}),
        ("MobileNetV3Small", True, {}),
        ("MobileNetV3Small", False, {}),
        # The masks' gradients read every masked convolution's input.
        ("MobileNetV2", True, {"backbone_mask": "kernel"}),
        # The sign rule's bits, and the squeeze-excite products' operands
        # (in int8, and their scales, with "sign-int8").
        ("MobileNetV3Small", True, {"backbone_shifts": "sign"}),
        ("MobileNetV3Small", True, {"backbone_shifts": "sign-int8"}),
    ],
)
def test_ours_keeps_what_tensorflow_keeps(backbone, lean, options):
    model = keras_repnet.build(
        backbone, 3, input_shape=(32, 32, 3), weights=None, connect="dual",
        **options,
    )
    model.lean_backward = lean
    ours = memory.profile(model, 2).ours.stored_bytes
    # The profile also counts the head's inputs (a few KB).
    assert ours == pytest.approx(_tensorflow_kept_bytes(model, 2), abs=16_000)


def test_profile_after_keras_load(repnet, tmp_path):
    repnet.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert memory.profile(restored, 2).to_dict() == (
        memory.profile(repnet, 2).to_dict()
    )


def test_nested_and_sequential_models_are_walked_through():
    backbone = keras_repnet.backbones.resolve("MobileNetV2", (32, 32, 3), None)
    backbone.trainable = False
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    nested = keras.Sequential([keras.Input((32, 32, 3)), backbone, *head])
    flat = keras.Model(backbone.input, head[1](head[0](backbone.output)))
    assert memory.profile(nested, 2).ours == memory.profile(flat, 2).ours


def test_format_shows_the_breakdown(repnet):
    text = str(memory.profile(repnet, 2))
    for part in ("frozen parameters", "optimizer state", "ideal / ours"):
        assert part in text


def test_bad_input_errors(repnet):
    with pytest.raises(ValueError, match="batch_size"):
        memory.profile(repnet, 0)
    with pytest.raises(ValueError, match="functional"):
        memory.profile(keras.layers.Dense(3), 2)
    with pytest.raises(ValueError, match="Unknown method 'sgd'"):
        memory.measure("sgd", "MobileNetV2", image_size=32, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        memory.measure("repnet", "MobileNetV2", image_size=32, batch_size=0)
    with pytest.raises(ValueError, match="Unknown backbone"):
        memory.measure("repnet", "MobileNet9", image_size=32, batch_size=2)


@pytest.mark.slow
def test_measure_runs_in_a_fresh_process():
    # Two processes at once: each reads its own peak. MobileNet (v1) is the
    # quickest named backbone to build and trace.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        training, floor = pool.map(
            lambda method: memory.measure(
                method, "MobileNet", image_size=64, batch_size=2, steps=1
            ),
            ["repnet", memory.INFERENCE],
        )
    assert training.peak_bytes > floor.peak_bytes > 0
    low, high = training.peak_bytes_range
    assert low <= training.peak_bytes <= high  # The median of the steps.
    assert training.step_seconds > 0
    assert training.lean_backward
    assert training.profile["trainable_params"] > 0
    assert floor.profile["trainable_params"] == 0


@pytest.mark.slow
def test_measured_peak_does_not_depend_on_the_executor_order(monkeypatch):
    # With one inter-op thread TensorFlow's executor runs a side branch
    # that nothing waits for as late as it can: each backbone shift's
    # gradient, a sum of its incoming gradient, would keep that gradient
    # alive to the end of the backward pass (2.3x the count before
    # `AddedWeight`'s gradient waited for it).
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")
    measured = memory.measure(
        "repnet", "MobileNetV2", image_size=96, batch_size=4, steps=1
    )
    counted = measured.profile["ours"]["peak_bytes"]
    assert 0.8 * counted < measured.peak_bytes < 1.2 * counted


def test_measure_refuses_other_platforms(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(RuntimeError, match="needs Linux"):
        memory.measure("repnet", "MobileNetV2", image_size=32, batch_size=2)


def _cli(*args):
    completed = subprocess.run(
        [str(CLI), "memory", *args], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_cli_prints_the_analytic_breakdown():
    out = _cli("--backbone", "MobileNet", "--image-size", "32")
    assert "batch 8, lean backward" in out
    assert "step peak, ideal / ours" in out
    assert "with plain autodiff" in out
    assert "Measured" not in out


@pytest.mark.slow
def test_cli_measures():
    out = _cli(
        "--backbone=MobileNet",
        "--image-size=32",
        "--batch-size=2",
        "--method=ft-last",
        "--measure",
    )
    assert "Measured step peak" in out
    assert "Inference floor" in out
