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
- `ours`: what TensorFlow keeps, modelled op by op (e.g. `Relu6Grad` reads
  the fp32 ReLU6 output, a batch norm in training mode keeps its input,
  hard-swish keeps its input, its gate and its ReLU6 output). For a model
  that trains with keras-repnet's lean backward (`RepNetModel`,
  `keras_repnet.gradients`): a bool mask per ReLU, no padded gradient
  before a depthwise convolution, and `RepNetModule`s recomputed in the
  backward pass. Its peak follows the lifetime of every tensor, kept tensor
  and gradient through the forward and the backward pass (with buffer
  reuse by elementwise ops), from the start of the step: it estimates what
  `keras_repnet.memory.measure` reads. The kept tensors match those that
  the backward ops of TensorFlow's optimised training graph read, and the
  peak the measurements of `bench/memory.py` within a few percent.

Only the graph's structure is used: layer types, trainable flags, shapes,
and which tensors lie on a path from a trainable weight to the loss. A layer
type without a rule (e.g. a custom layer) is assumed to keep its input when
a gradient passes through it.
"""

import dataclasses
import itertools
import math

import keras
import numpy as np

from keras_repnet.layers import RepNetModule

# What TensorFlow's gradient of each activation keeps: "in" / "out" (the
# op's input / output), "extra" (an intermediate fp32 tensor of the same
# size) or "relu6" / "relu" (the output of a ReLU6 / ReLU: kept in fp32 by
# TensorFlow's `Relu6Grad` / `ReluGrad`; with keras-repnet's lean rules a
# bool mask, and for ReLU6 a second bool while the mask is made). E.g.
# hard-swish is `x * relu6(x + 3) / 6`: the product keeps `x` and the gate.
_TF_ACTIVATIONS = {
    "relu": ("relu",),
    "relu6": ("relu6",),
    "leaky_relu": ("in",),
    "sigmoid": ("out",),
    "tanh": ("out",),
    "softmax": ("out",),
    "elu": ("out",),
    "selu": ("in", "out"),
    "silu": ("in",),
    "hard_sigmoid": ("relu6",),
    "hard_silu": ("in", "extra", "relu6"),
    "gelu": ("in", "extra"),
}
# With the lean rules, hard-swish keeps only its input (the gate is
# recomputed in the backward pass).
_LEAN_ACTIVATIONS = {"hard_silu": ("in", "gate")}
_PIECEWISE_LINEAR = ("relu", "relu6", "leaky_relu")
_NAME_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}

# Elementwise operations that keep nothing for their gradient.
_ELEMENTWISE = (keras.layers.Add, keras.layers.Subtract, keras.layers.Rescaling)
_ELEMENTWISE_OPS = {
    "Add", "Subtract", "Negative", "Multiply", "TrueDivide", "Divide"
}
# Activations that are one TensorFlow op, which can write its result into
# its input's buffer.
_ONE_OP_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "sigmoid", "tanh", "elu")
# Other operations that keep nothing for their gradient (shapes at most).
_FREE = (
    keras.layers.Average,
    keras.layers.Concatenate,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Permute,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.Identity,
    keras.layers.InputLayer,
)
# `keras.ops` functions met in functional graphs (e.g. `x + 3.0`), by class.
_FREE_OPS = {
    "Reshape",
    "Transpose",
    "ExpandDims",
    "Squeeze",
    "Concatenate",
    "Mean",
    "Sum",
    "Cast",
    "Pad",
}


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

    >>> model = keras_repnet.build("MobileNetV2", 10, weights=None)
    >>> print(keras_repnet.memory.profile(model, batch_size=8))
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: "
            f"batch_size={batch_size!r}"
        )
    if lean_backward is None:
        lean_backward = bool(getattr(model, "lean_backward", False))
    graph = _Graph.of(model)
    flow = _Flow.of(graph)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    frozen = sum(math.prod(w.shape) for w in model.non_trainable_weights)
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


# === The flattened graph ===


@dataclasses.dataclass
class _Node:
    """One operation of the flattened graph, with what memory cares about."""

    kind: str  # See `_classify`.
    inputs: list  # Tensor keys.
    outputs: list
    trainable_bytes: int = 0  # Its trainable weights, fp32.
    stores_input: bool = False  # A trainable kernel: needs its input.
    detail: object = None  # E.g. the activation's name.
    name: str = ""  # The layer's name, for reports.
    module: int = -1  # Index of the first node of its `RepNetModule`.


@dataclasses.dataclass
class _Graph:
    nodes: list  # Topological order.
    shapes: dict  # Tensor key -> shape without the batch axis.
    itemsize: dict  # Tensor key -> bytes per element.
    output: int = 0  # Key of the loss's input.

    def nbytes(self, key, batch_size):
        return batch_size * math.prod(self.shapes[key]) * self.itemsize[key]

    @classmethod
    def of(cls, model):
        model = getattr(model, "_functional", None) or model  # Sequential.
        if not hasattr(model, "_nodes_by_depth") or len(model.outputs) != 1:
            raise ValueError(
                "`profile` needs a functional keras.Model with one output "
                f"(the logits). Received: {type(model).__name__} "
                f"{getattr(model, 'name', '')!r}."
            )
        graph = cls([], {}, {})
        trainable_ids = {id(w) for w in model.trainable_weights}
        keys = {}
        graph._add_model(model, keys, trainable_ids)
        graph.output = keys[id(model.outputs[0])]
        return graph

    def _key(self, keys, tensor):
        if id(tensor) not in keys:
            keys[id(tensor)] = self._new_key(
                tuple(tensor.shape[1:]), np.dtype(tensor.dtype).itemsize
            )
        return keys[id(tensor)]

    def _new_key(self, shape, itemsize):
        key = len(self.shapes)
        self.shapes[key] = tuple(shape)
        self.itemsize[key] = itemsize
        return key

    def _add_model(self, model, keys, trainable_ids):
        for node in _topological_nodes(model):
            operation = node.operation
            if isinstance(operation, keras.layers.InputLayer):
                continue
            inputs = [self._key(keys, t) for t in node.input_tensors]
            operation = getattr(operation, "_functional", None) or operation
            if hasattr(operation, "_nodes_by_depth"):  # Nested model.
                for inner, outer in zip(operation.inputs, node.input_tensors):
                    keys[id(inner)] = keys[id(outer)]
                self._add_model(operation, keys, trainable_ids)
                for inner, outer in zip(operation.outputs, node.outputs):
                    keys[id(outer)] = keys[id(inner)]
                continue
            outputs = [self._key(keys, t) for t in node.outputs]
            if isinstance(operation, RepNetModule):
                self._add_module(
                    operation, inputs[0], outputs[0], trainable_ids
                )
            else:
                self._add_layer(operation, inputs, outputs, trainable_ids)

    def _add_layer(self, layer, inputs, outputs, trainable_ids):
        """Adds a layer, and its fused activation as a node of its own."""
        kind, detail = _classify(layer, len(inputs))
        activation = _activation_name(getattr(layer, "activation", None))
        fused = kind == "weighted" and activation not in (None, "linear")
        pre = outputs
        if fused:  # The layer's result before its activation.
            result = outputs[0]
            pre = [self._new_key(self.shapes[result], self.itemsize[result])]
        self.nodes.append(
            _Node(
                kind,
                inputs,
                pre,
                trainable_bytes=sum(
                    4 * math.prod(w.shape)
                    for w in getattr(layer, "weights", ())
                    if id(w) in trainable_ids
                ),
                stores_input=_has_trainable_kernel(layer, trainable_ids),
                detail=detail,
                name=layer.name,
            )
        )
        if fused:
            self.nodes.append(
                _Node(
                    "activation",
                    pre,
                    outputs,
                    detail=activation,
                    name=f"{layer.name}_activation",
                )
            )

    def _add_module(self, module, source, result, trainable_ids):
        """A `RepNetModule` is a chain of sublayers; lays them out."""
        steps = [module.pool, module.conv, module.norm, "relu",
                 module.project, module.project_norm, module.resize]
        steps = [s for s in steps if s is not None]
        shape = (1, *self.shapes[source])
        current, first = source, len(self.nodes)
        for index, step in enumerate(steps):
            if index == len(steps) - 1:
                following = result
            else:
                if step != "relu":
                    shape = step.compute_output_shape(shape)
                following = self._new_key(shape[1:], self.itemsize[source])
            if step == "relu":
                self.nodes.append(
                    _Node(
                        "activation",
                        [current],
                        [following],
                        detail="relu",
                        name=f"{module.name}_relu",
                    )
                )
            else:
                self._add_layer(step, [current], [following], trainable_ids)
            current = following
        for node in self.nodes[first:]:
            node.module = first


def _topological_nodes(model):
    """The model's nodes, each after the nodes it reads from."""
    order, seen = [], set()
    stack = [(t, False) for t in model.outputs]
    while stack:
        tensor, expanded = stack.pop()
        operation, index, _ = tensor._keras_history
        node = operation._inbound_nodes[index]
        if expanded:
            if id(node) not in seen:
                seen.add(id(node))
                order.append(node)
            continue
        if id(node) in seen:
            continue
        stack.append((tensor, True))
        stack.extend((t, False) for t in node.input_tensors)
    return order


