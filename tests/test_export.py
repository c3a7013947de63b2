"""export_tflite: builtin-only training signatures that match Keras."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from helpers import random_batch
from helpers import tiny_model

import keras_repnet
from keras_repnet import export
from keras_repnet.core import layers
from keras_repnet.export import operators
from keras_repnet.export import zeros

SIZE = 32
CLASSES = 3
BATCH_SIZE = 4
# Keras' default Adam rate. At 1e-2, Adam turns float-noise-sized gradients
# (of the side batch norms behind 1x1 feature maps) into full-size steps and
# the two runs drift apart chaotically after ~8 steps, as two TensorFlow runs
# with different op orders would.
LEARNING_RATE = 1e-3
# The v2 export's peak rates (side, head): the head's is scaled by 0.1.
V2_RATES = (1e-2, 1e-3)
LABEL_SMOOTHING = 0.1
CLASS_NAMES = ["ant", "bee", "cat"]


def _pixels(model, seed):
    """A batch of pixels in [0, 255] and labels."""
    images, labels = random_batch(model, BATCH_SIZE, seed)
    return (images + 1) * 127.5, labels.astype("int32")


def _runners(path):
    interpreter = Interpreter(model_path=str(path), num_threads=2)
    return SimpleNamespace(
        **{key: interpreter.get_signature_runner(key) for key in export.SIGNATURES}
    )


def _export_v3_small(folder, shift_learning_rate=None, **build_options):
    """A MobileNetV3Small Rep-Net without dropout (so that LiteRT and Keras
    draw no random numbers) and its export, before any training. The export
    takes every training setting from the model's recipe."""
    recipe = keras_repnet.Recipe(
        side_learning_rate=LEARNING_RATE,
        head_learning_rate=LEARNING_RATE,
        label_smoothing=LABEL_SMOOTHING,
        shift_learning_rate=shift_learning_rate,
    )
    keras.utils.set_random_seed(0)  # The same initialisation in every run.
    model = tiny_model(
        "up", "MobileNetV3Small", SIZE, CLASSES, dropout=0.0, recipe=recipe,
        **build_options,
    )
    path = folder / "v3.tflite"
    returned = keras_repnet.export.export_tflite(
        model, path, batch_size=BATCH_SIZE, class_names=CLASS_NAMES
    )
    assert returned == path
    return SimpleNamespace(model=model, path=path, initial=model.get_weights())


@pytest.fixture(scope="module")
def v3_small(tmp_path_factory):
    """MobileNetV3Small without backbone shifts."""
    return _export_v3_small(tmp_path_factory.mktemp("v3"), backbone_shifts=False)


@pytest.fixture(scope="module")
def v3_small_sign_shifts(tmp_path_factory):
    """MobileNetV3Small with its defaults (`APPROXIMATE_SHIFT_DEFAULTS`):
    the backbone shifts with MobileNetV3's sign rule and int8 gate features
    at their own rate, six modules, side norms at momentum 0.9; and the side
    network's last convolution (`side_top_channels`)."""
    return _export_v3_small(
        tmp_path_factory.mktemp("v3_sign"),
        side_top_channels=32,
        # Below the side's rate, so that a device running the shifts at the
        # side's rate would end with other weights than Keras.
        shift_learning_rate=LEARNING_RATE / 10,
    )


