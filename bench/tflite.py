"""On-device training with LiteRT: file sizes, speed, memory, accuracy.

    python bench/tflite.py                 # full run (see below)
    python bench/tflite.py --short         # a smoke run of a few minutes
    python bench/tflite.py --noaccuracy --backbones=MobileNetV2 --threads=1,2 \
        --rounds=7 --results_name=tflite_ab   # the speed A/B, more rounds

For each backbone (MobileNetV2 with the offline ImageNet weights,
MobileNetV3Small with random weights: sizes and speed do not depend on them)
it exports a Rep-Net with `keras_repnet.export_tflite` (float, with an int8
backbone, and float with `share_weights=False`: the export before weight
sharing, and float without the backbone shifts: the step without a
backward pass through the backbone) and compares the file sizes with the
float inference-only model; then, in a fresh process that imports only
`ai_edge_litert` (as on a device: bench/litert_worker.py), it times
`train` (batch 8) and `infer` (batch 1 and 8) with 1, 2 and 4 threads,
with and without XNNPACK, and measures the interpreter's memory (peak
RSS over the process before the interpreter existed). Every configuration
runs in each of `--rounds` rounds in turn (the median is reported, with the
train step's range over the rounds), so that a slow spell of a shared
machine does not land on one file only. The Keras train step on the same batch is timed too. Run it on an
otherwise idle machine: the timings share its cores.

The accuracy check trains MobileNetV2 on the flower photos (near domain) and
the sign-language digits (far domain), twice each (seeds 0 and 1: the split,
the batches and the initial weights), and within a seed from the same
initial weights on the same (augmented, shuffled) batches, with Keras
(`train_on_batch`) and with the exported model in LiteRT (float and int8
backbone), and compares the final validation accuracies. The models have no
dropout, so both sides see exactly the same computation; any gap comes from
numerics. Full run: all training images (flowers 3454, 863 validation; sign
digits 1650, 412), 2 epochs at 128 px; `--short`: at most 400 training and
400 validation images, 1 epoch at 96 px.

Issue 24's targets, met or not, go to `tflite_targets`: the train step
against `infer` at the same batch, the train peak RSS against an
interpreter of the same file that only infers (its own process), int8
against float RSS, and without XNNPACK the shared-weights file against the
kernel copies; beside the first two, the same ratios without the backbone
shifts, what the step costs when no gradient crosses the backbone.

Prints markdown tables and writes
bench/results/tflite{,_speed,_targets,_accuracy}.{json,md} (`--short`
writes tflite*_short).
"""

import json
import os
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from common import FLOWERS
from common import SHARED_ASSETS
from common import bench_model as build
from common import median_seconds
from common import run_worker
from common import write_results
import litert_targets

import keras_repnet
from keras_repnet import data
from keras_repnet import export

_SHORT = flags.DEFINE_bool("short", False, "A quick smoke run (small sizes).")
_BACKBONES = flags.DEFINE_list(
    "backbones", ["MobileNetV2", "MobileNetV3Small"], "keras.applications names."
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Input side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per train step.")
_THREADS = flags.DEFINE_list(
    "threads", ["1", "2", "4"], "LiteRT interpreter threads to time."
)
# Threads of the accuracy check's interpreters.
ACCURACY_THREADS = 2
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls (after a warm-up).")
_NAME = flags.DEFINE_string(
    "results_name", "tflite", "Results go to bench/results/NAME{,_speed,_accuracy}."
)
_ROUNDS = flags.DEFINE_integer(
    "rounds", 3, "Worker runs per configuration, interleaved with the others."
)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs of the accuracy check.")
_MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples", None, "Training images of the accuracy check (all if unset)."
)
_ACCURACY = flags.DEFINE_bool("accuracy", True, "Run the accuracy check.")
_SPEED = flags.DEFINE_bool("speed", True, "Measure sizes and speed.")

CLASSES = 5
MIB = 2**20
# The accuracy check's seeds (each a split, batches and initial weights).
ACCURACY_SEEDS = (0, 1)
# The accuracy check's sets: the near-domain flowers and a far-domain one.
ACCURACY_SETS = {
    "flowers": FLOWERS,
    "sign_digits": str(SHARED_ASSETS / "datasets" / "sign_language_digits"),
}


def main(_):
    short = _SHORT.value
    size = 96 if short else _IMAGE_SIZE.value
    repeats = 3 if short else _REPEATS.value
    suffix = "_short" if short else ""
    settings = {
        "image_size": size,
        "batch_size": _BATCH_SIZE.value,
        "threads": [int(t) for t in _THREADS.value],
        "repeats": repeats,
        "rounds": 1 if short else _ROUNDS.value,
        "learning_rate": _LEARNING_RATE.value,
        "cpu_cores": os.cpu_count(),
    }
    if _SPEED.value:
        sizes, speeds = [], []
        for name in _BACKBONES.value:
            size_row, speed_rows = measure(name, size, repeats)
            sizes.append(size_row)
            speeds += speed_rows
        write_results(_NAME.value + suffix, sizes, list(sizes[0]), settings)
        write_results(_NAME.value + "_speed" + suffix, speeds, list(speeds[0]), settings)
        targets = litert_targets.target_rows(speeds, _BATCH_SIZE.value)
        write_results(
            _NAME.value + "_targets" + suffix, targets, list(targets[0]), settings
        )
    if _ACCURACY.value:
        epochs = 1 if short else _EPOCHS.value
        max_examples = 400 if short else _MAX_EXAMPLES.value
        rows = [
            row
            for set_name, folder in ACCURACY_SETS.items()
            for seed in ACCURACY_SEEDS
            for row in accuracy_rows(
                set_name, folder, size, epochs, max_examples, seed
            )
        ]
        write_results(
            _NAME.value + "_accuracy" + suffix,
            rows,
            list(rows[0]),
            {**settings, "epochs": epochs, "max_examples": max_examples},
        )