def _activation_name(function):
    if function is None:
        return None
    name = getattr(function, "__name__", type(function).__name__)
    return _NAME_ALIASES.get(name, name)


def _classify(operation, num_inputs):
    """The memory rule of an operation: (kind, detail)."""
    if isinstance(operation, keras.layers.BatchNormalization):
        return "norm", operation.trainable  # Batch statistics in training.
    if isinstance(
        operation,
        (keras.layers.LayerNormalization, keras.layers.GroupNormalization),
    ):
        return "norm", True  # Always the statistics of the input.
    if isinstance(operation, (keras.layers.ReLU, keras.layers.LeakyReLU)) or (
        type(operation).__name__ == "ReLU" and hasattr(operation, "max_value")
    ):
        if getattr(operation, "negative_slope", 0.0):
            return "activation", "leaky_relu"
        six = getattr(operation, "max_value", None) == 6
        return "activation", "relu6" if six else "relu"
    if isinstance(operation, keras.layers.Activation):
        return "activation", _activation_name(operation.activation)
    if isinstance(operation, keras.layers.Softmax):
        return "activation", "softmax"
    if isinstance(operation, keras.layers.Multiply) or (
        type(operation).__name__ == "Multiply" and num_inputs > 1
    ):
        return "multiply", None
    if isinstance(
        operation, (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D)
    ):
        return "maxpool", None
    if isinstance(operation, keras.layers.Resizing) or (
        isinstance(operation, keras.layers.UpSampling2D)
        and operation.interpolation != "nearest"
    ):
        return "resize", None
    if isinstance(operation, keras.layers.Dropout):
        return "dropout", None
    if isinstance(operation, keras.layers.ZeroPadding2D):
        return "pad", None
    if isinstance(operation, keras.layers.DepthwiseConv2D):
        return "weighted", "depthwise"
    name = type(operation).__name__
    if isinstance(operation, _ELEMENTWISE) or name in _ELEMENTWISE_OPS:
        return "add", None  # Two-operand products were matched above.
    if isinstance(operation, (_FREE, keras.layers.UpSampling2D)):
        return "free", None
    if name in _FREE_OPS:
        return "free", None
    if getattr(operation, "weights", None):
        return "weighted", None
    return "unknown", None