@pytest.fixture(scope="module")
def v2_cli(tmp_path_factory):
    """A MobileNetV2 Rep-Net (with dropout) exported by the console script
    with an int8 backbone."""
    folder = tmp_path_factory.mktemp("v2")
    keras.utils.set_random_seed(0)  # The same initialisation in every run.
    model = keras_repnet.build(
        "MobileNetV2", CLASSES, input_shape=(SIZE, SIZE, 3), weights=None
    )
    model.save(folder / "model.keras")
    (folder / "results.json").write_text(json.dumps({"class_names": CLASS_NAMES}))
    command = [
        str(Path(sys.executable).parent / "keras-repnet"),
        "export",
        f"--model={folder / 'model.keras'}",
        f"--out={folder / 'model.tflite'}",
        f"--batch-size={BATCH_SIZE}",
        f"--side_lr={V2_RATES[0]}",
        f"--head_lr={V2_RATES[1]}",
        "--quantize_backbone",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "builtin LiteRT ops only" in result.stdout
    return SimpleNamespace(model=model, path=folder / "model.tflite")


@pytest.fixture(params=["v3_small", "v2_cli"])
def exported(request):
    return request.getfixturevalue(request.param)


def test_signatures_use_builtin_operators_only(exported):
    assert operators.non_builtin_operators(exported.path) == []
    assert set(operators.signatures(exported.path)) == set(export.SIGNATURES)
    used = operators.operators(exported.path)
    assert "TRANSPOSE_CONV" in used or "BATCH_MATMUL" in used


def test_train_step_uses_operators_xnnpack_runs(exported):
    """The export's rewrites (`export.xnnpack`): ReLU masks stored as int8
    through QUANTIZE/DEQUANTIZE, no ADD_N and no TILE left in `train`
    (LiteRT's reference kernels, outside XNNPACK), and the step still
    matches Keras (`test_training_matches_keras_under_the_models_recipe`)."""
    used = set(operators.operators(exported.path, signature="train"))
    assert {"QUANTIZE", "DEQUANTIZE"} <= used
    assert not used & {"ADD_N", "TILE", "LOGICAL_AND"}


def test_sign_rule_and_gate_copies_stay_in_xnnpack(v3_small_sign_shifts):
    """MobileNetV3's defaults: the sign rule's masks and the squeeze-excite
    gates' int8 copies are QUANTIZE/DEQUANTIZE too, not a bool comparison,
    a select and int8 casts (reference kernels that split XNNPACK's
    partitions); the step matches Keras
    (`test_training_matches_keras_under_the_models_recipe`)."""
    _, _, train = operators.signature_subgraph(v3_small_sign_shifts.path, "train")
    assert not set(train) & {"GREATER", "LOGICAL_AND"}
    assert train.count("SELECT_V2") <= 1  # The loss's.
    # 18 hard-swish masks and 9 gate copies, each stored and read back.
    assert train.count("QUANTIZE") >= 18 + 9
    assert "ROUND" in train


def test_signature_subgraph_lists_its_ops_in_run_order():
    import tensorflow as tf

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
        def first(self, x):
            return {"y": tf.math.ceil(x) * 3.0 - x}

        @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
        def second(self, x):
            return {"y": tf.math.floor(x)}

    module = Module()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.first.get_concrete_function(), module.second.get_concrete_function()],
        module,
    )
    content = converter.convert()
    _, subgraph, names = operators.signature_subgraph(content, "first")
    assert names == ["CEIL", "MUL", "SUB"]
    assert subgraph.InputsLength() == 1
    assert operators.signature_subgraph(content, "second")[2] == ["FLOOR"]


def test_loss_falls_on_a_fixed_batch(exported):
    runners = _runners(exported.path)
    images, labels = _pixels(exported.model, seed=0)
    sidecar = json.loads(Path(export.sidecar_path(exported.path)).read_text())
    rate = np.float32(sidecar["recipe"]["side_learning_rate"])  # The peak.
    losses = [
        float(runners.train(x=images, y=labels, learning_rate=rate)["loss"])
        for _ in range(8)
    ]
    assert np.all(np.isfinite(losses))
    # With dropout and the peak rate single steps jump (MobileNetV2, 6
    # random initialisations: the last of 8 above the first in 2); the
    # mean of the last four was below the first in all 6 (by 24-50%).
    assert np.mean(losses[4:]) < 0.995 * losses[0], losses


