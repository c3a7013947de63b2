"""Tests for keras_repnet.gradients and RepNetModel's lean backward pass."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_repnet
from keras_repnet import compat
from keras_repnet import gradients
from keras_repnet.core.models import RepNetModel
import helpers

RULE_TOLERANCE = 1e-5
# A whole model sums in another order under the builtin rules (convolution
# gradients as other ops): float32 round-off then reaches 1.6e-4 of the
# floor below on some CPUs (CI, MobileNetV2 block 6's shift); a wrong rule
# is off by order 1.
MODEL_TOLERANCE = 1e-3


def relative_error(actual, expected, floor=0.0):
    """Largest difference over the largest expected value (or `floor`, if
    larger: float32 round-off scales with the summands, and a gradient that
    nearly cancels, e.g. behind saturated ReLU6s, is far smaller than them)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(np.abs(expected).max(), floor)
    return np.abs(actual - expected).max() / (scale + 1e-30)


def tape_gradients(fn, tensors, output_gradient, **override):
    """Gradients of `fn(*tensors)` w.r.t. `tensors`, with TensorFlow's rules
    or, given `override` arguments, inside `gradients.override(...)`."""
    tensors = [tf.constant(t) for t in tensors]

    def compute():
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            y = fn(*tensors)
        return tape.gradient(y, tensors, output_gradients=output_gradient)

    if not override:
        return compute()
    with gradients.override(**override):
        return compute()


def assert_rule_matches(fn, tensors, seed=0):
    rng = np.random.default_rng(seed)
    shape = fn(*[tf.constant(t) for t in tensors]).shape
    dy = tf.constant(rng.normal(size=shape).astype("float32"))
    expected = tape_gradients(fn, tensors, dy)
    gradients.reset_counts()
    actual = tape_gradients(fn, tensors, dy, builtins_only=True)
    assert gradients.counts(), "no rule ran"
    for a, e in zip(actual, expected):
        assert relative_error(a, e) < RULE_TOLERANCE


def op_types(function, *args):
    graph = function.get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


def random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


CONV_CASES = [
    (size, kernel, stride, padding)
    for size in (7, 8)
    for kernel in (1, 3)
    for stride in (1, 2)
    for padding in ("SAME", "VALID")
]


@pytest.mark.parametrize("size,kernel,stride,padding", CONV_CASES)
def test_conv2d_rule(size, kernel, stride, padding):
    assert_rule_matches(
        lambda x, w: tf.nn.conv2d(x, w, stride, padding),
        [random(2, size, size + 1, 3), random(kernel, kernel, 3, 5, seed=1)],
    )


@pytest.mark.parametrize("size,kernel,stride,padding", CONV_CASES)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_rule(size, kernel, stride, padding, multiplier):
    assert_rule_matches(
        lambda x, w: tf.nn.depthwise_conv2d(
            x, w, [1, stride, stride, 1], padding
        ),
        [
            random(2, size, size + 1, 3),
            random(kernel, kernel, 3, multiplier, seed=1),
        ],
    )


@pytest.mark.parametrize("size,window,stride,padding", CONV_CASES)
def test_avg_pool_rule(size, window, stride, padding):
    assert_rule_matches(
        lambda x: tf.nn.avg_pool2d(x, window + 1, stride, padding),
        [random(2, size, size + 1, 3)],
    )


@pytest.mark.parametrize("size", [(8, 9), (3, 4), (10, 14)])
@pytest.mark.parametrize("half_pixel_centers", [True, False])
def test_resize_bilinear_rule(size, half_pixel_centers):
    assert_rule_matches(
        lambda x: tf.raw_ops.ResizeBilinear(
            images=x, size=size, half_pixel_centers=half_pixel_centers
        ),
        [random(2, 5, 7, 3)],
    )


def test_lean_relu_rules_keep_no_float_output():
    """In a traced step, the backward pass has no ReluGrad/Relu6Grad and no
    cast of a mask to float: ReLUs are differentiated by selecting with
    masks unpacked from bits."""
    x = tf.constant(random(2, 8, 8, 3) * 4)
    w = tf.Variable(random(1, 1, 3, 4))

    def loss(x):
        y = tf.nn.relu6(tf.nn.conv2d(x, w, 1, "SAME"))
        return tf.reduce_sum(tf.nn.relu(y - 1.0) ** 2)

    def step(lean):
        @tf.function
        def traced(x):
            with tf.GradientTape() as tape:
                value = loss(x)
            return tape.gradient(value, w)

        if not lean:
            return traced, traced(x)
        with gradients.override():
            return traced, traced(x)

    plain_fn, expected = step(lean=False)
    gradients.reset_counts()
    lean_fn, actual = step(lean=True)
    assert gradients.counts() == {"Relu": 1, "Relu6": 1}
    np.testing.assert_array_equal(actual, expected)
    types = op_types(lean_fn, x)
    assert not types & {"ReluGrad", "Relu6Grad"}
    assert {"SelectV2", "BitwiseAnd"} <= types
    graph = lean_fn.get_concrete_function(x).graph
    casts = {
        op.get_attr("DstT") for op in graph.get_operations() if op.type == "Cast"
    }
    assert casts <= {tf.uint8, tf.uint64}  # Masks to bits, never to float.
    assert {"ReluGrad", "Relu6Grad"} <= op_types(plain_fn, x)


