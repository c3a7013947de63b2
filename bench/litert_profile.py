"""Where a LiteRT training step spends its time, op by op.

    python bench/litert_profile.py                    # both backbones
    python bench/litert_profile.py --backbones=MobileNetV2 --runs=20
    python bench/litert_profile.py --models=a.tflite,b.tflite  # given files
    python bench/litert_profile.py --backbones=MobileNetV3Small \
        --without_shifts --results_name=litert_profile_shifts

Exports each backbone's Rep-Net (as bench/tflite.py does: MobileNetV2 with
the ImageNet weights, MobileNetV3Small) with `keras_repnet.export_tflite`
and profiles its `train` step and its `infer` signature at the same batch
in a fresh process that imports only LiteRT (`--profile_worker`), through
LiteRT's C API (`bench/litert_capi.py`: `libLiteRt.so`'s `CompiledModel`
with its op profiler; the Python `Interpreter` has none). Every builtin
kernel call is an event with its node index; inside an XNNPACK partition
every XNNPACK operator is one (named by XNNPACK: `Fully Connected (NC, F32)
GEMM` is a 1x1 convolution, `Batch Matrix Multiply` the 1x1 input
gradients, ...). Per op kind the table gives the median over `--runs`
steps of its summed time per step and its share of the summed step, and
the same for `infer` at the train batch: the difference is what training
adds. Builtin ops in the table did not go to XNNPACK (`delegated`
column; the op counts of the file's `train` subgraph, and which of its
nodes ran as builtin kernels, give the delegation table). With
`--without_shifts` each backbone's Rep-Net is profiled again without the
backbone shifts (`backbone_shifts=False`, no gradient crosses the
backbone), and the markdown holds one table instead (the JSON keeps the
others): per op kind, what the shifts' backward pass adds to the step.

Writes bench/results/litert_profile.{json,md}.
"""

import collections
import json
import os
import statistics
import sys
import tempfile

import numpy as np
from absl import app
from absl import flags
from common import run_json
from litert_targets import shift_rows

