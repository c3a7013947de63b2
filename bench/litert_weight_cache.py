"""Does sharing XNNPACK's packed weights bring a training file's RSS down?

    python bench/litert_weight_cache.py
    python bench/litert_weight_cache.py --image_size=224 --rounds=1

The `train` and `infer` signatures of an exported file read the same
frozen weights, and XNNPACK packs its own copy of them for each signature
it delegates. Its weight cache shares one packing: LiteRT's Python
`Interpreter` has no option for it, its `CompiledModel`
(`ai_edge_litert.compiled_model`) has one
(`CpuOptions.xnnpack_weight_cache_path`, the cache file's path).
For each backbone's Rep-Net (as bench/tflite.py exports it: float, 128 px,
batch 8) this runs, in a fresh process that imports only LiteRT, the
`Interpreter`, a `CompiledModel`, and a `CompiledModel` with a new weight
cache, each once for one `infer` and one `train` step and once for `infer`
alone (2 threads, XNNPACK), and records the peak RSS over the process
before the runtime existed (median of `--rounds`, interleaved) and how
much of the RSS it added is file-backed (the model file and the cache file
are mapped).

Writes bench/results/litert_weight_cache.{json,md}.
"""

import ctypes
import json
import os
import statistics
import sys
import tempfile

import numpy as np
from absl import app
from absl import flags
from common import run_json
from common import status_mib

_BACKBONES = flags.DEFINE_list(
    "backbones", ["MobileNetV2", "MobileNetV3Small"], "keras.applications names."
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Input side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per train step.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Worker runs per configuration.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: measure this file.")
_RUNTIME = flags.DEFINE_string("runtime", None, "Internal: one of RUNTIMES.")
_TRAIN = flags.DEFINE_bool("train", True, "Internal: run `train` after `infer`.")

THREADS = 2
RUNTIMES = ("Interpreter", "CompiledModel", "CompiledModel, weight cache")


def main(_):
    if _WORKER.value:
        print(json.dumps(measure(_WORKER.value, _RUNTIME.value, _TRAIN.value)))
        return
    from common import bench_model
    from common import write_results

    from keras_repnet import export

    batch = _BATCH_SIZE.value
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for name in _BACKBONES.value:
            paths[name] = os.path.join(folder, f"{name}.tflite")
            model = bench_model(name, _IMAGE_SIZE.value)
            export.export_tflite(model, paths[name], batch_size=batch)
        configs = [
            (name, runtime, train)
            for name in paths
            for runtime in RUNTIMES
            for train in (True, False)
        ]
        for _ in range(_ROUNDS.value):
            for name, runtime, train in configs:
                runs.setdefault((name, runtime, train), []).append(
                    run_worker(paths[name], runtime, train)
                )
    rows = []
    for name in _BACKBONES.value:
        for runtime in RUNTIMES:
            train, infer = runs[name, runtime, True], runs[name, runtime, False]
            peak = statistics.median(r["peak_rss_mib"] for r in train)
            infer_peak = statistics.median(r["peak_rss_mib"] for r in infer)
            rows.append(
                {
                    "backbone": name,
                    "runtime": runtime,
                    "train peak RSS MiB": round(peak, 1),
                    "infer-only peak RSS MiB": round(infer_peak, 1),
                    "train / infer-only": f"{peak / infer_peak:.2f}x",
                    "file-backed MiB added": round(
                        statistics.median(r["file_rss_mib"] for r in train), 1
                    ),
                    "train ms": round(
                        statistics.median(r["train_ms"] for r in train), 1
                    ),
                }
            )
    settings = {
        "image_size": _IMAGE_SIZE.value,
        "batch_size": batch,
        "threads": THREADS,
        "rounds": _ROUNDS.value,
        "cpu_cores": os.cpu_count(),
    }
    write_results("litert_weight_cache", rows, list(rows[0]), settings)


def run_worker(path, runtime, train):
    return run_json(
        os.path.abspath(__file__), f"--worker={path}", f"--runtime={runtime}",
        "--train" if train else "--notrain",
    )


# === The worker: LiteRT only ===


def measure(path, runtime, train):
    """Peak RSS (MiB over the process before the runtime) of one `infer` at
    the file's batch and, with `train`, a `train` step timed over 5 more."""
    import time

    # The runtimes' modules are loaded before the baseline; what they
    # allocate when built counts.
    import ai_edge_litert.compiled_model  # noqa: F401
    import ai_edge_litert.interpreter  # noqa: F401

    sidecar = json.loads(open(os.path.splitext(path)[0] + ".json").read())
    size, batch = sidecar["image_size"], sidecar["batch_size"]
    rng = np.random.default_rng(0)
    inputs = {
        "x": rng.uniform(0, 255, (batch, *size, 3)).astype("float32"),
        "y": rng.integers(0, sidecar["num_classes"], batch).astype("int32"),
        "learning_rate": np.float32(1e-3),
    }
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Resets VmHWM to the current RSS.
    before, file_before = status_mib("VmRSS"), status_mib("RssFile")
    with tempfile.TemporaryDirectory() as cache:
        run = _runner(path, runtime, cache, batch)
        run("infer", {"x": inputs["x"]})
        seconds = []
        for _ in range(6 if train else 0):
            start = time.perf_counter()
            run("train", inputs)
            seconds.append(time.perf_counter() - start)
        return {
            "peak_rss_mib": status_mib("VmHWM") - before,
            "file_rss_mib": status_mib("RssFile") - file_before,
            "train_ms": 1000 * statistics.median(seconds[1:]) if train else 0.0,
        }


def _runner(path, runtime, cache, batch):
    """`run(signature, inputs)` for one of `RUNTIMES`."""
    if runtime == "Interpreter":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path, num_threads=THREADS)
        return lambda key, inputs: interpreter.get_signature_runner(key)(**inputs)
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.options import CpuOptions
    from ai_edge_litert.options import Options

    options = CpuOptions(num_threads=THREADS)
    if runtime == "CompiledModel, weight cache":
        # A file (the option's docstring says a folder; XNNPACK opens a file).
        options.xnnpack_weight_cache_path = os.path.join(cache, "weights.xnn")
    model = CompiledModel.from_file(path, options=Options(cpu_options=options))
    shape = model.get_input_tensor_details("infer")["x"]["shape"]
    model.resize_input_tensor_by_name("infer", "x", [batch, *shape[1:]])
    buffers = {}

    def run(key, inputs):
        if key not in buffers:
            index = model.get_signature_index(key)
            buffers[key] = (
                index,
                model.get_signature_list()[key]["inputs"],
                model.create_input_buffers(index),
                model.create_output_buffers(index),
            )
        index, names, ins, outs = buffers[key]
        for name, buffer in zip(names, ins):
            buffer.write(np.asarray(inputs[name]).reshape(-1))
        model.run_by_index(index, ins, outs)

    return run


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    app.run(main)
