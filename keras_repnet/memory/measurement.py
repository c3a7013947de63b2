"""Measured training memory: the peak RSS of a step in a fresh process.

The method (see the project notes on memory measurement): in a new Python
process with oneDNN off (its allocator keeps a pool, which hides frees from
RSS) and glibc's mmap threshold at 64 KiB (so that freed tensors go back to
the OS), run two warm-up steps, trim the heap, reset the kernel's high-water
mark, read the resident set size, run one step and read the high-water mark.
The difference is the step's peak, above the loaded model, its optimizer
state and TensorFlow's own memory (with Python's garbage collector run
before the step and off during it). The result is the median of
`PEAK_STEPS` such steps: TensorFlow's executor runs independent ops in
the order they become ready, so a step's peak can move from step to step
(MobileNetV2's Rep-Net, 224 px, batch 8: 82.6 to 82.7 MB over 5 steps in
bench/results/memory.json; 82.8 to 87.1 MB before its shifts' gradient
sums were ordered, `keras_repnet.core.layers.AddedWeight`).
"""

import ctypes
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time

INFERENCE = "inference"
_ENVIRONMENT = {
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
_RESULT_MARKER = "KERAS_REPNET_MEMORY_RESULT "
# Steps whose peaks are measured; their median is the result.
PEAK_STEPS = 5


@dataclasses.dataclass
class Measurement:
    """One measured configuration.

    Attributes:
        method: str. The transfer method, or `"inference"` for the frozen
            backbone's forward pass alone (the floor of any training step).
        backbone: str. The `keras.applications` model name.
        image_size: int. Side of the square input, in pixels.
        batch_size: int. Examples per step.
        lean_backward: bool. Whether the step used keras-repnet's
            memory-lean backward pass.
        peak_bytes: int. Peak resident memory of a step above the memory
            held before it (model, optimizer state, runtime): the median
            over `PEAK_STEPS` steps.
        peak_bytes_range: list. The least and the most of those steps'
            peaks.
        baseline_bytes: int. Resident memory before the first measured step.
        step_seconds: float. Median wall time of a step.
        profile: dict. The analytic `profile()` of the same model
            (`MemoryProfile.to_dict()`; for `"inference"`, of the frozen
            backbone, whose `ours` peak is then its forward pass).
    """

    method: str
    backbone: str
    image_size: int
    batch_size: int
    lean_backward: bool
    peak_bytes: int
    baseline_bytes: int
    step_seconds: float
    peak_bytes_range: list = dataclasses.field(default_factory=list)
    profile: dict | None = None

    @property
    def peak_mb(self) -> float:
        """`peak_bytes` in MB (10^6 bytes, as everywhere in keras-repnet)."""
        return self.peak_bytes / 1e6

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(
    method: str,
    backbone: str,
    *,
    image_size: int,
    batch_size: int,
    num_classes: int = 10,
    lean_backward: bool = True,
    options: dict | None = None,
    steps: int = 3,
    timeout: float = 900,
) -> Measurement:
    """Measures the peak memory of one training step in a fresh process.

    Builds the model with random weights (memory does not depend on them)
    in a new Python process, so that nothing else this process allocated
    counts. Linux only: it reads `/proc/self/status`.

    Args:
        method: str. A transfer method of `keras_repnet.methods.METHODS`
            (e.g. `"repnet"`, `"ft-full"`), or `"inference"` for the frozen
            backbone's forward pass alone.
        backbone: str. A `keras.applications` model name.
        image_size: int. Side of the square input, in pixels.
        batch_size: int. Examples per step.
        num_classes: int. Classes of the head. Defaults to 10.
        lean_backward: bool. Train with keras-repnet's memory-lean
            backward pass (`RepNetModel.lean_backward`, the default of every
            method) instead of plain autodiff. Defaults to `True`.
        options: dict. More `build_method` arguments, JSON values (e.g.
            `{"backbone_shifts": "masks"}`). Defaults to `None`.
        steps: int. Timed steps after the measured one (median). Defaults
            to 3.
        timeout: float. Seconds before the process is stopped. Defaults to
            900.

    Returns:
        A `Measurement`.
    """
    _check_platform()
    spec = _check_spec(
        method=method,
        backbone=backbone,
        image_size=image_size,
        batch_size=batch_size,
        num_classes=num_classes,
        lean_backward=bool(lean_backward) and method != INFERENCE,
        options=dict(options or {}),
        steps=steps,
    )
    environment = {**os.environ, **_ENVIRONMENT}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", __name__, json.dumps(spec)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(
            f"Measuring {spec} took more than {timeout} s. Use a smaller "
            "image size or batch size, or a larger `timeout`."
        ) from error
    for line in completed.stdout.splitlines():
        if line.startswith(_RESULT_MARKER):
            return Measurement(**json.loads(line[len(_RESULT_MARKER):]))
    raise RuntimeError(
        f"The measuring process for {spec} failed (exit code "
        f"{completed.returncode}). Its last output:\n"
        + "\n".join((completed.stdout + completed.stderr).splitlines()[-20:])
    )


