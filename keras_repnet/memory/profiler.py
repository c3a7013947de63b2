"""Analytic training memory of a Keras model, read from its functional graph.

`profile(model)` counts the bytes of parameters, gradients and optimizer
state, and the activations a training step keeps for its backward pass under
two rule sets:

- `ideal`: the accounting of TinyTL and Rep-Net. A layer with a trainable
  weight stores its fp32 input; ReLU-like activations store a 1-bit mask
  when a gradient passes through them; other nonlinearities store their full
  input; multiplications of two tensors store both operands; pooling,
  resizing, padding and additions store nothing. The peak is the largest
  (stored so far + the layer's inputs and outputs) over the layers.
- `ours`: what TensorFlow keeps, op by op, as each gradient function
  declares it (`keras_repnet.backward.TENSORFLOW_KEEPS`: e.g. `Relu6Grad`
  reads the fp32 ReLU6 output; a batch norm in training mode keeps its
  input). For a model that trains with keras-repnet's lean backward
  (`RepNetModel`), the lean rules' own declarations
  (`keras_repnet.backward.keeps_of`: e.g. a mask per ReLU kept as bits, no padded
  gradient before a depthwise convolution) and `RepNetModel`'s
  recomputation policy (`keras_repnet.core.models.recomputed`: the side
  modules run again in the backward pass). Its peak follows the lifetime
  of every tensor, kept tensor and gradient through the forward and the
  backward pass (with buffer reuse by elementwise ops), from the start of
  the step: it estimates what `keras_repnet.memory.measure` reads. The kept
  tensors match those that the backward ops of TensorFlow's optimised
  training graph read (`tests/test_memory.py`); `bench/memory.py` reports
  the ratio of the peak to the measured one on every row.

Only the graph's structure is used: layer types, trainable flags, shapes,
and which tensors lie on a path from a trainable weight to the loss. A layer
type without a rule (e.g. a custom layer) is assumed to keep its input when
a gradient passes through it. The graph is laid out by `core/flat_graph.py`,
what each node keeps is counted by `memory/kept.py`.
"""

import dataclasses
import itertools

import keras

from keras_repnet.core.plan import count_params
from keras_repnet.memory import kept as kept_lib
from keras_repnet.core.flat_graph import Flow
from keras_repnet.core.flat_graph import Graph
from keras_repnet.core.flat_graph import ONE_OP_ACTIVATIONS

@dataclasses.dataclass
class ActivationMemory:
    """Activation memory of a training step under one rule set.

    Attributes:
        stored_bytes: int. Bytes kept from the forward pass for the backward
            pass.
        peak_bytes: int. Peak bytes during the step: for `ideal`, the
            TinyTL peak of stored activations plus one layer's inputs and
            outputs; for `ours`, activations, gradients and TensorFlow's
            working tensors at the busiest moment (comparable to a measured
            step peak).
    """

    stored_bytes: int
    peak_bytes: int


@dataclasses.dataclass
class MemoryProfile:
    """Training memory of a model, counted from its graph (see `profile`).

    Attributes:
        model_name: str. The model's name.
        batch_size: int. Examples per step.
        trainable_params: int. Trainable scalars.
        frozen_params: int. Non-trainable scalars (weights and statistics).
        frozen_bytes: int. Frozen parameters at fp32.
        frozen_int8_bytes: int. Frozen parameters at 8 bits.
        trainable_bytes: int. Trainable parameters at fp32.
        gradient_bytes: int. Their gradients.
        optimizer_bytes: int. Optimizer state (Adam: two slots).
        ideal: ActivationMemory. The TinyTL / Rep-Net accounting.
        ours: ActivationMemory. What TensorFlow keeps.
        lean_backward: bool. Whether `ours` models keras-repnet's lean
            backward pass.
    """

    model_name: str
    batch_size: int
    trainable_params: int
    frozen_params: int
    frozen_bytes: int
    frozen_int8_bytes: int
    trainable_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    ideal: ActivationMemory
    ours: ActivationMemory
    lean_backward: bool

    @property
    def ideal_total_bytes(self) -> int:
        """The papers' total: peak activations, trainable parameters at
        fp32 and frozen parameters at 8 bits."""
        return (
            self.ideal.peak_bytes
            + self.trainable_bytes
            + self.frozen_int8_bytes
        )

    @property
    def ours_total_bytes(self) -> int:
        """Everything a TensorFlow training step holds at its peak: fp32
        parameters, optimizer state and the step's peak."""
        return (
            self.ours.peak_bytes
            + self.frozen_bytes
            + self.trainable_bytes
            + self.optimizer_bytes
        )

    def to_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "ideal_total_bytes": self.ideal_total_bytes,
            "ours_total_bytes": self.ours_total_bytes,
        }

    def format(self) -> str:
        """The breakdown as a readable table, in MB (10^6 bytes)."""
        rows = [
            ("frozen parameters (fp32 / int8)",
             f"{_mb(self.frozen_bytes)} / {_mb(self.frozen_int8_bytes)}"),
            ("trainable parameters", _mb(self.trainable_bytes)),
            ("gradients (in ours' step peak)", _mb(self.gradient_bytes)),
            ("optimizer state (Adam)", _mb(self.optimizer_bytes)),
            ("stored activations, ideal / ours",
             f"{_mb(self.ideal.stored_bytes)} / {_mb(self.ours.stored_bytes)}"),
            ("step peak, ideal / ours",
             f"{_mb(self.ideal.peak_bytes)} / {_mb(self.ours.peak_bytes)}"),
            ("total, ideal (int8 frozen) / ours (fp32)",
             f"{_mb(self.ideal_total_bytes)} / {_mb(self.ours_total_bytes)}"),
        ]
        width = max(len(name) for name, _ in rows)
        backward = "lean backward" if self.lean_backward else "plain autodiff"
        lines = [
            f"Training memory of {self.model_name!r}, batch "
            f"{self.batch_size}, {backward} (MB):"
        ]
        lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
        lines.append(
            f"  ({self.trainable_params:,} trainable and "
            f"{self.frozen_params:,} frozen parameters)"
        )
        return "\n".join(lines)

    def __str__(self):
        return self.format()