def test_sidecar_describes_the_model(v3_small):
    sidecar = json.loads(Path(export.sidecar_path(v3_small.path)).read_text())
    runners = _runners(v3_small.path)
    assert sidecar["format"] == export.FORMAT
    assert sidecar["image_size"] == [SIZE, SIZE]
    assert sidecar["batch_size"] == BATCH_SIZE
    assert sidecar["num_classes"] == CLASSES
    assert sidecar["class_names"] == CLASS_NAMES
    assert sidecar["backbone"] == "MobileNetV3Small"
    # The model's recipe, whole: the device trains as Keras did.
    assert sidecar["recipe"] == v3_small.model.recipe.to_dict()
    assert sidecar["recipe"]["side_learning_rate"] == LEARNING_RATE
    assert sidecar["weights"] == list(runners.get_weights(unused=np.int32(0)))
    expected = {v.path.replace("/", "_") for v in v3_small.model.trainable_variables}
    assert expected < set(sidecar["weights"])
    assert "optimizer_iterations" in sidecar["weights"]
    assert "repnet_module_0_norm_moving_mean" in sidecar["weights"]


@pytest.mark.parametrize("fixture", ["v3_small", "v3_small_sign_shifts"])
def test_training_matches_keras_under_the_models_recipe(fixture, request):
    """The exported `train` optimises the loss Keras optimises: 20 steps of
    the model's recipe (Adam, label smoothing, cosine decay; the shifts at
    their own rate where the recipe gives one), in LiteRT (the rate of each
    step passed in, as the trainers do) and in Keras compiled by the
    recipe, from the same weights on the same batches."""
    v3_small = request.getfixturevalue(fixture)
    model = v3_small.model
    model.set_weights(v3_small.initial)
    steps = 20
    batches = [_pixels(model, seed) for seed in range(steps)]
    # The logits of the first step, in training mode (the side network's
    # norms read the batch's statistics), with the weights restored after.
    initial_logits = keras.ops.convert_to_numpy(
        model(batches[0][0], training=True)
    ).astype("float64")
    model.set_weights(v3_small.initial)
    runners = _runners(v3_small.path)
    recipe = model.recipe
    schedule = keras.optimizers.schedules.CosineDecay(
        recipe.side_learning_rate, steps
    )
    litert = [
        float(
            runners.train(x=x, y=y, learning_rate=np.float32(schedule(step)))[
                "loss"
            ]
        )
        for step, (x, y) in enumerate(batches)
    ]

    model.lean_backward = False  # The reference: TensorFlow's own gradients.
    recipe.compile(model, total_steps=steps)
    # MobileNetV3's preprocessing is inside the model: pixels go in as is.
    expected = []
    for x, y in batches:
        # Keras < 3.15 returns the loss averaged since the last reset.
        model.reset_metrics()
        expected.append(float(model.train_on_batch(x, y)[0]))
    np.testing.assert_allclose(litert, expected, rtol=1e-3)
    # The backbone shifts end where Keras' do, at their own rate: a device
    # training them at the side's rate would move them ten times as far.
    # (Compared as a whole: float noise, amplified by Adam, can flip single
    # elements of the side norms that see 1x1 feature maps; the losses
    # above cover those. The shifts' L2 gap has measured up to 12% of
    # Keras' own movement under xdist; the wrong rate would be ~900%.)
    trained = runners.get_weights(unused=np.int32(0))
    shifts = [
        v for v in model.trainable_variables
        if v.path.endswith(layers.SHIFT_SUFFIX + "/bias")
    ]
    assert bool(shifts) == (recipe.shift_learning_rate is not None)
    if shifts:
        keras_shifts = np.concatenate(
            [keras.ops.convert_to_numpy(v).ravel() for v in shifts]
        )
        litert_shifts = np.concatenate(
            [trained[v.path.replace("/", "_")].ravel() for v in shifts]
        )
        assert np.abs(keras_shifts).max() > recipe.shift_learning_rate  # Trained.
        assert np.linalg.norm(litert_shifts - keras_shifts) < 0.3 * np.linalg.norm(
            keras_shifts
        )
    # The first step's loss, before any update, is the recipe's smoothed
    # cross-entropy of the model's logits, computed here independently.
    targets = np.full((BATCH_SIZE, CLASSES), LABEL_SMOOTHING / CLASSES)
    targets[np.arange(BATCH_SIZE), batches[0][1]] += 1 - LABEL_SMOOTHING
    log_p = initial_logits - np.log(np.exp(initial_logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(
        litert[0], -(targets * log_p).sum(-1).mean(), rtol=1e-4
    )

    if any(isinstance(layer, keras_repnet.SideTop) for layer in model.layers):
        # A side top's norm sees 1x1 maps: there the two trainings drift
        # apart (float noise amplified by Adam, as above), so `infer` is
        # compared with Keras on the weights the device trained.
        names = {v.path.replace("/", "_"): v for v in model.weights}
        assert {n for n in names if "repnet" in n} <= set(trained)
        for name, value in trained.items():
            if name in names:
                names[name].assign(value)
    images = batches[0][0]
    np.testing.assert_allclose(
        runners.infer(x=images)["logits"],
        model.predict(images, verbose=0),
        rtol=1e-3,
        atol=1e-4,
    )


def test_infer_matches_predict(v3_small):
    model = v3_small.model
    model.set_weights(v3_small.initial)
    images, _ = _pixels(model, seed=3)
    runners = _runners(v3_small.path)
    outputs = runners.infer(x=images[:3])  # Any batch size.
    expected = model.predict(images[:3], verbose=0)
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        outputs["probabilities"], keras.ops.softmax(expected), rtol=1e-4, atol=1e-6
    )


def test_weights_round_trip(v3_small):
    runners = _runners(v3_small.path)
    images, labels = _pixels(v3_small.model, seed=1)
    for _ in range(2):
        runners.train(x=images, y=labels, learning_rate=np.float32(LEARNING_RATE))
    trained = runners.get_weights(unused=np.int32(0))
    assert int(trained["optimizer_iterations"]) == 2
    logits = runners.infer(x=images)["logits"]

    fresh = _runners(v3_small.path)
    assert not np.allclose(fresh.infer(x=images)["logits"], logits)
    assert int(fresh.set_weights(**trained)["iterations"]) == 2
    np.testing.assert_array_equal(fresh.infer(x=images)["logits"], logits)
    restored = fresh.get_weights(unused=np.int32(0))
    for name, value in trained.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)

    shifted = {name: value + 1 for name, value in trained.items()}
    fresh.set_weights(**shifted)
    for name, value in fresh.get_weights(unused=np.int32(0)).items():
        np.testing.assert_array_equal(value, shifted[name], err_msg=name)


