"""Training-step memory: measured peaks beside the analytic counts.

    python bench/memory.py [--backbones=MobileNetV2,MobileNetV3Small]
        [--image_size=224] [--batch_size=8] [--steps=3]

For each backbone, measures in a fresh process per configuration (see
`keras_repnet.memory.measure`; random weights): the frozen backbone's
inference (the floor), last layer only, full fine-tuning and Rep-Net, the
last two with plain autodiff and with keras-repnet's lean backward (and
Rep-Net without its backbone shifts, `repnet-no-shifts`)
(`keras_repnet.backward`: masks for ReLUs, kept as bits). Beside each
measured peak (the median over 5 steps,
`keras_repnet.memory.measurement.PEAK_STEPS`, and their range): the
analytic `ideal` (TinyTL / Rep-Net accounting) and `ours` (what
TensorFlow keeps) step peaks of `keras_repnet.memory.profile`. MB are 10^6
bytes above the memory held before the step (model, optimizer state,
runtime). Prints a markdown table and writes bench/results/memory.{json,md}.
"""

from absl import app
from absl import flags
from common import write_results

from keras_repnet import memory

_BACKBONES = flags.DEFINE_list(
    "backbones",
    ["MobileNetV2", "MobileNetV3Small"],
    "keras.applications names.",
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per step.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps (median).")

# (configuration, method, lean backward). The "x full fine-tuning" ratios
# are to full fine-tuning as Keras trains it (plain autodiff).
FULL = "full fine-tuning, plain autodiff"
CONFIGS = (
    ("inference (frozen backbone, floor)", memory.INFERENCE, False),
    ("last layer only", "ft-last", False),
    (FULL, "ft-full", False),
    ("full fine-tuning, lean backward", "ft-full", True),
    ("Rep-Net, plain autodiff", "repnet", False),
    ("Rep-Net, lean backward", "repnet", True),
    ("Rep-Net without backbone shifts, lean backward", "repnet-no-shifts", True),
)
COLUMNS = [
    "backbone",
    "configuration",
    "measured MB",
    "range MB",
    "ideal MB",
    "ours MB",
    "ours / measured",
    "x inference",
    "x full fine-tuning",
    "step ms",
]


def _mb(num_bytes):
    return round(num_bytes / 1e6, 1)


def measure_backbone(backbone):
    """Measures every configuration on one backbone; returns table rows."""
    results = []
    for name, method, lean in CONFIGS:
        result = memory.measure(
            method,
            backbone,
            image_size=_IMAGE_SIZE.value,
            batch_size=_BATCH_SIZE.value,
            lean_backward=lean,
            steps=_STEPS.value,
        )
        print(f"{backbone} {name}: {_mb(result.peak_bytes)} MB", flush=True)
        results.append((name, result))
    floor = results[0][1].peak_bytes
    full = dict(results)[FULL].peak_bytes
    rows = []
    for name, result in results:
        profile = result.profile
        rows.append(
            {
                "backbone": backbone,
                "configuration": name,
                "measured MB": _mb(result.peak_bytes),
                "range MB": "{}-{}".format(*map(_mb, result.peak_bytes_range)),
                "ideal MB": _mb(profile["ideal"]["peak_bytes"]),
                "ours MB": _mb(profile["ours"]["peak_bytes"]),
                "ours / measured": round(
                    profile["ours"]["peak_bytes"] / result.peak_bytes, 2
                ),
                "x inference": round(result.peak_bytes / floor, 2),
                "x full fine-tuning": round(result.peak_bytes / full, 2),
                "step ms": round(result.step_seconds * 1000),
                "trainable params": profile["trainable_params"],
                "ideal stored MB": _mb(profile["ideal"]["stored_bytes"]),
                "ours stored MB": _mb(profile["ours"]["stored_bytes"]),
            }
        )
    return rows


def main(_):
    rows = []
    for backbone in _BACKBONES.value:
        rows += measure_backbone(backbone)
    write_results(
        "memory",
        rows,
        COLUMNS,
        {
            "image_size": _IMAGE_SIZE.value,
            "batch_size": _BATCH_SIZE.value,
            "steps": _STEPS.value,
            "weights": None,
            "method": "peak RSS of a step in a fresh process, median of "
            f"{memory.measurement.PEAK_STEPS} steps "
            "(TF_ENABLE_ONEDNN_OPTS=0, MALLOC_MMAP_THRESHOLD_=65536)",
        },
    )


if __name__ == "__main__":
    app.run(main)
