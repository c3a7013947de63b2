"""The commands of `keras-repnet`: what each does with its flags."""

import sys

from absl import app

from keras_repnet.command_flags import (
    BACKBONE,
    BATCH_NORM,
    BATCH_SIZE,
    CLIENTS,
    DATA,
    EPOCHS,
    HEAD_LR,
    IMAGE_SIZE,
    LABEL_SMOOTHING,
    LOCAL_EPOCHS,
    MAX_EXAMPLES,
    MEASURE,
    METHOD,
    METHODS,
    MODEL,
    MODEL_FLAGS,
    OUT,
    OUTPUT_DIR,
    OVERWRITE,
    PARTITION,
    QUANTIZE_BACKBONE,
    RECIPE_FLAGS,
    ROUNDS,
    SEED,
    SIDE_LR,
    STRATEGY,
    STRICT_IMAGES,
    TEST_DATA,
    VALIDATION_SPLIT,
    WEIGHTS,
    WIRE_DTYPE,
)
from keras_repnet.core.recipe import REPNET


def _run_arguments(output_dir):
    """The arguments `train` and `compare` share: the data, the backbone,
    where results go and the recipe fields the flags set."""
    return dict(
        test_data=TEST_DATA.value,
        backbone=BACKBONE.value,
        weights=_weights(WEIGHTS.value),
        output_dir=output_dir,
        max_examples=MAX_EXAMPLES.value,
        **_recipe_changes(),
    )


def _weights(value):
    return None if value.lower() == "none" else value


def _require(flag, message):
    if flag.value is None:
        raise app.UsageError(message)


def _data_and_output(command, default_output_dir):
    """Checks that a command that trains got --data; returns its output
    folder."""
    _require(DATA, f"`{command}` needs --data (an image folder, for example).")
    return OUTPUT_DIR.value or default_output_dir


def _interrupted(line):
    """Ends a command stopped by Ctrl-C with one line, no traceback."""
    print(line, file=sys.stderr)
    sys.exit(130)


def train_command():
    from keras_repnet.apps import resumable
    from keras_repnet.apps import training

    output_dir = _data_and_output("train", "runs/train")
    try:
        results = training.train(
            DATA.value,
            method=METHOD.value,
            side_learning_rate=SIDE_LR.value,
            head_learning_rate=HEAD_LR.value,
            strict_images=STRICT_IMAGES.value,
            overwrite=OVERWRITE.value,
            model_options=_model_options(),
            **_run_arguments(output_dir),
        )
    except KeyboardInterrupt:
        _interrupted(resumable.interrupted_message(output_dir))
    params = results["parameters"]
    epochs = results["settings"]["recipe"]["epochs"]
    print(
        f"Validation accuracy: {results['validation_accuracy']:.4f} "
        f"(best {results['best_validation_accuracy']:.4f}) on "
        f"{results['num_validation']} images after {epochs} epochs."
    )
    if results["test_accuracy"] is not None:
        print(
            f"Test accuracy: {results['test_accuracy']:.4f} on "
            f"{results['num_test']} images (evaluated once, at the end)."
        )
    print(
        f"Parameters: {params['trainable']:,} trainable (side "
        f"{params['side']:,}, backbone shifts {params['shifts']:,}, head "
        f"{params['head']:,}), {params['frozen']:,} frozen."
    )
    print(f"Wall time: {results['wall_time_s']} s. Outputs in {output_dir}/")


# Memory and export run at the device's batch size unless told.
_DEVICE_BATCH_SIZE = 8


def memory_command():
    from keras_repnet import memory
    from keras_repnet import methods
    from keras_repnet.core import backbones

    size = IMAGE_SIZE.value or REPNET.image_size
    batch = BATCH_SIZE.value or _DEVICE_BATCH_SIZE
    # Memory does not depend on the weights: random ones unless asked.
    weights = _weights(WEIGHTS.value) if WEIGHTS.present else None
    with backbones.random_weights_on_purpose():
        model = methods.build_method(
            METHOD.value,
            BACKBONE.value,
            10,
            input_shape=(size, size, 3),
            weights=weights,
            **_model_options(),
        )
    profile = memory.profile(model, batch)
    print(profile.format())
    if profile.lean_backward:
        plain = memory.profile(model, batch, lean_backward=False)
        print(
            f"  (with plain autodiff, ours: step peak "
            f"{plain.ours.peak_bytes / 1e6:.1f} MB)"
        )
    if not MEASURE.value:
        return
    try:
        measured = memory.measure(
            METHOD.value, BACKBONE.value, image_size=size, batch_size=batch,
            options=_model_options(),
        )
        floor = memory.measure(
            memory.INFERENCE, BACKBONE.value, image_size=size, batch_size=batch
        )
    except RuntimeError as error:
        raise app.UsageError(str(error)) from error
    print(
        f"Measured step peak: {measured.peak_mb:.1f} MB "
        f"(analytic ours / measured: "
        f"{profile.ours.peak_bytes / measured.peak_bytes:.2f}), step "
        f"{measured.step_seconds * 1000:.0f} ms.\n"
        f"Inference floor (frozen {BACKBONE.value}, forward only): "
        f"{floor.peak_mb:.1f} MB; the step peak is "
        f"{measured.peak_bytes / floor.peak_bytes:.2f}x that."
    )