def test_initial_weights_match_keras_and_zeros_are_not_stored(v3_small):
    weights = _runners(v3_small.path).get_weights(unused=np.int32(0))
    for variable in v3_small.model.trainable_variables:
        np.testing.assert_array_equal(
            weights[export.weight_name(variable.path)], variable.numpy()
        )
    slots = [
        name for name in weights
        if name.startswith("optimizer_") and name != export.ITERATIONS_NAME
    ]
    assert slots and all(not np.any(weights[name]) for name in slots)
    # Slots this large were stored zeros before FILL ops made them.
    assert any(4 * weights[name].size >= zeros.MIN_BYTES for name in slots)
    assert _stored_zero_initial_values(v3_small.path) == []


def test_head_steps_at_its_share_of_the_rate(v2_cli):
    """Adam's first step moves each weight by about the learning rate (the
    gradient's sign times the rate): the head by the side's rate times the
    export's ratio, whatever rate the step is given."""
    runners = _runners(v2_cli.path)
    images, labels = _pixels(v2_cli.model, seed=2)
    before = runners.get_weights(unused=np.int32(0))
    rate = 0.5 * V2_RATES[0]
    runners.train(x=images, y=labels, learning_rate=np.float32(rate))
    after = runners.get_weights(unused=np.int32(0))

    def largest_step(names):
        return max(float(np.max(np.abs(after[n] - before[n]))) for n in names)

    side = [
        name for name in after
        if name.startswith(("repnet_module", "repnet_side_top"))
        and "moving" not in name
    ]
    assert side and "repnet_head_bias" in after
    np.testing.assert_allclose(largest_step(side), rate, rtol=1e-3)
    np.testing.assert_allclose(
        largest_step(["repnet_head_bias"]),
        rate * V2_RATES[1] / V2_RATES[0],
        rtol=1e-3,
    )
    recipe = json.loads(Path(export.sidecar_path(v2_cli.path)).read_text())["recipe"]
    assert recipe["head_learning_rate"] == V2_RATES[1]


