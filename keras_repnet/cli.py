"""The `keras-repnet` command line.

    keras-repnet train --data=PATH [--backbone=MobileNetV3Small] [--weights=PATH]
    keras-repnet memory --backbone=MobileNetV2 --image_size=224 --measure
    keras-repnet export --model=runs/train/model.keras --out=model.tflite
    keras-repnet compare --data=PATH --methods=repnet,ft-last --epochs=3
    keras-repnet federate --data=PATH --clients=10 --rounds=20 --partition=dirichlet:0.5

`keras-repnet COMMAND --help` lists a command's flags with their defaults.
Flags may be spelled with dashes too (`--image-size`). Settings left out
come from the method's recipe (`keras_repnet.methods.recipe_for`).
"""

import sys
import warnings

from absl import app
from absl import flags

from keras_repnet.core.recipe import REPNET

_DATA = flags.DEFINE_string(
    "data",
    None,
    "Training data: an image folder (one sub-folder per class), a folder of "
    "MNIST-format idx files, an .npz file with x and y, or tfds:NAME.",
)
_TEST_DATA = flags.DEFINE_string(
    "test_data",
    None,
    "A separate test set (same forms as --data), evaluated once at the end. "
    "Defaults to the data's own test split (a test/ folder beside train/, "
    "idx t10k files, npz x_test), if any.",
)
_BACKBONE = flags.DEFINE_string(
    "backbone", "MobileNetV2", "A keras.applications model name."
)
_WEIGHTS = flags.DEFINE_string(
    "weights",
    "imagenet",
    'Backbone weights: "imagenet" (download), "none" (random) or a file path.',
)
_METHOD = flags.DEFINE_string(
    "method",
    "repnet",
    "The transfer method (keras_repnet.methods.METHODS); its recipe gives the "
    "defaults of the training settings.",
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir",
    None,
    "Where results are written. Defaults to runs/train (train) or "
    "runs/compare (compare). Running again with the same folder resumes an "
    "interrupted run.",
)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size",
    None,
    f"Side of the square input images, in pixels. Defaults to the recipe's "
    f"({REPNET.image_size}).",
    lower_bound=1,
)
_EPOCHS = flags.DEFINE_integer(
    "epochs", None, f"Training epochs. Defaults to the recipe's ({REPNET.epochs}).",
    lower_bound=1,
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size",
    None,
    f"Examples per step. Defaults to the recipe's ({REPNET.batch_size}) in "
    "train and compare, 8 (the device's batch) in memory and export.",
    lower_bound=1,
)
_SIDE_LR = flags.DEFINE_float(
    "side_lr",
    None,
    "Peak learning rate of everything outside the head (cosine decay). "
    f"Defaults to the recipe's ({REPNET.side_learning_rate:g} for repnet); in "
    "export, the model's.",
)
_HEAD_LR = flags.DEFINE_float(
    "head_lr",
    None,
    "Peak learning rate of the classifier head (cosine decay). Defaults to "
    f"the recipe's ({REPNET.head_learning_rate:g} for repnet); in export, the "
    "model's.",
)
_LABEL_SMOOTHING = flags.DEFINE_float(
    "label_smoothing",
    None,
    f"Label smoothing. Defaults to the recipe's ({REPNET.label_smoothing:g}); "
    "in export, the model's.",
    lower_bound=0.0,
    upper_bound=1.0,
)
_VALIDATION_SPLIT = flags.DEFINE_float(
    "validation_split",
    None,
    "Share of the data held out for validation. Defaults to the recipe's "
    f"({REPNET.validation_split:g}).",
)
_SEED = flags.DEFINE_integer(
    "seed",
    None,
    f"Seed of the split and the training. Defaults to the recipe's ({REPNET.seed}).",
)
_MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples", None, "Use at most this many examples (quick runs)."
)
_STRICT_IMAGES = flags.DEFINE_bool(
    "strict_images",
    False,
    "Stop at the first file of an image folder that cannot be decoded, "
    "instead of skipping it (each skipped file is reported).",
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Train again even if --output_dir holds this run, finished. Without it "
    "a finished run is left as it is (more --epochs continue it) and an "
    "interrupted one resumes.",
)
# Read by the console script (keras_repnet_launcher) before TensorFlow starts.
flags.DEFINE_bool(
    "verbose",
    False,
    "Show TensorFlow's logs, which keras-repnet holds back unless "
    "TF_CPP_MIN_LOG_LEVEL is set.",
)
# `memory`
_MEASURE = flags.DEFINE_bool(
    "measure",
    False,
    "Also run training steps in a fresh process and report the measured peak.",
)
# `export`
_MODEL = flags.DEFINE_string("model", None, "A trained model, `model.keras`.")
_OUT = flags.DEFINE_string("out", None, "Where the `.tflite` file is written.")
_QUANTIZE_BACKBONE = flags.DEFINE_bool(
    "quantize_backbone", False, "Store the frozen backbone's weights in int8."
)
# `federate`
_CLIENTS = flags.DEFINE_integer("clients", 10, "Clients (SuperNodes).", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 20, "Federated rounds.", lower_bound=1)
_LOCAL_EPOCHS = flags.DEFINE_integer(
    "local_epochs", 1, "Passes over its examples a client makes a round.",
    lower_bound=1,
)
_PARTITION = flags.DEFINE_string(
    "partition", "dirichlet:0.5",
    'How the clients share the data: "iid" or "dirichlet:ALPHA" (non-IID '
    "labels, lower ALPHA less even).",
)
_STRATEGY = flags.DEFINE_enum(
    "strategy", "fedavg", ["fedavg", "fedadam"], "Flower's aggregation."
)
_BATCH_NORM = flags.DEFINE_enum(
    "batch_norm", "global", ["global", "local"],
    "Average the side network's batch-norm statistics (global), or keep them "
    "on each client (local, FedBN).",
)
# `compare`
_METHODS = flags.DEFINE_list(
    "methods", None, "Transfer methods to compare (default: all of them)."
)