def export_command():
    import json
    import os

    from keras_repnet import export
    from keras_repnet.apps import files

    _require(MODEL, "`export` needs --model (a .keras file).")
    _require(OUT, "`export` needs --out (the .tflite file to write).")
    files.check_writable(OUT.value, "--out")
    files.check_writable(export.sidecar_path(OUT.value), "--out")
    model = _load_model(MODEL.value)
    # `keras-repnet train` writes the class names beside the model.
    results = os.path.join(os.path.dirname(MODEL.value), "results.json")
    class_names = None
    if os.path.exists(results):
        with open(results) as f:
            class_names = json.load(f).get("class_names")
    path = export.export_tflite(
        model,
        OUT.value,
        batch_size=BATCH_SIZE.value or _DEVICE_BATCH_SIZE,
        learning_rate=SIDE_LR.value,
        head_learning_rate=HEAD_LR.value,
        label_smoothing=LABEL_SMOOTHING.value,
        class_names=class_names,
        quantize_backbone=QUANTIZE_BACKBONE.value,
    )
    print(
        f"Wrote {path} ({os.path.getsize(path) / 2**20:.2f} MiB; signatures "
        f"{', '.join(export.SIGNATURES)}, builtin LiteRT ops only) and "
        f"{export.sidecar_path(path)}."
    )


def _load_model(path):
    """A `.keras` model, or an error that says what is wrong with the file."""
    import os
    import zipfile

    import keras

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No model file at --model={path}. Pass the model.keras that "
            "`keras-repnet train` wrote."
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"--model={path} is not a .keras file (a zip archive): it is "
            "truncated or of another format. Train again, or copy the file "
            "again."
        )
    try:
        return keras.models.load_model(path)
    except (OSError, zipfile.BadZipFile, KeyError, EOFError) as error:
        raise ValueError(
            f"Cannot load the model --model={path} ({error}). The file may be "
            "damaged: train again, or copy the file again."
        ) from None


def compare_command():
    from keras_repnet.apps.comparison import compare
    from keras_repnet.apps.reports import markdown

    from keras_repnet.apps import files

    output_dir = _data_and_output("compare", "runs/compare")
    files.check_writable(f"{output_dir}/results.json", "--output_dir")
    try:
        results = compare(
            DATA.value,
            methods=METHODS.value,
            measure=MEASURE.value,
            **_run_arguments(output_dir),
        )
    except KeyboardInterrupt:
        _interrupted(
            f"Interrupted. Finished methods are saved in {output_dir}/: run "
            "the same command to skip them and resume the one that stopped."
        )
    print(markdown(results))
    print(f"Outputs in {output_dir}/ (results.md, results.json, pareto.png, curves.png)")


def federate_command():
    from keras_repnet.apps import federate

    output_dir = _data_and_output("federate", "runs/federated")
    try:
        results = federate.federate(
            DATA.value,
            backbone=BACKBONE.value,
            weights=_weights(WEIGHTS.value),
            method=METHOD.value,
            output_dir=output_dir,
            clients=CLIENTS.value,
            rounds=ROUNDS.value,
            local_epochs=LOCAL_EPOCHS.value,
            partition=PARTITION.value,
            strategy=STRATEGY.value,
            batch_norm=BATCH_NORM.value,
            wire_dtype=WIRE_DTYPE.value,
            batch_size=BATCH_SIZE.value or _DEVICE_BATCH_SIZE,
            max_examples=MAX_EXAMPLES.value,
            model_options=_model_options(),
            **{k: v for k, v in _recipe_changes().items() if k != "batch_size"},
        )
    except KeyboardInterrupt:
        _interrupted(
            f"Interrupted. The finished rounds are checkpointed in {output_dir}/: "
            "run the same command to resume."
        )
    print(federate.markdown(results))
    print(f"Outputs in {output_dir}/ (results.md, results.json, rounds.png)")


def _recipe_changes():
    return {name: flag.value for name, flag in RECIPE_FLAGS.items()}


def _model_options():
    """The build arguments the model flags set (none: the method's own)."""
    switches = {"on": True, "off": False}
    return {
        name: switches.get(flag.value, flag.value)
        for name, flag in MODEL_FLAGS.items()
        if flag.value is not None
    }


_COMMON = ("backbone", "weights", "verbose")
_RUN = (
    "data", "test_data", "output_dir", "max_examples", "strict_images",
    *(flag.name for flag in RECIPE_FLAGS.values()),
)
_MODEL = tuple(flag.name for flag in MODEL_FLAGS.values())
# Command -> (function, what it does, its flags).
COMMANDS = {
    "train": (
        train_command,
        "Trains a classifier on your images with a method's recipe.",
        (*_RUN, "method", *_MODEL, "side_lr", "head_lr", "overwrite",
         *_COMMON),
    ),
    "memory": (
        memory_command,
        "Counts (and with --measure measures) a method's training memory.",
        ("method", *_MODEL, "image_size", "batch_size", "measure", *_COMMON),
    ),
    "export": (
        export_command,
        "Writes a trained model as a .tflite file that trains on a device.",
        ("model", "out", "batch_size", "side_lr", "head_lr",
         "label_smoothing", "quantize_backbone", "verbose"),
    ),
    "federate": (
        federate_command,
        "Trains across many clients with Flower: each a LiteRT phone.",
        ("data", "output_dir", "method", *_MODEL, "clients", "rounds",
         "local_epochs", "partition", "strategy", "batch_norm", "wire_dtype",
         "batch_size", "max_examples", "image_size", "validation_split",
         "seed", *_COMMON),
    ),
    "compare": (
        compare_command,
        "Trains several methods on the same data and compares them.",
        (*_RUN, "methods", "measure", *_COMMON),
    ),
}