def test_lean_hard_swish_rule():
    x = tf.constant(random(2, 4, 4, 3) * 4)
    w = tf.Variable(random(1, 1, 3, 3, seed=1))

    def step():
        with tf.GradientTape() as tape:
            z = tf.nn.conv2d(x, w, 1, "SAME")
            hard_swish = z * (tf.nn.relu6(z + 3.0) / 6.0)
            other = z * tf.reduce_mean(z)  # Not a hard-swish: TF's rule.
            value = tf.reduce_sum(hard_swish**2 + other)
        return tape.gradient(value, w)

    expected = tf.function(step)()
    gradients.reset_counts()
    with gradients.override():
        actual = tf.function(step)()
    # One rewritten Mul; the gate's ReLU6 got no gradient to differentiate.
    assert gradients.counts() == {"Mul": 1}
    assert relative_error(actual, expected) < RULE_TOLERANCE


def test_lean_depthwise_after_pad_needs_no_slice():
    x = tf.constant(random(2, 8, 8, 4))
    w = tf.Variable(random(1, 1, 4, 4))
    kernel = tf.constant(random(3, 3, 4, 1, seed=1))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            y = tf.nn.conv2d(x, w, 1, "VALID")
            y = tf.pad(y, [[0, 0], [0, 1], [0, 1], [0, 0]])
            y = tf.nn.depthwise_conv2d(y, kernel, [1, 2, 2, 1], "VALID")
            value = tf.reduce_sum(y**2)
        return tape.gradient(value, w)

    expected = step(x)
    step = tf.function(step.python_function)
    with gradients.override():
        actual = step(x)
    assert relative_error(actual, expected) < RULE_TOLERANCE
    assert "Slice" not in op_types(step, x)


def test_override_restores_registry_when_nested():
    registry = compat.gradient_registry()
    before = {t: registry[t] for t in gradients.BUILTIN_RULES}
    with gradients.override() as outer:
        assert gradients.is_active("Relu6")
        with gradients.override(builtins_only=True):
            assert gradients.is_active("AvgPool")
        assert not gradients.is_active("AvgPool")
        for op_type in outer:
            assert registry[op_type] is not before[op_type]
    for op_type, entry in before.items():
        assert registry[op_type] is entry
    assert not gradients.is_active("Relu6")


def test_override_is_thread_safe():
    registry = compat.gradient_registry()
    before = {t: registry[t] for t in gradients.BUILTIN_RULES}
    start = threading.Barrier(8)
    errors = []

    def worker(index):
        try:
            start.wait()
            for step in range(50):
                with gradients.override(builtins_only=bool((index + step) % 2)):
                    assert gradients.is_active("Relu")
        except Exception as error:  # Reported below.
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for op_type, entry in before.items():
        assert registry[op_type] is entry


def test_recompute_matches_and_updates_moving_stats_once():
    layer = keras.layers.BatchNormalization()
    x = tf.constant(random(4, 3, 3, 2) * 3 + 1)
    layer.build(x.shape)

    def run(fn):
        for v, value in zip(layer.variables, initial):
            v.assign(value)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.relu(fn(x))
            value = tf.reduce_sum(y * y)
        grads = tape.gradient(value, [x, *layer.trainable_variables])
        return grads, [v.numpy() for v in layer.variables]

    initial = [v.numpy() + 0.5 for v in layer.variables]
    call = lambda t: layer(t, training=True)  # noqa: E731
    expected, expected_state = run(call)
    actual, actual_state = run(gradients.recompute(call))
    for a, e in zip(actual + actual_state, expected + expected_state):
        assert relative_error(a, e) < RULE_TOLERANCE


def randomised_model(backbone, size, **kwargs):
    """A Rep-Net with every trainable variable random (the zero-initialised
    gammas of the side modules would hide most gradients; mask scores drop
    about half the weights) and no dropout."""
    model = keras_repnet.build(
        backbone, 3, input_shape=(size, size, 3), weights=None, dropout=0.0,
        **kwargs,
    )
    rng = np.random.default_rng(1)
    for v in model.trainable_variables:
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return model


def model_gradients(model, x, y, **override):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.lean_backward = bool(override)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    if not override:
        return step(x, y)
    with gradients.override(**override):
        return step(x, y)


