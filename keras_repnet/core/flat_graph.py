"""The flattened graph the memory profiler counts on.

`Graph.of(model)` lays a functional model out as a list of nodes, one per
operation, nested models walked through and each layer's fused activation a
node of its own; a layer with `steps()` (a `RepNetModule`) as the chain of
its steps. `Flow.of(graph)` says which nodes run and which tensors carry a
gradient. Only the graph's structure is used: layer types, trainable flags,
shapes, and the paths from trainable weights to the loss.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_repnet.core import graph as graph_lib
from keras_repnet.core import models
from keras_repnet.core.layers import QuantizedGateProduct
from keras_repnet.core.layers import SignGradient
from keras_repnet.core.layers import StopGradient
from keras_repnet.core.plan import count_params

PIECEWISE_LINEAR = ("relu", "relu6", "leaky_relu")
# The detail of a `SignGradient` activation: its backward keeps a mask.
SIGN = "sign"
# The detail of a `QuantizedGateProduct`: its backward keeps `x` in int8.
INT8 = "int8"
_NAME_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}

# Elementwise operations that keep nothing for their gradient.
_ELEMENTWISE = (keras.layers.Add, keras.layers.Subtract, keras.layers.Rescaling)
_ELEMENTWISE_OPS = {
    "Add", "Subtract", "Negative", "Multiply", "TrueDivide", "Divide"
}
# Activations that are one TensorFlow op, which can write its result into
# its input's buffer.
ONE_OP_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "sigmoid", "tanh", "elu")
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
class Node:
    """One operation of the flattened graph, with what memory cares about."""

    kind: str  # See `_classify`.
    inputs: list  # Tensor keys.
    outputs: list
    trainable_bytes: int = 0  # Its trainable weights, fp32.
    stores_input: bool = False  # A trainable kernel: needs its input.
    detail: object = None  # E.g. the activation's name.
    name: str = ""  # The layer's name, for reports.
    module: int = -1  # Index of the first node of its recomputed layer.
    layer: object = None  # The Keras layer (e.g. a convolution's padding).


@dataclasses.dataclass
class Graph:
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
        for node in graph_lib.topological_nodes(model):
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
            if hasattr(operation, "steps"):  # A `RepNetModule`.
                self._add_steps(
                    operation, inputs[0], outputs[0], trainable_ids
                )
            else:
                self._add_layer(operation, inputs, outputs, trainable_ids)

    def _add_layer(self, layer, inputs, outputs, trainable_ids):
        """Adds a layer, and its fused activation as a node of its own."""
        kind, detail = _classify(layer, len(inputs))
        activation = activation_name(getattr(layer, "activation", None))
        fused = kind == "weighted" and activation not in (None, "linear")
        pre = outputs
        if fused:  # The layer's result before its activation.
            result = outputs[0]
            pre = [self._new_key(self.shapes[result], self.itemsize[result])]
        self.nodes.append(
            Node(
                kind,
                inputs,
                pre,
                trainable_bytes=4 * count_params(
                    w
                    for w in getattr(layer, "weights", ())
                    if id(w) in trainable_ids
                ),
                stores_input=_has_trainable_kernel(layer, trainable_ids),
                detail=detail,
                name=layer.name,
                layer=layer,
            )
        )
        if fused:
            self.nodes.append(
                Node(
                    "activation",
                    pre,
                    outputs,
                    detail=activation,
                    name=f"{layer.name}_activation",
                )
            )

    def _add_steps(self, layer, source, result, trainable_ids):
        """Lays out a layer that lists its operations (`layer.steps()`:
        sublayers and activation functions, in the order `call` runs them),
        its `recomputed_steps()` marked as one recomputed layer where
        `RepNetModel` recomputes it."""
        steps = layer.steps()
        again = layer.recomputed_steps() if models.recomputed(layer) else []
        shape = (1, *self.shapes[source])
        current, first = source, None
        for index, step in enumerate(steps):
            if again and step is again[0]:
                first = len(self.nodes)  # The recomputed layer starts here.
            is_layer = isinstance(step, keras.layers.Layer)
            if index == len(steps) - 1:
                following = result
            else:
                if is_layer:
                    shape = step.compute_output_shape(shape)
                following = self._new_key(shape[1:], self.itemsize[source])
            if is_layer:
                self._add_layer(step, [current], [following], trainable_ids)
            else:
                name = activation_name(step)
                self.nodes.append(
                    Node(
                        "activation",
                        [current],
                        [following],
                        detail=name,
                        name=f"{layer.name}_{name}",
                    )
                )
            current = following
        if first is not None:
            for node in self.nodes[first:]:
                node.module = first


def activation_name(function):
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
    if isinstance(operation, SignGradient):
        return "activation", SIGN
    if isinstance(operation, StopGradient):
        return "stop", None
    if isinstance(operation, QuantizedGateProduct):
        return "multiply", INT8
    if isinstance(operation, keras.layers.Activation):
        return "activation", activation_name(operation.activation)
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


def _has_trainable_kernel(layer, trainable_ids):
    """Whether a trainable weight's gradient needs the layer's input: any
    weight other than a bias, unless the layer declares that its weights'
    gradients do not read the input (`weight_gradient_reads_input = False`,
    e.g. a layer that adds its weight)."""
    if _classify(layer, 1)[0] == "norm":
        return False  # Handled by the norm rules.
    if not getattr(layer, "weight_gradient_reads_input", True):
        return False
    return any(
        id(w) in trainable_ids and w is not getattr(layer, "bias", None)
        for w in getattr(layer, "weights", [])
    )


@dataclasses.dataclass
class Flow:
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
            if node.kind == "stop":
                continue  # Its output carries no gradient.
            if node.trainable_bytes or any(k in depends for k in node.inputs):
                depends.update(node.outputs)
        needs_grad = {k: k in depends and k in reaches for k in producer}
        return cls(producer, consumers, runs, needs_grad)

    def last_use(self, key, default):
        return self.consumers.get(key, [default])[-1]