def _mb(num_bytes):
    return f"{num_bytes / 1e6:.1f}"


def profile(
    model: keras.Model,
    batch_size: int = 8,
    *,
    lean_backward: bool | None = None,
    optimizer_slots: int = 2,
) -> MemoryProfile:
    """Counts the training memory of a model from its graph, without training.

    Args:
        model: keras.Model. A functional model (e.g. from
            `keras_repnet.build`, a comparison method, or loaded from a
            `.keras` file). Nested functional models are walked through.
        batch_size: int. Examples per step. Defaults to 8.
        lean_backward: bool. Whether the model trains with keras-repnet's
            lean backward pass, as a `RepNetModel` with `lean_backward=True`
            does. Defaults to the model's own `lean_backward` attribute,
            else `False`.
        optimizer_slots: int. Optimizer state per trainable scalar. Defaults
            to 2 (Adam).

    Returns:
        A `MemoryProfile`; `print(profile)` shows the breakdown.

    Example:

    ```python
    model = keras_repnet.build("MobileNetV2", 10, weights=None)
    print(keras_repnet.memory.profile(model, batch_size=8))
    ```
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: "
            f"batch_size={batch_size!r}"
        )
    if lean_backward is None:
        lean_backward = bool(getattr(model, "lean_backward", False))
    graph = Graph.of(model)
    flow = Flow.of(graph)
    trainable = count_params(model.trainable_weights)
    frozen = count_params(model.non_trainable_weights)
    ideal = _ideal_memory(graph, flow, batch_size)
    ours = _tf_memory(graph, flow, batch_size, lean_backward)
    return MemoryProfile(
        model_name=model.name,
        batch_size=batch_size,
        trainable_params=trainable,
        frozen_params=frozen,
        frozen_bytes=4 * frozen,
        frozen_int8_bytes=frozen,
        trainable_bytes=4 * trainable,
        gradient_bytes=4 * trainable,
        optimizer_bytes=4 * trainable * optimizer_slots,
        ideal=ideal,
        ours=ours,
        lean_backward=lean_backward,
    )


def _ideal_memory(graph, flow, batch_size):
    """TinyTL's count: stored activations, and the peak of (stored so far
    + one layer's inputs and outputs)."""
    kept = [kept_lib.kept(graph, flow, i, "ideal") for i in range(len(graph.nodes))]
    # A mask is not needed where the tensor itself is stored anyway.
    whole = {item[1] for items in kept for item in items if item[0] == "fp32"}
    stored, peak = {}, 0
    for index, node in enumerate(graph.nodes):
        if not flow.runs[index]:
            continue
        stored.update(
            (item, nbytes)
            for item, nbytes in kept[index].items()
            if item[0] != "bit" or not whole.intersection(node.outputs)
        )
        here = set(node.inputs) | set(node.outputs)
        working = sum(graph.nbytes(k, 1) for k in here)
        others = sum(
            b for (form, what), b in stored.items()
            if not (form == "fp32" and what in here)
        )
        peak = max(peak, working + others)
    return ActivationMemory(
        stored_bytes=batch_size * sum(stored.values()),
        peak_bytes=batch_size * peak,
    )