# Recipe fields set by flags, for train and compare.
_RECIPE_FLAGS = {
    "image_size": _IMAGE_SIZE,
    "epochs": _EPOCHS,
    "batch_size": _BATCH_SIZE,
    "label_smoothing": _LABEL_SMOOTHING,
    "validation_split": _VALIDATION_SPLIT,
    "seed": _SEED,
}


def _run_arguments(output_dir):
    """The arguments `train` and `compare` share: the data, the backbone,
    where results go and the recipe fields the flags set."""
    return dict(
        test_data=_TEST_DATA.value,
        backbone=_BACKBONE.value,
        weights=_weights(_WEIGHTS.value),
        output_dir=output_dir,
        max_examples=_MAX_EXAMPLES.value,
        **_recipe_changes(),
    )


def _weights(value):
    return None if value.lower() == "none" else value


def _require(flag, message):
    if flag.value is None:
        raise app.UsageError(message)


def _interrupted(line):
    """Ends a command stopped by Ctrl-C with one line, no traceback."""
    print(line, file=sys.stderr)
    sys.exit(130)


def train_command():
    from keras_repnet.apps import resumable
    from keras_repnet.apps import training

    _require(_DATA, "`train` needs --data (an image folder, for example).")
    output_dir = _OUTPUT_DIR.value or "runs/train"
    try:
        results = training.train(
            _DATA.value,
            method=_METHOD.value,
            side_learning_rate=_SIDE_LR.value,
            head_learning_rate=_HEAD_LR.value,
            strict_images=_STRICT_IMAGES.value,
            overwrite=_OVERWRITE.value,
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

    size = _IMAGE_SIZE.value or REPNET.image_size
    batch = _BATCH_SIZE.value or _DEVICE_BATCH_SIZE
    # Memory does not depend on the weights: random ones unless asked.
    weights = _weights(_WEIGHTS.value) if _WEIGHTS.present else None
    with backbones.random_weights_on_purpose():
        model = methods.build_method(
            _METHOD.value,
            _BACKBONE.value,
            10,
            input_shape=(size, size, 3),
            weights=weights,
        )
    profile = memory.profile(model, batch)
    print(profile.format())
    if profile.lean_backward:
        plain = memory.profile(model, batch, lean_backward=False)
        print(
            f"  (with plain autodiff, ours: step peak "
            f"{plain.ours.peak_bytes / 1e6:.1f} MB)"
        )
    if not _MEASURE.value:
        return
    try:
        measured = memory.measure(
            _METHOD.value, _BACKBONE.value, image_size=size, batch_size=batch
        )
        floor = memory.measure(
            memory.INFERENCE, _BACKBONE.value, image_size=size, batch_size=batch
        )
    except RuntimeError as error:
        raise app.UsageError(str(error)) from error
    print(
        f"Measured step peak: {measured.peak_mb:.1f} MB "
        f"(analytic ours / measured: "
        f"{profile.ours.peak_bytes / measured.peak_bytes:.2f}), step "
        f"{measured.step_seconds * 1000:.0f} ms.\n"
        f"Inference floor (frozen {_BACKBONE.value}, forward only): "
        f"{floor.peak_mb:.1f} MB; the step peak is "
        f"{measured.peak_bytes / floor.peak_bytes:.2f}x that."
    )


def export_command():
    import json
    import os

    from keras_repnet import export
    from keras_repnet.apps import files

    _require(_MODEL, "`export` needs --model (a .keras file).")
    _require(_OUT, "`export` needs --out (the .tflite file to write).")
    files.check_writable(_OUT.value, "--out")
    files.check_writable(export.sidecar_path(_OUT.value), "--out")
    model = _load_model(_MODEL.value)
    # `keras-repnet train` writes the class names beside the model.
    results = os.path.join(os.path.dirname(_MODEL.value), "results.json")
    class_names = None
    if os.path.exists(results):
        with open(results) as f:
            class_names = json.load(f).get("class_names")
    path = export.export_tflite(
        model,
        _OUT.value,
        batch_size=_BATCH_SIZE.value or _DEVICE_BATCH_SIZE,
        learning_rate=_SIDE_LR.value,
        head_learning_rate=_HEAD_LR.value,
        label_smoothing=_LABEL_SMOOTHING.value,
        class_names=class_names,
        quantize_backbone=_QUANTIZE_BACKBONE.value,
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

    _require(_DATA, "`compare` needs --data (an image folder, for example).")
    output_dir = _OUTPUT_DIR.value or "runs/compare"
    files.check_writable(f"{output_dir}/results.json", "--output_dir")
    try:
        results = compare(
            _DATA.value,
            methods=_METHODS.value,
            measure=_MEASURE.value,
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

    _require(_DATA, "`federate` needs --data (an image folder, for example).")
    output_dir = _OUTPUT_DIR.value or "runs/federated"
    try:
        results = federate.federate(
            _DATA.value,
            backbone=_BACKBONE.value,
            weights=_weights(_WEIGHTS.value),
            method=_METHOD.value,
            output_dir=output_dir,
            clients=_CLIENTS.value,
            rounds=_ROUNDS.value,
            local_epochs=_LOCAL_EPOCHS.value,
            partition=_PARTITION.value,
            strategy=_STRATEGY.value,
            batch_norm=_BATCH_NORM.value,
            batch_size=_BATCH_SIZE.value or _DEVICE_BATCH_SIZE,
            max_examples=_MAX_EXAMPLES.value,
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
    return {name: flag.value for name, flag in _RECIPE_FLAGS.items()}


_COMMON = ("backbone", "weights", "verbose")
_RUN = (
    "data", "test_data", "output_dir", "max_examples", "strict_images",
    *_RECIPE_FLAGS,
)
# Command -> (function, what it does, its flags).
COMMANDS = {
    "train": (
        train_command,
        "Trains a classifier on your images with a method's recipe.",
        (*_RUN, "method", "side_lr", "head_lr", "overwrite", *_COMMON),
    ),
    "memory": (
        memory_command,
        "Counts (and with --measure measures) a method's training memory.",
        ("method", "image_size", "batch_size", "measure", *_COMMON),
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
        ("data", "output_dir", "method", "clients", "rounds", "local_epochs",
         "partition", "strategy", "batch_norm", "batch_size", "max_examples",
         "image_size", "validation_split", "seed", *_COMMON),
    ),
    "compare": (
        compare_command,
        "Trains several methods on the same data and compares them.",
        (*_RUN, "methods", "measure", *_COMMON),
    ),
}


_USAGE = (
    f"usage: keras-repnet {{{','.join(COMMANDS)}}} [flags] "
    "(keras-repnet COMMAND --help lists a command's flags)"
)


def command_help(command: str) -> str:
    """The usage of one command: what it does and its flags with defaults."""
    _, summary, names = COMMANDS[command]
    lines = [f"usage: keras-repnet {command} [flags]", "", summary, "", "flags:"]
    for name in names:
        flag = flags.FLAGS[name]
        default = "" if flag.default is None else f" (default: {flag.default})"
        lines.append(f"  --{name}: {flag.help}{default}")
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"Expected one command out of {tuple(COMMANDS)}. Received: "
            f"{argv[1:]}. Example: keras-repnet train --data=photos/ "
            "(keras-repnet COMMAND --help lists its flags)"
        )
    try:
        COMMANDS[argv[1]][0]()
    except (ValueError, FileNotFoundError, ImportError) as error:
        # Bad input: the message says what was received and what to do.
        raise app.UsageError(str(error)) from error


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line, without the source line Python adds."""
    print(f"Warning: {message}", file=file or sys.stderr)


def _underscored(arg):
    """`--image-size=8` -> `--image_size=8`: dashes are accepted in names."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + sep + value


def run():
    # absl prints the __main__ module's docstring above an error: one line.
    sys.modules["__main__"].__doc__ = _USAGE
    if "--verbose" not in sys.argv:
        # The converter's and TensorFlow's Python INFO and WARNING lines.
        from absl import logging

        logging.set_verbosity(logging.ERROR)
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        warnings.showwarning = _show_warning
    argv = [sys.argv[0]] + [_underscored(arg) for arg in sys.argv[1:]]
    commands = [arg for arg in argv[1:] if arg in COMMANDS]
    if {"--help", "-h", "--helpshort"} & set(argv[1:]):
        print(command_help(commands[0]) if commands else __doc__.strip())
        sys.exit(0)
    sys.argv = argv
    app.run(main)


if __name__ == "__main__":
    run()
