"""Median training-step time: head only vs Rep-Net module designs.

    python bench/step_time.py [--backbone=MobileNetV2] [--image_size=128]
        [--batch_size=32] [--repeats=5]

Uses the offline ImageNet MobileNetV2 weights when the backbone is
MobileNetV2, random weights otherwise (speed does not depend on them). Prints
a markdown table and writes bench/results/step_time.{json,md}.
"""

import keras
import numpy as np
from absl import app
from absl import flags
from common import NO_SIDE_TOP
from common import MOBILENET_V2_WEIGHTS
from common import median_seconds
from common import write_results

import keras_repnet
from keras_repnet.core import backbones

_BACKBONE = flags.DEFINE_string("backbone", "MobileNetV2", "keras.applications name.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Input side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Examples per step.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps (after a warm-up).")

CONFIGS = {
    "head only (frozen backbone)": None,
    "Rep-Net dual, 3x3 conv (default)": {},
    "Rep-Net dual, 5x5 conv in 2 groups (reference code)": {
        "side_kernel_size": 5,
        "side_groups": 2,
    },
    "Rep-Net none (side net only, 5x5/2 groups)": {
        "connect": "none",
        "side_kernel_size": 5,
        "side_groups": 2,
    },
}


def head_only(backbone, shape, weights):
    frozen = backbones.resolve(backbone, shape, weights)
    frozen.trainable = False
    features = keras.layers.GlobalAveragePooling2D()(frozen.output)
    return keras.Model(frozen.input, keras.layers.Dense(5)(features))


def main(_):
    size, batch = _IMAGE_SIZE.value, _BATCH_SIZE.value
    shape = (size, size, 3)
    weights = MOBILENET_V2_WEIGHTS if _BACKBONE.value == "MobileNetV2" else None
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, *shape)).astype("float32")
    labels = rng.integers(0, 5, batch)
    rows = []
    for name, kwargs in CONFIGS.items():
        if kwargs is None:
            model = head_only(_BACKBONE.value, shape, weights)
        else:
            model = keras_repnet.build(
                _BACKBONE.value, 5, input_shape=shape, weights=weights,
                **{**NO_SIDE_TOP, **kwargs},
            )
        keras_repnet.Recipe().compile(model, total_steps=1000)
        seconds = median_seconds(
            lambda: model.train_on_batch(images, labels), _REPEATS.value
        )
        rows.append(
            {
                "configuration": name,
                "step ms": round(seconds * 1000),
                "trainable params": f"{keras_repnet.parameter_counts(model)['trainable']:,}",
            }
        )
        keras.backend.clear_session()
    write_results(
        "step_time",
        rows,
        ["configuration", "step ms", "trainable params"],
        {"backbone": _BACKBONE.value, "image_size": size, "batch_size": batch},
    )


if __name__ == "__main__":
    app.run(main)
