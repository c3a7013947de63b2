"""What a LiteRT training step holds in memory beyond inference.

    python bench/litert_memory.py
    python bench/litert_memory.py --image_sizes=128 --rounds=1

Exports each model of `MODELS` (as bench/tflite.py does: MobileNetV2 with
the ImageNet weights, MobileNetV3Small; Rep-Net with its defaults, and
without the backbone shifts: MobileNetV2's, and MobileNetV3Small's as its
defaults were before `build`'s rule) at batch 8 and, per file:

- measures, each in a fresh process that imports only LiteRT
  (bench/litert_worker.py, XNNPACK, 2 threads), the peak RSS of the `train`
  signature and of an interpreter that only infers; the median over
  `--rounds`, interleaved;
- reads the file's `train` and `infer` subgraphs and plays their operators
  in order: a tensor that no buffer holds lives from the op that writes it
  to the last op that reads it (the signature's inputs from the start, its
  outputs to the end). The peak of the bytes alive is the smallest arena a
  planner could give the signature at that order (LiteRT's own plan is at
  least that; XNNPACK's packed weights and its own buffers come on top).
  Beside it: the int8 ReLU masks the forward keeps for the backward
  (`QUANTIZE` outputs), alive at that peak and in all.

Writes bench/results/litert_memory.{json,md}.
"""

import os
import statistics
import tempfile

import numpy as np
from absl import app
from absl import flags
from common import bench_model
from common import run_worker
from common import write_results
from grids import FORMER_DEFAULTS

_IMAGE_SIZES = flags.DEFINE_list("image_sizes", ["128", "224"], "Input sides.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per train step.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Worker runs per file, interleaved.")
_THREADS = 2

# Name -> (backbone, `keras_repnet.build` options).
MODELS = {
    "MobileNetV2": ("MobileNetV2", {}),
    "MobileNetV2, no shifts": ("MobileNetV2", {"backbone_shifts": False}),
    "MobileNetV3Small": ("MobileNetV3Small", {}),
    "MobileNetV3Small, no shifts, 4 modules": (
        "MobileNetV3Small", FORMER_DEFAULTS[("MobileNetV3Small", 128)][0]
    ),
}
MIB = 2**20


def arena_peak(path, signature, batch_size):
    """Plays `signature`'s subgraph: the peak bytes alive (a dynamic batch
    at `batch_size`), the int8 mask bytes (outputs of `QUANTIZE`) alive at
    that peak, the mask bytes written in all, and the op at the peak."""
    from ai_edge_litert import schema_py_generated as schema

    from keras_repnet.export import operators

    model, subgraph, op_names = operators.signature_subgraph(path, signature)
    dtypes = {code: name.lower() for name, code in vars(schema.TensorType).items()}
    sizes = {}
    for index in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(index)
        buffer = model.Buffers(tensor.Buffer())
        if buffer.DataLength() or buffer.Offset():
            continue  # A constant, in the file.
        if tensor.Type() == schema.TensorType.RESOURCE:
            continue
        shape = tensor.ShapeSignatureAsNumpy()
        if isinstance(shape, int):  # No signature: the shape is static.
            shape = tensor.ShapeAsNumpy()
        shape = [batch_size if d == -1 else d for d in np.atleast_1d(shape)]
        itemsize = np.dtype(dtypes[tensor.Type()]).itemsize
        sizes[index] = int(np.prod(shape)) * itemsize
    first, last, masks = {}, {}, set()
    for step, name in enumerate(op_names):
        op = subgraph.Operators(step)
        for tensor in op.InputsAsNumpy():
            if tensor in sizes:
                last[tensor] = step
        for tensor in op.OutputsAsNumpy():
            if tensor in sizes:
                first.setdefault(tensor, step)
                last.setdefault(tensor, step)
                if name == "QUANTIZE":
                    masks.add(tensor)
    end = len(op_names)
    for tensor in subgraph.InputsAsNumpy():
        first[tensor] = -1
    for tensor in subgraph.OutputsAsNumpy():
        last[tensor] = end
    # Bytes alive after each step: +size where a tensor starts, -size after
    # its last step.
    change = np.zeros(end + 3, np.int64)
    mask_change = np.zeros(end + 3, np.int64)
    for tensor, start in first.items():
        stop = max(last.get(tensor, start), start)
        for array in (change, mask_change) if tensor in masks else (change,):
            array[start + 1] += sizes[tensor]
            array[stop + 2] -= sizes[tensor]
    alive = np.cumsum(change)
    peak = int(np.argmax(alive))
    return {
        "peak": int(alive[peak]),
        "masks_at_peak": int(np.cumsum(mask_change)[peak]),
        "masks": sum(sizes[t] for t in masks),
        # The op running at the peak, and where it is in the subgraph.
        "peak_op": f"{op_names[min(max(peak - 1, 0), end - 1)]} ({peak}/{end})",
    }


def main(_):
    from keras_repnet import export

    rows = []
    batch = _BATCH_SIZE.value
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for size in [int(s) for s in _IMAGE_SIZES.value]:
            for name, (backbone, options) in MODELS.items():
                path = os.path.join(folder, f"{len(paths)}.tflite")
                model = bench_model(backbone, size, **options)
                export.export_tflite(model, path, batch_size=batch)
                paths[(name, size)] = path
        measured = {key: {"train": [], "infer": []} for key in paths}
        for _ in range(_ROUNDS.value):
            for key, path in paths.items():
                train = run_worker(path, 3, _THREADS, True)
                infer = run_worker(path, 3, _THREADS, True, train=False)
                measured[key]["train"].append(train["peak_rss_mib"])
                measured[key]["infer"].append(infer["infer_only_peak_rss_mib"])
        for (name, size), path in paths.items():
            train_rss = statistics.median(measured[(name, size)]["train"])
            infer_rss = statistics.median(measured[(name, size)]["infer"])
            train_arena = arena_peak(path, "train", batch)
            infer_arena = arena_peak(path, "infer", batch)
            rows.append(
                {
                    "model": name,
                    "px": size,
                    "train peak RSS MiB": train_rss,
                    "infer-only peak RSS MiB": infer_rss,
                    "train / infer RSS": f"{train_rss / infer_rss:.2f}x",
                    "RSS range train": _range(measured[(name, size)]["train"]),
                    "train tensors at peak MiB": _mib(train_arena["peak"]),
                    "int8 masks among them MiB": _mib(train_arena["masks_at_peak"]),
                    "int8 masks in all MiB": _mib(train_arena["masks"]),
                    "infer tensors at peak MiB": _mib(infer_arena["peak"]),
                    "train peak at op": train_arena["peak_op"],
                }
            )
    settings = {
        "batch_size": batch,
        "threads": _THREADS,
        "xnnpack": True,
        "rounds": _ROUNDS.value,
        "cpu_cores": os.cpu_count(),
    }
    write_results("litert_memory", rows, list(rows[0]), settings)


def _mib(size):
    return round(size / MIB, 1)


def _range(values):
    return f"{min(values)}-{max(values)}"


if __name__ == "__main__":
    app.run(main)
