"""Median Keras training-step time: the head alone against Rep-Net's
defaults and the options that change what the step computes.

    python bench/step_time.py [--backbones=MobileNetV2,MobileNetV3Small]
        [--image_size=128] [--batch_size=32] [--repeats=15]

Uses the offline ImageNet MobileNetV2 weights when the backbone is
MobileNetV2, random weights otherwise (speed does not depend on them). Prints
a markdown table and writes bench/results/step_time.{json,md}.
"""

import os
import statistics
import time

import keras
import numpy as np
from absl import app
from absl import flags
from common import MOBILENET_V2_WEIGHTS
from common import write_results

import keras_repnet
from keras_repnet.core import backbones

_BACKBONES = flags.DEFINE_list(
    "backbones", ["MobileNetV2", "MobileNetV3Small"], "keras.applications names."
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Input side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Examples per step.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed steps of each model (after a warm-up).")

# `keras_repnet.build` arguments over its defaults; `None`: the head alone.
CONFIGS = {
    "head only (frozen backbone)": None,
    "Rep-Net (defaults)": {},
    "Rep-Net, no side top": {"side_top_channels": 0},
    "Rep-Net, no backbone shifts": {"backbone_shifts": False},
    # Narrower than the defaults: `side_width="auto"` keeps the side network
    # within its share of the backbone's parameters.
    "Rep-Net, 5x5 convs in 2 groups (reference code)": {
        "side_kernel_size": 5,
        "side_groups": 2,
    },
    # The side top needs "up" or "none" connectors: none here.
    "Rep-Net, dual connectors (the paper's), no side top": {"connect": "dual"},
}


def head_only(backbone, shape, weights):
    frozen = backbones.resolve(backbone, shape, weights)
    frozen.trainable = False
    features = keras.layers.GlobalAveragePooling2D()(frozen.output)
    return keras.Model(frozen.input, keras.layers.Dense(5)(features))


def build(backbone, shape, options):
    """The model of a `CONFIGS` entry, compiled with the default recipe."""
    weights = MOBILENET_V2_WEIGHTS if backbone == "MobileNetV2" else None
    with backbones.random_weights_on_purpose():
        if options is None:
            model = head_only(backbone, shape, weights)
        else:
            model = keras_repnet.build(
                backbone, 5, input_shape=shape, weights=weights, **options
            )
    keras_repnet.Recipe().compile(model, total_steps=1000)
    return model


def step_rows(backbone, shape, batch):
    """One row per configuration: the median of `--repeats` steps, timed in
    rounds that take one step of each model in turn (each round starting
    one model later), so that a slow spell of the machine falls on every
    configuration alike."""
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, *shape)).astype("float32")
    labels = rng.integers(0, 5, batch)
    models = {name: build(backbone, shape, options) for name, options in CONFIGS.items()}
    for model in models.values():
        model.train_on_batch(images, labels)  # traces the step
    seconds = {name: [] for name in models}
    names = list(models)
    for round_index in range(_REPEATS.value):
        first = round_index % len(names)
        for name in names[first:] + names[:first]:
            start = time.perf_counter()
            models[name].train_on_batch(images, labels)
            seconds[name].append(time.perf_counter() - start)
    rows = [
        {
            "backbone": backbone,
            "configuration": name,
            "step ms": round(statistics.median(seconds[name]) * 1000),
            "step ms range": f"{min(seconds[name]) * 1000:.0f}-{max(seconds[name]) * 1000:.0f}",
            "trainable params": f"{keras_repnet.parameter_counts(model)['trainable']:,}",
        }
        for name, model in models.items()
    ]
    keras.backend.clear_session()
    return rows


def main(_):
    size, batch = _IMAGE_SIZE.value, _BATCH_SIZE.value
    rows = [
        row
        for backbone in _BACKBONES.value
        for row in step_rows(backbone, (size, size, 3), batch)
    ]
    write_results(
        "step_time",
        rows,
        ["backbone", "configuration", "step ms", "step ms range", "trainable params"],
        {
            "image_size": size,
            "batch_size": batch,
            "repeats": _REPEATS.value,
            "cpu_cores": os.cpu_count(),
        },
    )


if __name__ == "__main__":
    app.run(main)