# === Sizes, speed and memory ===



def measure(name, size, repeats):
    """The file sizes of one backbone's exports, and the LiteRT timings of
    each file at every thread count, with and without XNNPACK."""
    model = build(name, size)
    batch = _BATCH_SIZE.value
    speeds = []
    with tempfile.TemporaryDirectory() as folder:
        paths = {
            "float": os.path.join(folder, "float.tflite"),
            "int8": os.path.join(folder, "int8.tflite"),
            # The export before weight sharing, for comparison.
            "float, kernel copies": os.path.join(folder, "copies.tflite"),
        }
        start = time.perf_counter()
        export.export_tflite(model, paths["float"], batch_size=batch)
        export_seconds = time.perf_counter() - start
        export.export_tflite(
            model, paths["int8"], batch_size=batch, quantize_backbone=True
        )
        export.export_tflite(
            model, paths["float, kernel copies"], batch_size=batch, share_weights=False
        )
        # The same Rep-Net without the backbone shifts: no gradient crosses
        # the backbone, so its step is the side network's and the head's
        # alone (what limits the targets, beside the defaults).
        paths[litert_targets.NO_SHIFTS] = os.path.join(folder, "no_shifts.tflite")
        export.export_tflite(
            build(name, size, backbone_shifts=False),
            paths[litert_targets.NO_SHIFTS],
            batch_size=batch,
        )
        inference_bytes = inference_only_size(model, folder)
        # Rounds over every configuration in turn, so that a slow spell of
        # the machine lands on all of them; each figure is the median of
        # the rounds' medians, with the train step's range beside it.
        configs = [
            (weights, int(threads), xnnpack)
            for weights in paths
            for threads in _THREADS.value
            for xnnpack in (True, False)
        ]
        runs = {config: [] for config in configs}
        for _ in range(1 if _SHORT.value else _ROUNDS.value):
            for weights, threads, xnnpack in configs:
                path = paths[weights]
                runs[weights, threads, xnnpack].append(
                    {
                        **run_worker(path, repeats, threads, xnnpack),
                        **run_worker(path, repeats, threads, xnnpack, train=False),
                    }
                )
        for (weights, threads, xnnpack), timings in runs.items():
            median = {
                field: statistics.median(t[field] for t in timings)
                for field in timings[0]
            }
            train = [t["train_ms"] for t in timings]
            speeds.append(
                {
                    "backbone": name,
                    "weights": weights,
                    "threads": threads,
                    "XNNPACK": "yes" if xnnpack else "no",
                    f"train ms (batch {batch})": median["train_ms"],
                    "train ms range": f"{min(train)}-{max(train)}",
                    "infer ms (batch 1)": median["infer_ms"],
                    f"infer ms (batch {batch})": median["infer_batch_ms"],
                    "peak RSS MiB": median["peak_rss_mib"],
                    "infer-only peak RSS MiB": median["infer_only_peak_rss_mib"],
                }
            )
        float_bytes = os.path.getsize(paths["float"])
        int8_bytes = os.path.getsize(paths["int8"])
        int8_quantization = quantization_bytes(paths["int8"])
        copies_bytes = os.path.getsize(paths["float, kernel copies"])
    counts = keras_repnet.parameter_counts(model)
    sizes = {
        "backbone": name,
        "trainable params": f"{counts['trainable']:,}",
        "inference-only MiB": round(inference_bytes / MIB, 2),
        "train float MiB": round(float_bytes / MIB, 2),
        "float / inference": round(float_bytes / inference_bytes, 3),
        "kernel copies MiB": round(copies_bytes / MIB, 2),
        "copies / inference": round(copies_bytes / inference_bytes, 3),
        "train int8-backbone MiB": round(int8_bytes / MIB, 2),
        "int8 / float": round(int8_bytes / float_bytes, 3),
        "int8 scales + zero points MiB": round(int8_quantization / MIB, 2),
        "export s": round(export_seconds),
        f"Keras train ms (batch {batch})": keras_step_ms(model, name, size, repeats),
    }
    return sizes, speeds