def test_int8_backbone_is_smaller(v2_cli):
    counts = keras_repnet.parameter_counts(v2_cli.model)
    float_bytes = 4 * (counts["frozen"] + counts["trainable"])
    # One int8 copy of the backbone (its forward filters, which the backward
    # reads too), the float side network and the per-channel scales: 0.47x
    # of the float weights. A second int8 copy would make it about 0.7x.
    assert v2_cli.path.stat().st_size < 0.55 * float_bytes
    sidecar = json.loads(Path(export.sidecar_path(v2_cli.path)).read_text())
    assert sidecar["quantized_backbone"] is True
    assert sidecar["class_names"] == CLASS_NAMES  # From results.json.


def test_int8_quantization_vectors_are_stored_once(v2_cli):
    from ai_edge_litert.tools import flatbuffer_utils

    content = v2_cli.path.read_bytes()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    # The same model written by LiteRT's own writer: every tensor's scales
    # and zero points stored in full.
    copies = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    per_tensor = sum(
        4 * len(tensor.quantization.scale) + 8 * len(tensor.quantization.zeroPoint)
        for subgraph in model.subgraphs
        for tensor in subgraph.tensors
        if tensor.quantization is not None and tensor.quantization.scale is not None
    )
    # The forward kernels of `infer` and `train` and the 1x1 matmul views
    # read one int8 buffer each: three tables, one set of vectors, and the
    # zero points are all 0.
    assert len(copies) - len(content) > 0.7 * per_tensor
    images = np.random.default_rng(0).uniform(0, 255, (BATCH_SIZE, SIZE, SIZE, 3))
    outputs = [
        Interpreter(model_content=data, num_threads=1)
        .get_signature_runner("infer")(x=images.astype("float32"))["logits"]
        for data in (content, copies)
    ]
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"head_learning_rate": "1e-3"}, "head_learning_rate"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"class_names": ["a"]}, "class names"),
        ({"preprocess": "caffe"}, "preprocess"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    model = keras_repnet.build(
        "MobileNetV3Small", CLASSES, input_shape=(SIZE, SIZE, 3), weights=None
    )
    with pytest.raises(ValueError, match=message):
        export.export_tflite(model, tmp_path / "m.tflite", **kwargs)
    assert not (tmp_path / "m.tflite").exists()


def test_bad_models(tmp_path):
    with pytest.raises(ValueError, match="must be a keras.Model"):
        export.export_tflite("model.keras", tmp_path / "m.tflite")
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.GlobalAveragePooling2D()(inputs)
    softmax = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(features))
    with pytest.raises(ValueError, match="must output logits"):
        export.export_tflite(softmax, tmp_path / "m.tflite", preprocess=None)
    with pytest.raises(ValueError, match="preprocessing"):
        logits = keras.Model(inputs, keras.layers.Dense(3)(features))
        export.export_tflite(logits, tmp_path / "m.tflite")


def _tiny_classifier(*middle):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    for layer in middle:
        x = layer(x)
    features = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(features))


def test_non_builtin_operators_fail_loudly(tmp_path):
    model = _tiny_classifier(keras.layers.GaussianNoise(0.1))  # Stateless RNG.
    with pytest.raises(ValueError, match="train: FlexStatelessRandom"):
        export.export_tflite(model, tmp_path / "m.tflite", preprocess=None)
    assert not (tmp_path / "m.tflite").exists()


