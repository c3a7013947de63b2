"""`export_tflite()`: a Keras classifier as a `.tflite` model that trains.

The exported model has four signatures that run with the builtin LiteRT
operators only (no select-TF "Flex" runtime, which phones do not ship):
`train` (one optimizer step on a batch of pixels and labels, at the
learning rate the caller passes), `infer`,
`get_weights` and `set_weights` (for checkpoints kept by the app). Only the
trainable variables (the Rep-Net side network, the backbone shifts and the
head) change on device; the frozen backbone becomes constants.
"""

import contextlib
import os
import tempfile

import keras
import tensorflow as tf
from repnet_trainer import files
from repnet_trainer import formats

from keras_repnet import backward
from keras_repnet import compat
from keras_repnet import data
from keras_repnet.backward.builtin import kernel_copies
from keras_repnet.core import backbones
from keras_repnet.core import recipe as recipe_lib
from keras_repnet.export import operators
from keras_repnet.export import quantize as quantize_lib
from keras_repnet.export import signatures
from keras_repnet.export import xnnpack
from keras_repnet.export import zeros

# The file's contract with the device trainers: `repnet_trainer.formats`.
FORMAT = formats.MODEL_FORMAT
SIGNATURES = formats.SIGNATURES
sidecar_path = formats.sidecar_path
CHECKPOINT_SIGNATURES = ("save", "restore")
INPUT_DESCRIPTION = "float32 RGB pixels in [0, 255], NHWC"


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    batch_size: int = 8,
    learning_rate: float | None = None,
    head_learning_rate: float | None = None,
    optimizer: str | None = None,
    label_smoothing: float | None = None,
    class_names: list[str] | None = None,
    quantize_backbone: bool = False,
    share_weights: bool = True,
    flex_checkpoints: bool = False,
    preprocess="auto",
):
    """Writes a `.tflite` model that trains and infers on device.

    The file has the signatures
    - `train(x: float32[B, H, W, 3], y: int32[B], learning_rate: float32[])
      -> {"loss"}`: one optimizer step on the trainable variables, with the
      loss of the model's recipe (`model.recipe.make_loss()`, the smoothed
      cross-entropy Keras trained with) plus the model's regularization
      losses. `learning_rate` is this step's rate of the side variables
      (everything outside the head `repnet_head`); the head's is that times
      the recipe's ratio `head_learning_rate / side_learning_rate`. The
      trainers (`repnet_trainer`, the Android sample) pass the recipe's
      cosine decay from the peak to zero over the run. Layers run as in
      `fit`: trainable batch norms update their moving statistics, frozen
      ones stay in inference mode, and `Dropout` layers drop units (with
      LiteRT's builtin random generator).
    - `infer(x: float32[N, H, W, 3]) -> {"logits", "probabilities"}` for
      any `N`.
    - `get_weights(unused: int32[]) -> {name: tensor}` (the input is ignored:
      Android cannot call a signature without inputs) and
      `set_weights(**tensors) -> {"iterations"}` for every trainable variable, every non-trainable
      variable of a trainable layer (batch norm moving statistics) and every
      optimizer slot and the step counter (`optimizer_iterations`).
    - with `flex_checkpoints=True` also `save(checkpoint_path)` and
      `restore(checkpoint_path)`, which need the select-TF runtime.

    `x` holds pixels in `[0, 255]`: the backbone's preprocessing is part of
    the model. Beside `path` a sidecar JSON file (same name, `.json`) records
    the image size, batch size, class names, the weight names and the
    recipe.

    The conversion uses the builtin operator set only (plus the select-TF
    ops of `save`/`restore` when asked for): operators without a builtin
    form raise an error that names them.

    Example:

    ```python
    model = keras_repnet.build("MobileNetV3Small", 5, input_shape=(96, 96, 3))
    ...  # Train it with model.recipe.
    keras_repnet.export_tflite(model, "repnet.tflite")
    ```

    Args:
        model: `keras.Model`. A classifier that maps one image batch
            `(N, H, W, 3)` to logits `(N, C)` (no softmax at the end), such
            as the model `keras_repnet.build` returns.
        path: str or `os.PathLike`. Where the `.tflite` file is written.
        batch_size: int. Examples per `train` call. Defaults to 8.
        learning_rate: float. Peak learning rate of the side variables on
            device, recorded in the sidecar for the trainers' schedule.
            Defaults to the model's recipe's (`model.recipe`; Rep-Net's
            recipe for a model without one).
        head_learning_rate: float. Peak learning rate of the head; the
            ratio to `learning_rate` is frozen into the file (as are the
            recipe's shift and mask rates'). Defaults to the recipe's.
        optimizer: str. `"adam"` or `"sgd"`. Defaults to the recipe's.
        label_smoothing: float. In `[0, 1)`. Defaults to the recipe's.
        class_names: list of str. Stored in the sidecar file. Defaults to
            `None`.
        quantize_backbone: bool. Store the frozen weights in int8, one
            scale per output channel, each dequantized to float by a builtin
            `DEQUANTIZE` (ai-edge-quantizer's weight-only recipe, installed
            with `pip install 'keras-repnet[int8]'`): a smaller file, float
            compute (`bench/tflite.py` measures size, speed and accuracy).
            Defaults to `False`.
        share_weights: bool. Let the backward pass read each frozen 1x1
            kernel in the forward layout, so that the file stores it once
            (`False`: a second, transposed copy for `TRANSPOSE_CONV`, about
            2x the inference-only file on MobileNetV2). Defaults to `True`.
        flex_checkpoints: bool. Add the `save` and `restore` signatures that
            write TensorFlow checkpoints. Defaults to `False`.
        preprocess: The function that maps pixels in `[0, 255]` to the
            model's input, `None` when the model takes pixels, or `"auto"`:
            the `keras.applications` preprocessing of `model.backbone`.
            Defaults to `"auto"`.

    Returns:
        `path`.
    """
    _check_batch_size(batch_size)
    image_shape, num_classes = _check_model(model)
    recipe = getattr(model, "recipe", recipe_lib.REPNET).replace(
        side_learning_rate=learning_rate,
        head_learning_rate=head_learning_rate,
        optimizer=optimizer,
        label_smoothing=label_smoothing,
    )
    _check_class_names(class_names, num_classes)
    preprocess = _resolve_preprocess(model, preprocess)
    trainer = signatures.Trainer(
        model, recipe.make_optimizer(), preprocess, recipe.make_loss()
    )
    keys = SIGNATURES + (CHECKPOINT_SIGNATURES if flex_checkpoints else ())
    with tempfile.TemporaryDirectory() as saved_model:
        # The saved model keeps the first trace of each function, so the
        # builtin-only gradients must be in place while tracing.
        copies = contextlib.nullcontext() if share_weights else kernel_copies()
        with backward.override(builtins_only=True), copies:
            module, functions = trainer.module(
                batch_size, image_shape, flex_checkpoints
            )
            tf.saved_model.save(module, saved_model, signatures=functions)
        content = _convert(saved_model, keys, quantize_backbone, flex_checkpoints)
    files.write_bytes(path, content)
    sidecar = {
        "format": FORMAT,
        "image_size": list(image_shape[:2]),
        "batch_size": batch_size,
        "num_classes": num_classes,
        "class_names": None if class_names is None else list(class_names),
        "weights": sorted(trainer.weight_names),  # The signatures' order.
        "backbone": getattr(model, "backbone", None),
        "input": INPUT_DESCRIPTION,
        # How the model trains, on the device as in Keras.
        "recipe": recipe.to_dict(),
        "quantized_backbone": quantize_backbone,
        "shared_weights": share_weights,
        "signatures": list(keys),
    }
    files.write_json(sidecar_path(path), sidecar, indent=2)
    return path