def _fused_pads(graph, flow):
    """With the lean rules, a zero padding read only by a depthwise
    convolution gets no gradient of its own: the convolution's input
    gradient is the unpadded tensor's. Returns {padding index: consumer}."""
    fused = {}
    for index, node in enumerate(graph.nodes):
        users = flow.consumers.get(node.outputs[0], []) if node.outputs else []
        if node.kind == "pad" and len(users) == 1:
            if graph.nodes[users[0]].detail == "depthwise":
                fused[index] = users[0]
    return fused


def _has_trainable_kernel(layer, trainable_ids):
    """Whether a weight other than a bias trains: its gradient needs the
    layer's input."""
    if _classify(layer, 1)[0] == "norm":
        return False  # Handled by the norm rules.
    return any(
        id(w) in trainable_ids and w is not getattr(layer, "bias", None)
        for w in getattr(layer, "weights", [])
    )


# === What the backward pass needs ===


@dataclasses.dataclass
class _Flow:
    """Which nodes run and which tensors carry a gradient."""

    producer: dict  # Tensor key -> node index.
    consumers: dict  # Tensor key -> indices of the nodes that read it.
    runs: list  # Node index -> whether its result reaches the loss.
    needs_grad: dict  # Tensor key -> on a path from a trainable weight.

    @classmethod
    def of(cls, graph):
        producer, consumers = {}, {}
        for index, node in enumerate(graph.nodes):
            for key in node.outputs:
                producer[key] = index
            for key in node.inputs:
                consumers.setdefault(key, []).append(index)
        reaches = {graph.output}
        runs = [False] * len(graph.nodes)
        for index in reversed(range(len(graph.nodes))):
            node = graph.nodes[index]
            if any(key in reaches for key in node.outputs):
                runs[index] = True
                reaches.update(node.inputs)
        depends = set()
        for index, node in enumerate(graph.nodes):
            if node.trainable_bytes or any(k in depends for k in node.inputs):
                depends.update(node.outputs)
        needs_grad = {k: k in depends and k in reaches for k in producer}
        return cls(producer, consumers, runs, needs_grad)

    def last_use(self, key, default):
        return self.consumers.get(key, [default])[-1]