def test_flex_checkpoints_add_save_and_restore(tmp_path):
    model = _tiny_classifier(keras.layers.BatchNormalization())
    path = tmp_path / "m.tflite"
    export.export_tflite(
        model, path, batch_size=2, preprocess=None, flex_checkpoints=True
    )
    assert set(operators.signatures(path)) == {*export.SIGNATURES, "save", "restore"}
    assert operators.non_builtin_operators(path) == ["FlexRestore", "FlexSave"]
    for key in export.SIGNATURES:
        assert operators.non_builtin_operators(path, key) == []


def _frozen_pointwise_classifier():
    """A trainable stem, then a frozen 64 -> 256 1x1 convolution (64 KiB of
    float weights) that the gradient of the stem must cross."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(64, 1, activation="relu")(inputs)
    frozen = keras.layers.Conv2D(256, 1, activation="relu", trainable=False)
    features = keras.layers.GlobalAveragePooling2D()(frozen(x))
    return keras.Model(inputs, keras.layers.Dense(3)(features))


def _read_model(path):
    """The flatbuffer object tree of a `.tflite` file."""
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(path.read_bytes(), 0))


def _large_constants(path):
    """Byte sizes of the constant buffers over 4 KiB of a `.tflite` file."""
    model = _read_model(path)
    return sorted(
        len(b.data) for b in model.buffers if b.data is not None and len(b.data) > 4096
    )


def _stored_zero_initial_values(path):
    """Sizes of the stored all-zero values (of at least `zeros.MIN_BYTES`)
    that an `ASSIGN_VARIABLE` writes into a variable."""
    from ai_edge_litert import schema_py_generated as schema

    model = _read_model(path)
    assign = schema.BuiltinOperator.ASSIGN_VARIABLE
    sizes = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if model.operatorCodes[op.opcodeIndex].builtinCode != assign:
                continue
            data = model.buffers[subgraph.tensors[op.inputs[1]].buffer].data
            if data is not None and len(data) >= zeros.MIN_BYTES and not np.any(data):
                sizes.append(len(data))
    return sizes


@pytest.mark.parametrize(
    "quantize, share, constants, gradient_op",
    [
        (False, True, [64 * 256 * 4], "BATCH_MATMUL"),
        (True, True, [64 * 256], "BATCH_MATMUL"),
        (False, False, [64 * 256 * 4] * 2, "TRANSPOSE_CONV"),
    ],
)
def test_frozen_pointwise_kernel_is_stored_once(
    tmp_path, quantize, share, constants, gradient_op
):
    model = _frozen_pointwise_classifier()
    path = tmp_path / "m.tflite"
    export.export_tflite(
        model,
        path,
        batch_size=2,
        preprocess=None,
        quantize_backbone=quantize,
        share_weights=share,
    )

    # Shared: the forward CONV_2D and the input gradient's BATCH_MATMUL read
    # one buffer of 64 x 256 weights, in float32 or int8. Not shared: the
    # TRANSPOSE_CONV has its own transposed copy.
    assert _large_constants(path) == constants
    used = operators.operators(path, "train")
    assert gradient_op in used
    assert ("TRANSPOSE_CONV" in used) == (not share)
    runners = _runners(path)
    images = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(
        runners.infer(x=images)["logits"], expected, atol=0.02 if quantize else 1e-5
    )
    rate = np.float32(1e-2)
    losses = [
        float(runners.train(x=images, y=np.int32([0, 2]), learning_rate=rate)["loss"])
        for _ in range(5)
    ]
    assert losses[-1] < losses[0], losses
    if quantize:
        # The shared quantization vectors read as LiteRT's own writer's
        # per-tensor copies do: the same training, to the bit.
        from ai_edge_litert.tools import flatbuffer_utils

        copies = tmp_path / "copies.tflite"
        copies.write_bytes(
            flatbuffer_utils.convert_object_to_bytearray(
                flatbuffer_utils.read_model(str(path))
            )
        )
        train = _runners(copies).train
        np.testing.assert_array_equal(
            [
                float(train(x=images, y=np.int32([0, 2]), learning_rate=rate)["loss"])
                for _ in range(5)
            ],
            losses,
        )