# === Argument checks ===


def _check_batch_size(batch_size):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            "`batch_size` must be a positive int. Received: "
            f"batch_size={batch_size!r}"
        )


def _check_model(model):
    """Returns `(image_shape, num_classes)` of a logits classifier."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            "`model` must be a keras.Model, such as the one keras_repnet.build "
            f"returns. Received: model={model!r} of type {type(model).__name__}"
        )
    if len(model.inputs or ()) != 1 or len(model.outputs or ()) != 1:
        raise ValueError(
            "`model` must be a built model with one image input and one "
            f"logits output. Received: inputs={model.inputs}, "
            f"outputs={model.outputs}"
        )
    image_shape = tuple(model.inputs[0].shape[1:])
    output_shape = tuple(model.outputs[0].shape[1:])
    if len(image_shape) != 3 or None in image_shape or image_shape[-1] != 3:
        raise ValueError(
            "`model` must take RGB images of a fixed size, (N, H, W, 3). "
            f"Received a model with input shape {model.inputs[0].shape}"
        )
    if len(output_shape) != 1 or not output_shape[0] or output_shape[0] < 2:
        raise ValueError(
            "`model` must output logits of shape (N, num_classes) with at "
            f"least 2 classes. Received output shape {model.outputs[0].shape}"
        )
    last = compat.producer(model.outputs[0])
    if getattr(last, "activation", None) in (
        keras.activations.softmax,
        keras.activations.sigmoid,
    ):
        raise ValueError(
            "`model` must output logits, but its last layer "
            f"{last.name!r} applies {last.activation.__name__}. Build it "
            "with `activation=None` on the last layer."
        )
    if not model.trainable_variables:
        raise ValueError(
            f"`model` {model.name!r} has no trainable variables: nothing "
            "would train on device."
        )
    return image_shape, output_shape[0]


def _check_class_names(class_names, num_classes):
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"Expected {num_classes} class names, one per model output. "
            f"Received {len(class_names)}: class_names={class_names!r}"
        )


def _resolve_preprocess(model, preprocess):
    if preprocess is None or callable(preprocess):
        return preprocess
    if preprocess != "auto":
        raise ValueError(
            '`preprocess` must be "auto", None or a function. Received: '
            f"preprocess={preprocess!r}"
        )
    backbone = getattr(model, "backbone", None)
    if backbone not in backbones.application_names():
        raise ValueError(
            f"Cannot tell which preprocessing model {model.name!r} expects: "
            "its `backbone` attribute is not a keras.applications name "
            f"(keras_repnet.build sets it). Received: backbone={backbone!r}. "
            "Pass `preprocess=` the function that maps pixels in [0, 255] "
            "to the model's input, or `preprocess=None` if it takes pixels."
        )
    return data.preprocessing_for(backbone)


def _convert(saved_model, keys, quantize, flex_checkpoints):
    """Converts with builtin ops (select-TF ops only for checkpoints)."""
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if flex_checkpoints:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    try:
        content = _converter(saved_model, keys, ops).convert()
    except Exception as error:  # The converter raises its own error types.
        if flex_checkpoints:
            raise
        # Convert again with select-TF ops allowed to name the culprits.
        content = _converter(
            saved_model, keys, ops + [tf.lite.OpsSet.SELECT_TF_OPS]
        ).convert()
        _check_builtin(content, keys)
        raise error
    if quantize:
        content = quantize_lib.weight_only_int8(content)
    # After the quantizer, which would take the masks for its own.
    content = xnnpack.quantize_masks(content)
    content = xnnpack.split_add_n(content)
    content = xnnpack.broadcast_tiles(content)
    content = zeros.fill_zero_initial_values(content)
    if quantize:
        # Last: the passes before write each table's vectors anew.
        content = quantize_lib.share_quantization_vectors(content)
    _check_builtin(content, SIGNATURES)
    return content


def _converter(saved_model, keys, ops):
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model, signature_keys=list(keys)
    )
    converter.target_spec.supported_ops = ops
    converter.experimental_enable_resource_variables = True
    # Zero-filled initial values (the optimizer slots) become FILL ops in the
    # initializer instead of stored zeros.
    compat.unfold_splat_constants(converter)
    return converter


def _check_builtin(content, keys):
    missing = {
        key: operators.non_builtin_operators(content, key) for key in keys
    }
    missing = {key: ops for key, ops in missing.items() if ops}
    if missing:
        raise ValueError(
            "The model needs operators that are not LiteRT builtins, which "
            "phones cannot run: "
            + "; ".join(f"{key}: {', '.join(ops)}" for key, ops in missing.items())
            + ". Remove the layers that use them (random augmentation, "
            "unusual activations) or report the operator so that "
            "keras_repnet.backward learns a builtin form of it."
        )