def _check_platform():
    if not sys.platform.startswith("linux") or not os.path.exists(
        "/proc/self/clear_refs"
    ):
        raise RuntimeError(
            "Measuring memory needs Linux (it reads and resets the peak "
            f"resident set size through /proc). Received platform "
            f"{sys.platform!r}. Use `keras_repnet.memory.profile()` for the "
            "analytic estimate instead."
        )


def _check_spec(**spec):
    from keras_repnet import methods
    from keras_repnet.core import backbones

    known = (INFERENCE, *methods.METHODS)
    if spec["method"] not in known:
        raise ValueError(
            f"Unknown method {spec['method']!r}. Use one of {known}."
        )
    backbones.constructor_for(spec["backbone"])
    for name in ("image_size", "batch_size", "steps"):
        if not isinstance(spec[name], int) or spec[name] < 1:
            raise ValueError(
                f"`{name}` must be a positive int. Received: "
                f"{name}={spec[name]!r}"
            )
    if not isinstance(spec["num_classes"], int) or spec["num_classes"] < 2:
        raise ValueError(
            "`num_classes` must be an int of at least 2. Received: "
            f"num_classes={spec['num_classes']!r}"
        )
    return spec


# === Inside the fresh process ===


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status.")


def _peak_of(step):
    """Peak resident bytes of `step()` above the memory held before it.

    Python's garbage collector is run before and kept off during the step:
    memory it frees in the middle of the step (e.g. graphs left from
    tracing) would hide as much of the step's own peak.
    """
    gc.collect()
    gc.disable()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        baseline = _status_bytes("VmRSS")
        step()
        return _status_bytes("VmHWM") - baseline, baseline
    finally:
        gc.enable()


def _build(spec):
    import keras

    from keras_repnet import methods
    from keras_repnet.core import backbones

    shape = (spec["image_size"], spec["image_size"], 3)
    with backbones.random_weights_on_purpose():
        if spec["method"] == INFERENCE:
            model = backbones.resolve(spec["backbone"], shape, None)
            model.trainable = False
            return model
        model = methods.build_method(
            spec["method"],
            spec["backbone"],
            spec["num_classes"],
            input_shape=shape,
            weights=None,
            **spec["options"],
        )
    if hasattr(model, "lean_backward"):
        model.lean_backward = spec["lean_backward"]
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _child(spec):
    import tensorflow as tf

    from keras_repnet.memory import profiler

    model = _build(spec)
    batch, size = spec["batch_size"], spec["image_size"]
    images = tf.random.uniform((batch, size, size, 3), -1.0, 1.0, seed=0)
    labels = tf.random.uniform(
        (batch,), 0, spec["num_classes"], dtype=tf.int32, seed=1
    )
    if spec["method"] == INFERENCE:
        forward = tf.function(lambda x: model(x, training=False))
        step = lambda: forward(images).numpy()  # noqa: E731
    else:
        step = lambda: model.train_on_batch(images, labels)  # noqa: E731
    profile = profiler.profile(model, batch).to_dict()
    step()
    step()
    peaks, baseline = zip(*(_peak_of(step) for _ in range(PEAK_STEPS)))
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    result = Measurement(
        method=spec["method"],
        backbone=spec["backbone"],
        image_size=size,
        batch_size=batch,
        lean_backward=bool(getattr(model, "lean_backward", False)),
        peak_bytes=int(statistics.median(peaks)),
        baseline_bytes=baseline[0],
        step_seconds=statistics.median(times),
        peak_bytes_range=[min(peaks), max(peaks)],
        profile=profile,
    )
    print(_RESULT_MARKER + json.dumps(result.to_dict()), flush=True)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
