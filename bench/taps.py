"""Connector plan of every CNN in keras.applications (weights=None).

    python bench/taps.py [--image_size=224]

Prints a markdown table (backbone, taps, their resolutions and channels, the
side modules' and the frozen parameters, modules / frozen, the side top's
parameters, backbone shift parameters) and writes
bench/results/taps.{json,md}.
"""

import keras
from absl import app
from absl import flags
from common import write_results

import keras_repnet
from keras_repnet.core import backbones
from keras_repnet.core import plan as plan_lib

_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side in pixels.")


def main(_):
    size = _IMAGE_SIZE.value
    rows = []
    for name in backbones.application_names():
        try:
            model = keras_repnet.build(
                name, 10, input_shape=(size, size, 3), weights=None
            )
        except Exception as error:  # Report, do not hide, what fails.
            rows.append({"backbone": name, "taps": 0, "plan": f"error: {error}"[:120],
                         "module params": "-", "frozen params": "-",
                         "modules / frozen": "-", "side top params": "-",
                         "shifts": "-"})
            continue
        plan = keras_repnet.connector_plan(model)
        counts = keras_repnet.parameter_counts(model)
        top = plan_lib.count_params(
            w
            for layer in model.layers if isinstance(layer, keras_repnet.SideTop)
            for w in layer.trainable_weights
        )
        modules = counts["side"] - top
        rows.append(
            {
                "backbone": name,
                "taps": len(plan),
                "plan": ", ".join(
                    f"{r['shape'][0]}x{r['shape'][1]}x{r['shape'][2]}" for r in plan
                ),
                "module params": f"{modules:,}",
                "frozen params": f"{counts['frozen']:,}",
                "modules / frozen": f"{modules / counts['frozen']:.3f}",
                "side top params": f"{top:,}",
                "shifts": f"{counts['shifts']:,}",
            }
        )
        keras.backend.clear_session()
    write_results(
        "taps",
        rows,
        [
            "backbone", "taps", "plan", "module params", "frozen params",
            "modules / frozen", "side top params", "shifts",
        ],
        {"image_size": size},
    )


if __name__ == "__main__":
    app.run(main)