_BACKBONES = flags.DEFINE_list(
    "backbones", ["MobileNetV2", "MobileNetV3Small"], "keras.applications names."
)
_MODELS = flags.DEFINE_list(
    "models", [], "Profile these exported files instead of exporting backbones."
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Input side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per train step.")
_THREADS = flags.DEFINE_integer("threads", 2, "LiteRT threads.")
_RUNS = flags.DEFINE_integer("runs", 10, "Profiled steps (after a warm-up).")
_KERNELS = flags.DEFINE_list(
    "kernels", ["delegate"],
    "`delegate`: LiteRT's default XNNPACK; `builtin`: builtin kernels only.",
)
_TOP = flags.DEFINE_integer("top", 14, "Op kinds per table (the rest summed).")
_NAME = flags.DEFINE_string("results_name", "litert_profile", "bench/results/NAME.")
_WITHOUT_SHIFTS = flags.DEFINE_bool(
    "without_shifts", False,
    "Also profile each backbone without backbone shifts; tabulate the difference.",
)
_WORKER = flags.DEFINE_string(
    "profile_worker", None, "Internal: profile this file, print JSON."
)

BUILTIN = "builtin kernel"
XNNPACK = "XNNPACK"


def main(_):
    if _WORKER.value:
        print(json.dumps(profile_file(_WORKER.value)))
        return
    rows, delegation, settings = [], [], {
        "image_size": _IMAGE_SIZE.value,
        "batch_size": _BATCH_SIZE.value,
        "threads": _THREADS.value,
        "runs": _RUNS.value,
        "cpu_cores": os.cpu_count(),
        "tool": "bench/litert_profile.py (LiteRT C API profiler, bench/litert_capi.py)",
        "steps": {},
    }
    shifts, results = [], {}
    with tempfile.TemporaryDirectory() as folder:
        models = {os.path.basename(p): p for p in _MODELS.value}
        for name in [] if models else _BACKBONES.value:
            models[name] = export(name, folder)
            if _WITHOUT_SHIFTS.value:
                models[name + NO_SHIFTS_SUFFIX] = export(
                    name, folder, label="_no_shifts", backbone_shifts=False
                )
        for name, path in models.items():
            for kernels in _KERNELS.value:
                result = results[name, kernels] = run_worker(path, kernels)
                settings["steps"][f"{name} {kernels}"] = result["steps"]
                rows += table_rows(name, kernels, result)
                if kernels == "delegate":
                    delegation += delegation_rows(name, path, result)
    for (name, kernels), result in results.items():
        if (name + NO_SHIFTS_SUFFIX, kernels) in results:
            without = results[name + NO_SHIFTS_SUFFIX, kernels]
            shifts += shift_rows(name, kernels, result, without, _TOP.value)
    _write(rows, delegation, shifts, settings)


# Appended to a backbone's name: its Rep-Net without backbone shifts.
NO_SHIFTS_SUFFIX = ", no shifts"


def export(name, folder, label="", **build_options):
    from common import bench_model

    from keras_repnet import export as export_lib

    path = os.path.join(folder, f"{name}{label}.tflite")
    model = bench_model(name, _IMAGE_SIZE.value, **build_options)
    export_lib.export_tflite(model, path, batch_size=_BATCH_SIZE.value)
    return path


def run_worker(path, kernels):
    """Profiles `path` in a fresh process that imports only LiteRT."""
    return run_json(
        os.path.abspath(__file__), f"--profile_worker={path}",
        f"--threads={_THREADS.value}", f"--runs={_RUNS.value}",
        f"--kernels={kernels}", return_freed_memory=False,
    )


# === The worker: LiteRT only ===


def profile_file(path):
    """Per op kind and signature: the summed microseconds of each profiled
    step, and the node indices that ran as builtin kernels."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import time

    from litert_capi import CompiledModel

    sidecar = json.loads(open(os.path.splitext(path)[0] + ".json").read())
    batch, size = sidecar["batch_size"], sidecar["image_size"]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, *size, 3)).astype("float32")
    labels = rng.integers(0, sidecar["num_classes"], batch).astype("int32")
    model = CompiledModel(path, threads=_THREADS.value, kernels=_KERNELS.value[0])
    calls = {
        "train": (model.signature("train"),
                  {"x": images, "y": labels, "learning_rate": np.float32(1e-3)}),
        "infer": (model.signature("infer", batch=batch), {"x": images}),
    }
    result = {"ops": {}, "builtin_nodes": {}, "steps": {}}
    for key, (signature, inputs) in calls.items():
        signature.run(**inputs)  # Warm-up: allocation, XNNPACK's setup.
        per_run, walls, nodes = [], [], set()
        for _ in range(_RUNS.value):
            start = time.perf_counter()
            events = model.profile(lambda: signature.run(**inputs), runs=1)
            walls.append(time.perf_counter() - start)
            totals = collections.Counter()
            for event in events:
                kind = (event.tag, XNNPACK if event.delegated else BUILTIN)
                totals[kind] += event.microseconds
                totals[kind + ("calls",)] += 1
                if not event.delegated:
                    nodes.add(event.node)
            per_run.append(totals)
        kinds = {k for totals in per_run for k in totals if len(k) == 2}
        result["ops"][key] = [
            {
                "op": tag,
                "runs_in": where,
                "calls": per_run[0][(tag, where, "calls")],
                "us": [totals[(tag, where)] for totals in per_run],
            }
            for tag, where in sorted(kinds)
        ]
        result["builtin_nodes"][key] = sorted(nodes)
        result["steps"][key] = {
            "wall_ms": round(1000 * statistics.median(walls), 2),
            "ops_ms": round(statistics.median(sum(t[k] for k in kinds) for t in per_run) / 1000, 2),
        }
    return result


# === Tables ===


def table_rows(name, kernels, result):
    train = {(r["op"], r["runs_in"]): r for r in result["ops"]["train"]}
    infer = {(r["op"], r["runs_in"]): r for r in result["ops"]["infer"]}
    total = result["steps"]["train"]["ops_ms"]
    medians = {
        key: statistics.median(r["us"]) / 1000 for key, r in train.items()
    }
    order = sorted(train, key=lambda key: -medians[key])
    rows = []
    for rank, key in enumerate(order):
        ms = medians[key]
        infer_ms = statistics.median(infer[key]["us"]) / 1000 if key in infer else 0.0
        row = {
            "backbone": name,
            "kernels": "XNNPACK" if kernels == "delegate" else "builtin only",
            "op (LiteRT or XNNPACK name)": key[0],
            "runs in": key[1],
            "calls per step": train[key]["calls"],
            "train ms": round(ms, 2),
            "train %": round(100 * ms / total, 1),
            "infer ms (same batch)": round(infer_ms, 2),
        }
        if rank >= _TOP.value:
            other = rows[-1] if rows[-1]["runs in"] == "-" else None
            if other is None:
                other = {**row, "op (LiteRT or XNNPACK name)": "all other ops",
                         "runs in": "-", "calls per step": 0, "train ms": 0.0,
                         "train %": 0.0, "infer ms (same batch)": 0.0}
                rows.append(other)
            for field in ("calls per step", "train ms", "train %", "infer ms (same batch)"):
                other[field] = round(other[field] + row[field], 2)
            continue
        rows.append(row)
    rows.append({
        "backbone": name, "kernels": rows[0]["kernels"],
        "op (LiteRT or XNNPACK name)": "step (sum of ops)", "runs in": "-",
        "calls per step": sum(r["calls"] for r in train.values()),
        "train ms": total, "train %": 100.0,
        "infer ms (same batch)": result["steps"]["infer"]["ops_ms"],
    })
    return rows


def delegation_rows(name, path, result):
    """Per LiteRT op type of the `train` subgraph: nodes, and how many ran
    as builtin kernels (the others went to XNNPACK)."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(f.read(), 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    index = {s.signatureKey.decode(): s.subgraphIndex for s in model.signatureDefs}["train"]
    builtin = set(result["builtin_nodes"]["train"])
    counts = collections.defaultdict(lambda: [0, 0])
    for node, op in enumerate(model.subgraphs[index].operators):
        code = model.operatorCodes[op.opcodeIndex]
        kind = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        counts[kind][0] += 1
        counts[kind][1] += node in builtin
    return [
        {"backbone": name, "LiteRT op": kind, "nodes in train": total,
         "builtin kernel": kept, "XNNPACK": total - kept}
        for kind, (total, kept) in sorted(counts.items(), key=lambda x: (-x[1][1], -x[1][0], x[0]))
    ]


def _write(rows, delegation, shifts, settings):
    from common import RESULTS
    from common import markdown_table

    text = markdown_table(rows, list(rows[0]))
    if delegation:
        # The op types that kept builtin nodes; the others in one row each.
        kept = [r for r in delegation if r["builtin kernel"]]
        for name in dict.fromkeys(r["backbone"] for r in delegation):
            rest = [r for r in delegation if r["backbone"] == name and not r["builtin kernel"]]
            kept.append({
                "backbone": name,
                "LiteRT op": f"{len(rest)} other op types",
                "nodes in train": sum(r["nodes in train"] for r in rest),
                "builtin kernel": 0,
                "XNNPACK": sum(r["XNNPACK"] for r in rest),
            })
        kept.sort(key=lambda r: r["backbone"])
        text += "\n\n" + markdown_table(kept, list(kept[0]))
    if shifts:  # The difference is the page's table; the JSON has all.
        text = markdown_table(shifts, list(shifts[0]))
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    with open(RESULTS / f"{_NAME.value}.json", "w") as f:
        json.dump(
            {
                "settings": settings, "rows": rows,
                "delegation": delegation, "shifts": shifts,
            },
            f, indent=2,
        )
    with open(RESULTS / f"{_NAME.value}.md", "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    app.run(main)