@pytest.mark.parametrize(
    "backbone,size,mask,shifts,top",
    [
        ("MobileNetV2", 32, None, "auto", 16),  # With the side's last conv.
        # The exact backward through hard-swish and squeeze-excite (the
        # defaults' "sign-int8" approximates it in the model itself).
        ("MobileNetV3Small", 48, None, True, 0),
        ("MobileNetV2", 32, "kernel", "auto", 0),  # Scores: filter gradients too.
    ],
)
def test_model_gradients_equal_plain_autodiff(backbone, size, mask, shifts, top):
    model = randomised_model(
        backbone, size, backbone_mask=mask, backbone_shifts=shifts,
        side_top_channels=top,
    )
    x, y = helpers.random_batch(model, batch_size=2)
    expected = model_gradients(model, x, y)
    for builtins_only in (False, True):
        gradients.reset_counts()
        actual = model_gradients(model, x, y, builtins_only=builtins_only)
        counts = gradients.counts()
        assert counts["Relu6"] and counts["DepthwiseConv2dNative"], counts
        if builtins_only:
            assert counts["Conv2D"] and counts["AvgPool"], counts
        if backbone == "MobileNetV3Small":
            assert counts["Mul"], counts  # hard-swish
        # Backbone shifts deep behind random blocks get gradients of 1e-6;
        # measure those against 1e-3 of the model's largest gradient.
        floor = 1e-3 * max(float(np.abs(np.asarray(e)).max()) for e in expected)
        for v, a, e in zip(model.trainable_variables, actual, expected):
            error = relative_error(a, e, floor)
            assert error < MODEL_TOLERANCE, (builtins_only, v.path, error)


def test_eager_fit_applies_override_only_when_lean():
    model = helpers.tiny_model(size=32)
    x, y = helpers.random_batch(model)
    helpers.compile_for_test(model, run_eagerly=True)
    before = helpers.snapshot(model.trainable_weights)
    gradients.reset_counts()
    model.fit(x, y, epochs=1, verbose=0)
    assert gradients.counts().get("Relu6")
    assert helpers.changed(before, model.trainable_weights)
    model.lean_backward = False
    gradients.reset_counts()
    model.fit(x, y, epochs=1, verbose=0)
    assert not gradients.counts()
    assert not gradients.is_active("Relu6")


def test_fit_under_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    with strategy.scope():
        model = helpers.tiny_model(size=32)
        helpers.compile_for_test(model, run_eagerly=False)
    assert model.lean_backward
    x, y = helpers.random_batch(model, batch_size=4)
    before = helpers.snapshot(model.trainable_weights)
    gradients.reset_counts()
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert gradients.counts().get("Relu6")
    assert helpers.changed(before, model.trainable_weights)
    assert not gradients.is_active("Relu6")


def test_lean_gradients_under_mirrored_strategy_equal_plain_autodiff():
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    with strategy.scope():
        model = randomised_model("MobileNetV2", 32)
    x, y = helpers.random_batch(model, batch_size=4)
    halves = [(x[:2], y[:2]), (x[2:], y[2:])]

    def replica_gradients(images, labels):
        # The loss function, not a `keras.losses.Loss`, which would divide
        # by the number of replicas in a replica context.
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    labels, model(images, training=True), from_logits=True
                )
            )
        return tape.gradient(loss, model.trainable_variables)

    def distributed(part):
        return strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(halves[context.replica_id_in_sync_group][part])
        )

    @tf.function
    def lean_step(images, labels):
        per_replica = strategy.run(replica_gradients, args=(images, labels))
        return [
            strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None)
            for g in per_replica
        ]

    model.lean_backward = True
    gradients.reset_counts()
    with gradients.override():
        actual = lean_step(distributed(0), distributed(1))
    assert gradients.counts()["Relu6"], gradients.counts()
    # Each replica's batch norms see its own half of the batch: the
    # reference is plain autodiff on each half, summed.
    expected = [
        a + b
        for a, b in zip(*(model_gradients(model, *half) for half in halves))
    ]
    floor = 1e-3 * max(float(np.abs(np.asarray(e)).max()) for e in expected)
    for v, a, e in zip(model.trainable_variables, actual, expected):
        assert relative_error(a, e, floor) < MODEL_TOLERANCE, v.path


def test_keras_round_trip_keeps_config(tmp_path):
    model = helpers.tiny_model(size=32)
    assert isinstance(model, RepNetModel)
    assert model.backbone == "MobileNetV2"
    model.lean_backward = False
    x, _ = helpers.random_batch(model, batch_size=2)
    restored = helpers.assert_round_trip(model, tmp_path / "model.keras", x)
    assert isinstance(restored, RepNetModel)
    assert restored.lean_backward is False
    assert restored.backbone == "MobileNetV2"


def test_invalid_arguments():
    model = helpers.tiny_model(size=32)
    with pytest.raises(ValueError, match="lean_backward"):
        RepNetModel(model.inputs, model.outputs, lean_backward="yes")
    with pytest.raises(ValueError, match="backbone"):
        RepNetModel(model.inputs, model.outputs, backbone=3)
