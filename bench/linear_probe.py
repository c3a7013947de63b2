"""How far a linear classifier on the frozen backbone's pooled features gets.

    python bench/linear_probe.py [--image_sizes=96,128,224] [--max_examples=1000]

The ceiling of the offline ImageNet MobileNetV2 weights on the flower photos:
features are computed once without augmentation and a softmax classifier is
trained on them to convergence (100 epochs of Adam). Prints a markdown table
and writes bench/results/linear_probe.{json,md}.
"""

import keras
import numpy as np
from absl import app
from absl import flags
from common import FLOWERS
from common import as_recorded
from common import MOBILENET_V2_WEIGHTS
from common import write_results

from keras_repnet import data

_IMAGE_SIZES = flags.DEFINE_list("image_sizes", ["96", "128", "224"], "Input sides.")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 1000, "Examples per split.")


def pooled_features(backbone, dataset):
    parts = [(backbone.predict_on_batch(x), y.numpy()) for x, y in dataset]
    return tuple(np.concatenate(p) for p in zip(*parts))


def main(_):
    rows = []
    for size in map(int, _IMAGE_SIZES.value):
        splits = data.load(
            FLOWERS,
            image_size=size,
            batch_size=64,
            preprocess=data.preprocessing_for("MobileNetV2"),
            augment=False,
            max_examples=_MAX_EXAMPLES.value,
        )
        backbone = keras.applications.MobileNetV2(
            weights=MOBILENET_V2_WEIGHTS,
            include_top=False,
            input_shape=(size, size, 3),
            pooling="avg",
        )
        x_train, y_train = pooled_features(backbone, splits.train)
        x_val, y_val = pooled_features(backbone, splits.validation)
        probe = keras.Sequential(
            [keras.Input(x_train.shape[1:]), keras.layers.Dense(splits.num_classes)]
        )
        probe.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        probe.fit(x_train, y_train, epochs=100, batch_size=64, verbose=0)
        rows.append(
            {
                "image size": size,
                "train examples": len(y_train),
                "validation examples": len(y_val),
                "train accuracy": round(probe.evaluate(x_train, y_train, verbose=0)[1], 3),
                "validation accuracy": round(probe.evaluate(x_val, y_val, verbose=0)[1], 3),
            }
        )
    write_results(
        "linear_probe",
        rows,
        list(rows[0]),
        {
            "max_examples": _MAX_EXAMPLES.value,
            "weights": as_recorded(MOBILENET_V2_WEIGHTS),
        },
    )


if __name__ == "__main__":
    app.run(main)