def inference_only_size(model, folder):
    """Bytes of the plain float inference model (Keras export, converter)."""
    saved_model = os.path.join(folder, "inference")
    model.export(saved_model, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    return len(converter.convert())


def quantization_bytes(path):
    """Bytes of the per-channel quantization parameters a `.tflite` file
    stores: a float32 scale and an int64 zero point per channel, each
    distinct vector once (`export.quantize.share_quantization_vectors`:
    every signature's view of a shared int8 buffer points at one copy)."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(f.read(), 0))
    vectors = set()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            quantization = tensor.quantization
            if quantization is not None and quantization.scale is not None:
                scale = np.asarray(quantization.scale, np.float32)
                zero_point = np.asarray(quantization.zeroPoint, np.int64)
                vectors.add(("scale", scale.tobytes()))
                vectors.add(("zero point", zero_point.tobytes()))
    return sum(len(data) for _, data in vectors)


def keras_step_ms(model, name, size, repeats):
    """Median Keras train step (graph mode) on one batch, in ms."""
    images, labels = _batch(size, _BATCH_SIZE.value)
    preprocess = data.preprocessing_for(name)
    images = preprocess(images.copy())
    model.recipe.compile(model, total_steps=1000)
    seconds = median_seconds(lambda: model.train_on_batch(images, labels), repeats)
    return round(seconds * 1000, 1)


def _batch(size, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    return images, rng.integers(0, CLASSES, batch_size).astype("int32")


# === Accuracy on the flower photos ===


def accuracy_rows(set_name, folder, size, epochs, max_examples, seed):
    """Final validation accuracy of Keras vs LiteRT training (MobileNetV2)
    on one image folder; `seed` draws the split, the batches and the
    initial side network and head."""
    from ai_edge_litert.interpreter import Interpreter

    batch = _BATCH_SIZE.value
    keras.utils.set_random_seed(seed)
    splits = data.load(
        folder,
        image_size=size,
        batch_size=batch,
        preprocess=None,
        max_examples=max_examples,
        seed=seed,
    )
    # The same shuffled, augmented batches for both sides (uint8 to save
    # memory); LiteRT's train signature takes full batches only.
    batches = [
        (np.uint8(np.clip(np.round(x), 0, 255)), y.astype("int32"))
        for _ in range(epochs)
        for x, y in splits.train.as_numpy_iterator()
        if len(y) == batch
    ]
    val_x = np.concatenate([x for x, _ in splits.validation.as_numpy_iterator()])
    val_y = np.concatenate([y for _, y in splits.validation.as_numpy_iterator()])
    model = build("MobileNetV2", size, dropout=0.0, num_classes=splits.num_classes)
    # One constant rate for side and head on both sides; the loss is the
    # recipe's, which the export and Keras share.
    model.recipe = model.recipe.replace(
        side_learning_rate=_LEARNING_RATE.value,
        head_learning_rate=_LEARNING_RATE.value,
    )
    preprocess = data.preprocessing_for("MobileNetV2")
    rows = []
    rate = np.float32(_LEARNING_RATE.value)
    with tempfile.TemporaryDirectory() as folder:
        for quantize in (False, True):
            path = os.path.join(folder, f"{quantize}.tflite")
            export.export_tflite(
                model,
                path,
                batch_size=batch,
                quantize_backbone=quantize,
                class_names=splits.class_names,
            )
            interpreter = Interpreter(model_path=path, num_threads=ACCURACY_THREADS)
            train = interpreter.get_signature_runner("train")
            infer = interpreter.get_signature_runner("infer")
            start = time.perf_counter()
            losses = [
                float(train(x=np.float32(x), y=y, learning_rate=rate)["loss"])
                for x, y in batches
            ]
            seconds = time.perf_counter() - start
            logits = np.concatenate(
                [
                    infer(x=val_x[i : i + 64])["logits"]
                    for i in range(0, len(val_x), 64)
                ]
            )
            rows.append(
                _accuracy_row(
                    "LiteRT, int8 backbone" if quantize else "LiteRT, float",
                    logits,
                    val_y,
                    losses,
                    seconds,
                )
            )
    model.compile(
        optimizer=model.recipe.make_optimizer(),  # the constant peak rate
        loss=model.recipe.make_loss(),
        jit_compile=False,
    )
    start = time.perf_counter()
    losses = []
    for x, y in batches:
        model.reset_metrics()  # Keras < 3.15 averages since the last reset.
        losses.append(float(model.train_on_batch(preprocess(np.float32(x)), y)))
    seconds = time.perf_counter() - start
    logits = model.predict(preprocess(val_x.copy()), verbose=0)
    rows.insert(0, _accuracy_row("Keras", logits, val_y, losses, seconds))
    return [
        {
            "set": set_name,
            "seed": seed,
            **row,
            "train images": splits.num_train,
            "validation images": splits.num_validation,
            "steps": len(batches),
        }
        for row in rows
    ]


def _accuracy_row(name, logits, labels, losses, seconds):
    tail = max(1, len(losses) // 10)
    return {
        "trained with": name,
        "validation accuracy": round(float((logits.argmax(-1) == labels).mean()), 4),
        "first loss": round(losses[0], 4),
        "mean loss, last 10% of steps": round(statistics.mean(losses[-tail:]), 4),
        "train s": round(seconds, 1),
    }


if __name__ == "__main__":
    app.run(main)
