"""Times an exported model in a process that imports LiteRT only, as a device.

    python bench/litert_worker.py --model=m.tflite [--repeats=10] [--threads=2]
        [--noxnnpack] [--notrain] [--stages]

Prints one JSON line: the median `train` step (at the file's batch size) and
`infer` at batch 1 and at the file's batch size in ms, and the peak RSS the
interpreter added (MiB over the process before it existed). With
`--notrain`, an interpreter of the same file that only infers (at the
file's batch size): its time and peak RSS, the inference-only reference.
With `--stages`, no timing: the RSS the interpreter holds once built, after
one `infer` call at the file's batch and after one `train` step, and its
peak (MiB over the process before it existed).
Run it with `MALLOC_MMAP_THRESHOLD_=65536` so that freed memory is returned.
Used by bench/tflite.py.
"""

import ctypes
import json
from pathlib import Path

import numpy as np
from absl import app
from absl import flags
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.interpreter import OpResolverType
from common import median_seconds
from common import status_mib

_MODEL = flags.DEFINE_string("model", None, "An exported .tflite file.", required=True)
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls (after a warm-up).")
_THREADS = flags.DEFINE_integer("threads", 2, "Interpreter threads.")
_TRAIN = flags.DEFINE_bool(
    "train", True, "Run `train`; without it, only `infer` at the file's batch."
)
_STAGES = flags.DEFINE_bool(
    "stages", False, "Only the RSS after building, one `infer` and one `train`."
)
_XNNPACK = flags.DEFINE_bool(
    "xnnpack", True, "Apply LiteRT's default XNNPACK delegate."
)


def main(_):
    sidecar = json.loads(Path(_MODEL.value).with_suffix(".json").read_text())
    size, batch = sidecar["image_size"], sidecar["batch_size"]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, *size, 3)).astype("float32")
    labels = rng.integers(0, sidecar["num_classes"], batch).astype("int32")
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Resets VmHWM to the current RSS.
    before = status_mib("VmRSS")
    interpreter = Interpreter(
        model_path=_MODEL.value,
        num_threads=_THREADS.value,
        experimental_op_resolver_type=OpResolverType.AUTO
        if _XNNPACK.value
        else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    if _STAGES.value:
        held = {"built_rss_mib": status_mib("VmRSS") - before}
        interpreter.get_signature_runner("infer")(x=images)
        held["infer_rss_mib"] = status_mib("VmRSS") - before
        train = interpreter.get_signature_runner("train")
        train(x=images, y=labels, learning_rate=np.float32(1e-3))
        held["train_rss_mib"] = status_mib("VmRSS") - before
        held["peak_rss_mib"] = status_mib("VmHWM") - before
        print(json.dumps({k: round(v, 1) for k, v in held.items()}))
        return
    infer = interpreter.get_signature_runner("infer")
    if not _TRAIN.value:
        batch_seconds = median_seconds(lambda: infer(x=images), _REPEATS.value)
        peak = status_mib("VmHWM") - before
        print(
            json.dumps(
                {
                    "infer_only_batch_ms": round(batch_seconds * 1000, 2),
                    "infer_only_peak_rss_mib": round(peak, 1),
                }
            )
        )
        return
    train = interpreter.get_signature_runner("train")
    rate = np.float32(1e-3)
    train_seconds = median_seconds(
        lambda: train(x=images, y=labels, learning_rate=rate), _REPEATS.value
    )
    peak = status_mib("VmHWM") - before
    infer_seconds = median_seconds(lambda: infer(x=images[:1]), _REPEATS.value)
    batch_seconds = median_seconds(lambda: infer(x=images), _REPEATS.value)
    print(
        json.dumps(
            {
                "train_ms": round(train_seconds * 1000, 1),
                "infer_ms": round(infer_seconds * 1000, 2),
                "infer_batch_ms": round(batch_seconds * 1000, 2),
                "peak_rss_mib": round(peak, 1),
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
