"""What each node of the flattened graph keeps for the backward pass.

Under `"ideal"`, the TinyTL / Rep-Net accounting. Under `"tf"` and
`"lean"`, what the gradient functions keep, as they declare it: TensorFlow's
own (`keras_repnet.backward.TENSORFLOW_KEEPS`) and, for `"lean"`, the lean
rules' declarations (`keras_repnet.backward.keeps_of`). No table here
repeats them: change a rule's `keeps` and the profile follows.
"""

import math

from keras_repnet import backward
from keras_repnet.backward import lean as lean_rules
from keras_repnet.core.flat_graph import INT8
from keras_repnet.core.flat_graph import PIECEWISE_LINEAR
from keras_repnet.core.flat_graph import SIGN

# The TensorFlow ops a Keras activation runs, each as `(op type, names)`:
# `names` maps the names in the op's `Keeps` to the activation's tensors,
# `"input"` / `"output"` (the default for those two names), or to an
# intermediate tensor of the same size. A third element names the operand
# of an earlier op that this op makes: it gets a gradient only if that op's
# gradient passes one to the operand (see `Keeps.no_gradient`).
_ACTIVATION_OPS = {
    "relu": [("Relu", {})],
    "relu6": [("Relu6", {})],
    "leaky_relu": [("LeakyRelu", {})],
    "sigmoid": [("Sigmoid", {})],
    "tanh": [("Tanh", {})],
    "softmax": [("Softmax", {})],
    "elu": [("Elu", {})],
    "selu": [("Selu", {})],
    "silu": [("Silu", {})],
    "gelu": [("Gelu", {})],
    # relu6(x + 3) / 6
    "hard_sigmoid": [("Relu6", {"output": "relu6"})],
    # x * gate, gate = relu6(x + 3) / 6
    "hard_silu": [
        ("Mul", {"x": "input"}),
        ("Relu6", {"output": "relu6"}, "gate"),
    ],
}
# A layer type without a known gradient keeps its input.
_UNKNOWN = backward.Keeps(tensors=("input",))
# Layer kinds (see `core.flat_graph`) that are one TensorFlow op.
_KIND_OPS = {
    "maxpool": "MaxPool",
    "resize": "ResizeBilinear",
    "dropout": "Dropout",
}


def fused_pads(graph, flow, lean):
    """Where the depthwise gradient declares `fuses_padding` (the lean
    rule), a zero padding read only by a depthwise convolution the rule
    covers gets no gradient of its own: the convolution's input gradient is
    the unpadded tensor's. Returns {padding index: consumer}."""
    if not backward.keeps_of("DepthwiseConv2dNative", lean).fuses_padding:
        return {}
    fused = {}
    for index, node in enumerate(graph.nodes):
        users = flow.consumers.get(node.outputs[0], []) if node.outputs else []
        if node.kind == "pad" and len(users) == 1:
            user = graph.nodes[users[0]]
            if user.detail == "depthwise" and lean_rules.fuses_padding(
                user.layer.padding, user.layer.data_format == "channels_last"
            ):
                fused[index] = users[0]
    return fused


def kept(graph, flow, index, rules):
    """What node `index` keeps for its backward pass under `rules`
    (`"ideal"`, `"tf"` or `"lean"`), as `{item: bytes per example}`.

    An item is `(form, what)`: `("fp32", key)` is the tensor itself,
    `("bit", key)` a mask of it, `("int8", key)` a copy of it in int8,
    `("extra", (index, name))` an intermediate tensor the node keeps,
    `("again", (index, name))` one made again in the backward pass and
    `("temp", (index, n))` one it holds only while it runs.
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
            if not any(g for p, g in enumerate(grad_in) if p != position):
                continue
            if node.detail == INT8 and position == 0:
                # `QuantizedGateProduct`: `x` in int8, and its scales.
                gate = node.inputs[1]
                kept[("int8", key)] = graph.nbytes(key, 1) // graph.itemsize[key]
                kept[("extra", (index, "scale"))] = graph.nbytes(gate, 1)
            else:
                kept.update(whole(key))
    if not any(grad_in):
        return kept
    elements = graph.nbytes(source, 1) // graph.itemsize[source]
    mask = {("bit", source): math.ceil(elements / 8)}
    if node.kind == "activation" and node.detail == SIGN:
        # `SignGradient`: the bits of `x > 0` (`keras_repnet.backward.bits`).
        kept.update(mask)
    elif rules != "ideal" and node.kind == "activation":
        ops = _ACTIVATION_OPS.get(node.detail)
        if ops is None:
            kept.update(_op_kept(graph, node, index, _UNKNOWN, {}, 0))
        else:
            kept.update(_activation_kept(graph, node, index, ops, rules))
    elif rules != "ideal" and node.kind in _KIND_OPS:
        declared = backward.keeps_of(_KIND_OPS[node.kind], rules == "lean")
        kept.update(_op_kept(graph, node, index, declared, {}, 0))
    elif node.kind == "activation" and node.detail not in PIECEWISE_LINEAR:
        kept.update(whole(source))
    elif node.kind in ("activation", "dropout"):
        kept.update(mask)
    elif node.kind == "unknown":
        kept.update(whole(source))
    return kept


def _activation_kept(graph, node, index, ops, rules):
    """What the gradients of an activation's ops keep, as declared."""
    kept, silent = {}, set()
    for position, (op_type, names, *made) in enumerate(ops):
        if made and made[0] in silent:
            continue  # Its result gets no gradient: its own never runs.
        declared = backward.keeps_of(op_type, rules == "lean")
        kept.update(_op_kept(graph, node, index, declared, names, position))
        silent.update(names.get(name, name) for name in declared.no_gradient)
    return kept


def _op_kept(graph, node, index, declared, names, position):
    """`declared` (a `Keeps`) of one op of node `index` as items."""
    source = node.inputs[0]
    nbytes = graph.nbytes(source, 1)
    booleans = nbytes // graph.itemsize[source]
    tensors = {"input": source, "output": node.outputs[0]}

    def item(form, name):
        name = names.get(name, name)
        if name in tensors:
            return ("fp32" if form == "extra" else form, tensors[name])
        return (form, (index, name))  # An intermediate of the same size.

    kept = {}
    for name in declared.tensors:
        kept[item("extra", name)] = nbytes
    for name in declared.masks:
        kept[item("bit", name)] = math.ceil(booleans / 8)
    for n in range(declared.mask_temporaries):
        kept[("temp", (index, position, n))] = booleans
    for name in declared.recomputed:
        kept[("again", (index, names.get(name, name)))] = nbytes
    return kept
