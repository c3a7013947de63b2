"""The `keras-repnet` command line.

    keras-repnet train --data=PATH [--backbone=MobileNetV2] [--weights=PATH]
    keras-repnet memory --backbone=MobileNetV2 --image_size=224 --measure
    keras-repnet export --model=runs/train/model.keras --out=model.tflite
    keras-repnet compare --data=PATH --methods=repnet,ft-last --epochs=3

Flags may be spelled with dashes too (`--image-size`).
"""

import sys

from absl import app
from absl import flags

from keras_repnet.core.builder import CONNECT_MODES
from keras_repnet.methods.registry import REPNET_LEARNING_RATES

COMMANDS = ("train", "memory", "export", "compare")

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
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir",
    "runs/train",
    "Where model.keras, results.json and history.png are written. Running "
    "again with the same folder resumes an interrupted run.",
)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size",
    None,
    "Side of the square input images, in pixels. Defaults to 224.",
    lower_bound=1,
)
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size",
    None,
    "Examples per training step. Defaults to 32 for `train` and `compare`, "
    "8 for `memory` and `export`.",
    lower_bound=1,
)
_SIDE_LR = flags.DEFINE_float(
    "side_lr",
    REPNET_LEARNING_RATES[0],
    "Peak learning rate of the Rep-Net modules (cosine decay), in `train`, "
    "`compare` and on device (`export`).",
)
_HEAD_LR = flags.DEFINE_float(
    "head_lr",
    REPNET_LEARNING_RATES[1],
    "Peak learning rate of the classifier head (cosine decay), in `train`, "
    "`compare` and on device (`export`).",
)
_LABEL_SMOOTHING = flags.DEFINE_float(
    "label_smoothing", 0.1, "Label smoothing.", lower_bound=0.0, upper_bound=1.0
)
_CONNECT = flags.DEFINE_enum(
    "connect", "up", CONNECT_MODES, "How Rep-Net and the backbone exchange features."
)
_VALIDATION_SPLIT = flags.DEFINE_float(
    "validation_split", 0.2, "Share of the data held out for validation."
)
_SEED = flags.DEFINE_integer("seed", 1337, "Seed of the split and the training.")
_MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples", None, "Use at most this many examples (quick runs)."
)
# Read by the console script (keras_repnet_launcher) before TensorFlow starts.
flags.DEFINE_bool(
    "verbose",
    False,
    "Show TensorFlow's start-up logs, which `keras-repnet` holds back unless "
    "TF_CPP_MIN_LOG_LEVEL is set.",
)


# `memory`
_MEASURE = flags.DEFINE_bool(
    "measure",
    False,
    "Also run training steps in a fresh process and report the measured peak.",
)
_METHOD = flags.DEFINE_string(
    "method", "repnet", "Transfer method whose memory `memory` reports."
)
# `export`
_MODEL = flags.DEFINE_string("model", None, "A trained model, `model.keras`.")
_OUT = flags.DEFINE_string("out", None, "Where the `.tflite` file is written.")
_QUANTIZE_BACKBONE = flags.DEFINE_bool(
    "quantize_backbone", False, "Store the frozen backbone's weights in int8."
)
# `compare`
_METHODS = flags.DEFINE_list(
    "methods", None, "Transfer methods to compare (default: all of them)."
)


def _value(flag, default):
    return default if flag.value is None else flag.value


def _training_arguments():
    """The data, backbone and schedule flags `train` and `compare` share."""
    return dict(
        data=_DATA.value,
        test_data=_TEST_DATA.value,
        backbone=_BACKBONE.value,
        weights=_weights(_WEIGHTS.value),
        image_size=_value(_IMAGE_SIZE, 224),
        epochs=_EPOCHS.value,
        batch_size=_value(_BATCH_SIZE, 32),
        label_smoothing=_LABEL_SMOOTHING.value,
        validation_split=_VALIDATION_SPLIT.value,
        seed=_SEED.value,
        max_examples=_MAX_EXAMPLES.value,
    )


def _weights(value):
    return None if value.lower() == "none" else value


def train_command():
    from keras_repnet.apps import training

    if _DATA.value is None:
        raise app.UsageError("`train` needs --data (an image folder, for example).")
    results = training.train(
        **_training_arguments(),
        output_dir=_OUTPUT_DIR.value,
        side_learning_rate=_SIDE_LR.value,
        head_learning_rate=_HEAD_LR.value,
        connect=_CONNECT.value,
    )
    params = results["parameters"]
    print(
        f"Validation accuracy: {results['validation_accuracy']:.4f} "
        f"(best {results['best_validation_accuracy']:.4f}) on "
        f"{results['num_validation']} images after {_EPOCHS.value} epochs."
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
    print(f"Wall time: {results['wall_time_s']} s. Outputs in {_OUTPUT_DIR.value}/")


def memory_command():
    from keras_repnet import memory
    from keras_repnet import methods

    size, batch = _value(_IMAGE_SIZE, 224), _value(_BATCH_SIZE, 8)
    # Memory does not depend on the weights: random ones unless asked.
    weights = _weights(_WEIGHTS.value) if _WEIGHTS.present else None
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

    import keras

    from keras_repnet import export

    if _MODEL.value is None or _OUT.value is None:
        raise app.UsageError(
            "`export` needs --model (a .keras file) and --out (the .tflite "
            "file to write)."
        )
    if not os.path.exists(_MODEL.value):
        raise FileNotFoundError(f"Model file not found: --model={_MODEL.value}")
    model = keras.models.load_model(_MODEL.value)
    # `keras-repnet train` writes the class names beside the model.
    results = os.path.join(os.path.dirname(_MODEL.value), "results.json")
    class_names = None
    if os.path.exists(results):
        with open(results) as f:
            class_names = json.load(f).get("class_names")
    path = export.export_tflite(
        model,
        _OUT.value,
        batch_size=_value(_BATCH_SIZE, 8),
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


def compare_command():
    from keras_repnet.apps.comparison import compare
    from keras_repnet.apps.reports import markdown

    if _DATA.value is None:
        raise app.UsageError(
            "`compare` needs --data (an image folder, for example)."
        )
    output_dir = _OUTPUT_DIR.value
    if output_dir == _OUTPUT_DIR.default:
        output_dir = "runs/compare"
    results = compare(
        **_training_arguments(),
        methods=_METHODS.value,
        output_dir=output_dir,
        measure=_MEASURE.value,
    )
    print(markdown(results))
    print(f"Outputs in {output_dir}/ (results.md, results.json, pareto.png, curves.png)")


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"Expected one command out of {COMMANDS}. Received: {argv[1:]}. "
            "Example: keras-repnet train --data=photos/"
        )
    command = {
        "train": train_command,
        "memory": memory_command,
        "export": export_command,
        "compare": compare_command,
    }[argv[1]]
    try:
        command()
    except (ValueError, FileNotFoundError, ImportError) as error:
        # Bad input: the message says what was received and what to do.
        raise app.UsageError(str(error)) from error


def _underscored(arg):
    """`--image-size=8` -> `--image_size=8`: dashes are accepted in names."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + sep + value


def run():
    # absl's --help prints the __main__ module's docstring; a console
    # script's has none.
    sys.modules["__main__"].__doc__ = __doc__
    sys.argv = [sys.argv[0]] + [_underscored(arg) for arg in sys.argv[1:]]
    app.run(main)


if __name__ == "__main__":
    run()
