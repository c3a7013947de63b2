"""Where a LiteRT training interpreter's resident memory goes, stage by stage.

    python bench/litert_rss.py
    python bench/litert_rss.py --image_sizes=128,224 --rounds=1

Exports Rep-Net, each model at batch 8 as a float file and with an int8
backbone: MobileNetV2 with the ImageNet weights, at its defaults (the
side top included) and again without the side top; MobileNetV3Small at
its defaults, without the side top, with exact squeeze-excite gates and
no side top, and as its defaults were before `build`'s rule (no shifts,
four modules, no side top; `common.bench_model` builds without the side
top unless told). It runs each file in
a fresh process that imports only LiteRT (bench/litert_worker.py
`--stages`, 2 threads), with XNNPACK and with LiteRT's builtin kernels
alone. It records each file's size and the RSS the interpreter holds once
built, after one `infer` call and after one `train` step (medians over
`--rounds`, interleaved): what the builtin kernels allocate against what
XNNPACK adds (packed weights, its own buffers), and what the int8 file
costs at each stage.

Writes bench/results/litert_rss.{json,md}.
"""

import os
import statistics
import tempfile

from absl import app
from absl import flags
from common import bench_model
from common import run_worker
from common import write_results
from grids import FORMER_DEFAULTS

_IMAGE_SIZES = flags.DEFINE_list("image_sizes", ["128"], "Input sides.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per train step.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Worker runs per file, interleaved.")
_THREADS = 2
# Name -> (backbone, `keras_repnet.build` options).
MODELS = {
    "MobileNetV2": ("MobileNetV2", {"side_top_channels": "auto"}),
    "MobileNetV2, no side top": ("MobileNetV2", {}),
    # Its defaults: six modules, sign-int8 shifts (`build`'s rule), the
    # side top.
    "MobileNetV3Small": ("MobileNetV3Small", {"side_top_channels": "auto"}),
    "MobileNetV3Small, no side top": ("MobileNetV3Small", {}),
    "MobileNetV3Small, exact gates, no side top": (
        "MobileNetV3Small", {"backbone_shifts": "sign"}
    ),
    "MobileNetV3Small, no shifts, 4 modules": (
        "MobileNetV3Small", FORMER_DEFAULTS[("MobileNetV3Small", 128)][0]
    ),
}
# Weights -> `export_tflite` options.
WEIGHTS = {"float": {}, "int8": {"quantize_backbone": True}}
STAGES = ("built_rss_mib", "infer_rss_mib", "train_rss_mib", "peak_rss_mib")


def main(_):
    from keras_repnet import export

    batch = _BATCH_SIZE.value
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for size in [int(s) for s in _IMAGE_SIZES.value]:
            for name, (backbone, build_options) in MODELS.items():
                model = bench_model(backbone, size, **build_options)
                for weights, options in WEIGHTS.items():
                    path = os.path.join(folder, f"{len(paths)}.tflite")
                    export.export_tflite(model, path, batch_size=batch, **options)
                    paths[(name, size, weights)] = path
        sizes = {key: _mib(os.path.getsize(path) / 2**20) for key, path in paths.items()}
        runs = [(key, xnnpack) for key in paths for xnnpack in (True, False)]
        measured = {run: [] for run in runs}
        for _ in range(_ROUNDS.value):
            for key, xnnpack in runs:
                measured[(key, xnnpack)].append(
                    run_worker(paths[key], 1, _THREADS, xnnpack, stages=True)
                )
    rows = []
    for key, xnnpack in runs:
        name, size, weights = key
        held = {
            stage: statistics.median(m[stage] for m in measured[(key, xnnpack)])
            for stage in STAGES
        }
        rows.append(
            {
                "model": name,
                "px": size,
                "weights": weights,
                "XNNPACK": "yes" if xnnpack else "no",
                "file MiB": sizes[key],
                "built MiB": held["built_rss_mib"],
                "infer adds MiB": _mib(held["infer_rss_mib"] - held["built_rss_mib"]),
                "train adds MiB": _mib(held["train_rss_mib"] - held["infer_rss_mib"]),
                "peak MiB": held["peak_rss_mib"],
            }
        )
    settings = {
        "batch_size": batch,
        "threads": _THREADS,
        "rounds": _ROUNDS.value,
        "cpu_cores": os.cpu_count(),
    }
    write_results("litert_rss", rows, list(rows[0]), settings)


def _mib(value):
    return round(value, 1)


if __name__ == "__main__":
    app.run(main)
