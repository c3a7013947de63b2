"""Shared bits of the benchmark scripts: asset paths and result tables."""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHARED_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MOBILENET_V2_WEIGHTS = str(
    SHARED_ASSETS
    / "weights"
    / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
FLOWERS = str(SHARED_ASSETS / "datasets" / "flowers5_128px")
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
# Rep-Net as most committed bench results measured it: without the side top
# (`side_top_channels=0`), the defaults before `build` took "auto". The
# benches that build Rep-Net at its defaults (and the accuracy protocol's
# `grids.POINTS_WITHOUT_SIDE_TOP`) add it, so that a rerun remakes what
# they committed, until they are measured again.
NO_SIDE_TOP = {"side_top_channels": 0}


def no_side_top(method) -> dict:
    """`NO_SIDE_TOP` for a Rep-Net method (`keras_repnet.methods`), else no
    options."""
    from keras_repnet import methods

    method = methods.METHODS.get(method)
    return dict(NO_SIDE_TOP) if method and method.is_repnet else {}


def as_recorded(path) -> str:
    """A path as result files record it: relative to the repository root
    (e.g. `../shared/assets/...`), never this machine's absolute path."""
    return os.path.relpath(path, ROOT)


def median_seconds(function, repeats=5):
    """Median wall time of `function()` over `repeats` calls after a warm-up."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def markdown_table(rows, columns):
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name, rows, columns, settings):
    """Prints a markdown table and writes it with the rows as JSON."""
    table = markdown_table(rows, columns)
    print(table)
    os.makedirs(RESULTS, exist_ok=True)
    with open(RESULTS / f"{name}.json", "w") as f:
        json.dump({"settings": settings, "rows": rows}, f, indent=2)
    with open(RESULTS / f"{name}.md", "w") as f:
        f.write(table + "\n")


def bench_model(name, size, dropout=0.2, num_classes=5, **options):
    """The Rep-Net the LiteRT benches export: MobileNetV2 with the offline
    ImageNet weights, other backbones with random weights (sizes and speed
    do not depend on them), without the side top (`NO_SIDE_TOP`) unless
    `options` (more `keras_repnet.build` arguments) set it."""
    import keras_repnet

    weights = MOBILENET_V2_WEIGHTS if name == "MobileNetV2" else None
    return keras_repnet.build(
        name,
        num_classes,
        input_shape=(size, size, 3),
        weights=weights,
        dropout=dropout,
        **{**NO_SIDE_TOP, **options},
    )


def run_worker(path, repeats, threads, xnnpack, train=True, stages=False):
    """Runs bench/litert_worker.py on `path` in a fresh process (with
    `train=False`, an interpreter that only infers; with `stages=True`, the
    RSS it holds after each stage)."""
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "litert_worker.py")
    return run_json(
        worker,
        f"--model={path}",
        f"--repeats={repeats}",
        f"--threads={threads}",
        "--xnnpack" if xnnpack else "--noxnnpack",
        "--train" if train else "--notrain",
        "--stages" if stages else "--nostages",
    )


def run_json(script, *args, return_freed_memory=True):
    """Runs a Python `script` with `args` in a fresh process and returns the
    JSON of its last printed line. With `return_freed_memory`, the process
    returns freed memory to the system (`MALLOC_MMAP_THRESHOLD_`), as
    resident-set measurements need."""
    env = dict(os.environ)
    if return_freed_memory:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    result = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"{script} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def status_mib(field):
    """A memory field of this process's /proc status (`VmRSS`, `VmHWM`,
    `RssFile`, ...), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")