def _kept(graph, flow, index, rules):
    """What node `index` keeps for its backward pass under `rules`
    (`"ideal"`, `"tf"` or `"lean"`), as `{item: bytes per example}`.

    An item is `(form, what)`: `("fp32", key)` is the tensor itself,
    `("bit", key)` and `("bool", key)` are masks of it, `("extra", (index,
    n))` is the n-th intermediate tensor the node keeps and `("temp", (index,
    n))` one it holds only while it runs.
    """
    node = graph.nodes[index]
    if not flow.runs[index]:
        return {}
    grad_in = [flow.needs_grad.get(k, False) for k in node.inputs]
    source = node.inputs[0] if node.inputs else None
    whole = lambda key: {("fp32", key): graph.nbytes(key, 1)}  # noqa: E731
    kept = {}
    if node.stores_input:
        for key in node.inputs:
            kept.update(whole(key))
    if node.kind == "norm" and node.detail and (
        node.trainable_bytes or any(grad_in)
    ):
        # Training mode: the batch statistics and the scale's gradient
        # read the input.
        kept.update(whole(source))
    if node.kind == "multiply":
        for position, key in enumerate(node.inputs):
            if any(g for p, g in enumerate(grad_in) if p != position):
                kept.update(whole(key))
    if not any(grad_in):
        return kept
    elements = graph.nbytes(source, 1) // graph.itemsize[source]
    mask = {("bit", source): math.ceil(elements / 8)}
    if node.kind == "activation":
        if rules != "ideal":
            kept.update(_activation_kept(graph, node, index, rules == "lean"))
        elif node.detail in _PIECEWISE_LINEAR:
            kept.update(mask)
        else:
            kept.update(whole(source))
    elif node.kind == "dropout":
        if rules == "ideal":
            kept.update(mask)
        else:
            kept[("extra", (index, 0))] = graph.nbytes(source, 1)
    elif node.kind == "unknown":
        kept.update(whole(source))
    elif rules != "ideal" and node.kind in ("maxpool", "resize"):
        kept.update(whole(source))
        if node.kind == "maxpool":
            kept.update(whole(node.outputs[0]))
    return kept


def _activation_kept(graph, node, index, lean):
    """What TensorFlow keeps for an activation (see `_TF_ACTIVATIONS`)."""
    source, result = node.inputs[0], node.outputs[0]
    nbytes = graph.nbytes(source, 1)
    booleans = nbytes // graph.itemsize[source]
    kept = {}
    parts = _TF_ACTIVATIONS.get(node.detail, ("in",))
    if lean:
        parts = _LEAN_ACTIVATIONS.get(node.detail, parts)
    for position, part in enumerate(parts):
        if part == "in":
            kept[("fp32", source)] = nbytes
        elif part == "out" or (part == node.detail and not lean):
            # The output (for a ReLU itself: what `ReluGrad` reads).
            kept[("fp32", result)] = nbytes
        elif part == "gate":  # Made again while the node's gradient runs.
            kept[("again", (index, position))] = nbytes
        elif part in ("relu", "relu6") and lean:
            kept[("bool", source)] = booleans
            if part == "relu6":  # `0 < y` and `y < 6`, then their `and`.
                kept[("temp", (index, position))] = booleans
        else:  # An intermediate tensor of the activation.
            kept[("extra", (index, position))] = nbytes
    return kept


def _ideal_memory(graph, flow, batch_size):
    """TinyTL's count: stored activations, and the peak of (stored so far
    + one layer's inputs and outputs)."""
    kept = [_kept(graph, flow, i, "ideal") for i in range(len(graph.nodes))]
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
    lean rules, `RepNetModel` recomputes each `RepNetModule` in the backward
    pass: the forward keeps only the module's input, and what the module's
    backward needs lives from the module's backward on.
    """
    rules = "lean" if lean_backward else "tf"
    n = len(graph.nodes)
    backward = lambda index: 2 * n - 1 - index  # noqa: E731
    modules = {}  # First node of a recomputed module -> its last node.
    if lean_backward:
        for index, node in enumerate(graph.nodes):
            if node.module >= 0:
                modules[node.module] = index
    fused = _fused_pads(graph, flow) if lean_backward else {}
    # What each node keeps: (item, bytes, from, to).
    kept = []
    for index, node in enumerate(graph.nodes):
        if index in modules and node.module == index and flow.runs[index]:
            source = node.inputs[0]  # Kept to run the module again.
            start = flow.producer.get(source, -1)
            nbytes = graph.nbytes(source, 1)
            kept.append((("fp32", source), nbytes, start, backward(index)))
        for (form, what), nbytes in _kept(graph, flow, index, rules).items():
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
            node.kind == "activation" and node.detail in _ONE_OP_ACTIVATIONS
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