def _tf_memory(graph, flow, batch_size, lean_backward):
    """Lifetimes of tensors, kept tensors and gradients through the forward
    (times 0..n-1) and the backward pass (times n..2n-1), and the peak.

    Counted from the start of the step: the input batch exists before it.
    An elementwise op writes its result into an input's buffer when nothing
    else reads that input later (TensorFlow's buffer forwarding). With the
    lean rules, `RepNetModel` recomputes each side module in the backward
    pass: the forward keeps only the module's pooled input, and what its
    backward needs lives from the module's backward on.
    """
    rules = "lean" if lean_backward else "tf"
    n = len(graph.nodes)
    backward = lambda index: 2 * n - 1 - index  # noqa: E731
    modules = {}  # First node of a recomputed layer -> its last node.
    if lean_backward:
        for index, node in enumerate(graph.nodes):
            if node.module >= 0:
                modules[node.module] = index
    fused = kept_lib.fused_pads(graph, flow, lean_backward)
    # What each node keeps: (item, bytes, from, to).
    kept = []
    for index, node in enumerate(graph.nodes):
        if index in modules and node.module == index and flow.runs[index]:
            source = node.inputs[0]  # Kept to run the module again.
            start = flow.producer.get(source, -1)
            nbytes = graph.nbytes(source, 1)
            kept.append((("fp32", source), nbytes, start, backward(index)))
        for (form, what), nbytes in kept_lib.kept(graph, flow, index, rules).items():
            item, end = (form, what), backward(index)
            if form == "temp":
                start, end = index, index
            elif form == "again":
                start = end
            elif node.module in modules:  # Made again in the backward pass.
                item, start = ("again", item), backward(modules[node.module])
            elif form == "fp32":
                start = flow.producer.get(what, -1)
            else:
                start = index
            kept.append((item, nbytes, start, end))
    # Held from the forward into the backward pass (the input aside).
    stored = {item: b for item, b, start, end in kept if 0 <= start < n <= end}
    forwarded = _forwarded_inputs(
        graph, flow, {item[1] for item, *_ in kept if item[0] == "fp32"}
    )
    live = {}  # Item -> [start, end, bytes per example]

    def hold(item, start, end, nbytes):
        if start < 0:
            return  # The model's input: memory held before the step.
        if item in live:
            live[item][0] = min(live[item][0], start)
            live[item][1] = max(live[item][1], end)
        else:
            live[item] = [start, end, nbytes]

    for index, node in enumerate(graph.nodes):
        if not flow.runs[index]:
            continue
        for key in node.outputs:
            end = flow.last_use(key, n) - (key in forwarded)
            hold(("fp32", key), index, end, graph.nbytes(key, 1))
        if node.trainable_bytes:
            # The weight gradients wait for the optimizer at the end.
            hold(
                ("grad", index),
                backward(index),
                2 * n,
                node.trainable_bytes / batch_size,
            )
    for item, nbytes, start, end in kept:
        hold(item, start, end, nbytes)
    for key, needs in flow.needs_grad.items():
        if not needs or flow.producer[key] in fused:
            continue
        reader = flow.last_use(key, n)
        reader = fused.get(reader, reader)  # The gradient skips a padding.
        start = n if key == graph.output else backward(reader)
        end = backward(flow.producer[key])
        hold(("dy", key), start, end, graph.nbytes(key, 1))
    changes = [0.0] * (2 * n + 2)
    for start, end, nbytes in live.values():
        changes[start] += nbytes
        changes[end + 1] -= nbytes
    timeline = list(itertools.accumulate(changes))
    return ActivationMemory(
        stored_bytes=batch_size * sum(stored.values()),
        peak_bytes=int(batch_size * max(timeline)),
    )


def _forwarded_inputs(graph, flow, kept):
    """Tensors whose buffer an elementwise op reuses for its result: the
    first input of the op's shape that nothing reads later or keeps."""
    forwarded = set()
    for index, node in enumerate(graph.nodes):
        elementwise = node.kind in ("add", "multiply", "norm") or (
            node.kind == "activation" and node.detail in ONE_OP_ACTIVATIONS
        )
        if not elementwise or not node.outputs:
            continue
        for key in node.inputs:
            if (
                graph.shapes[key] == graph.shapes[node.outputs[0]]
                and graph.itemsize[key] == graph.itemsize[node.outputs[0]]
                and flow.last_use(key, -1) == index
                and key not in kept
                and key in flow.producer
            ):
                forwarded.add(key)
                break
    return forwarded
