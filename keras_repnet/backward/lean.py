"""The lean rules: gradients that keep less for the backward pass.

Each rule declares what it keeps (`@keeps`, see `keras_repnet.backward.keeps`):
the memory profiler counts a lean training step from these declarations.
See `keras_repnet.backward` for what each rule saves, and `docs/design.md`
for the measurements.
"""

import numpy as np
import tensorflow as tf

from keras_repnet.backward import bits
from keras_repnet.backward import ops
from keras_repnet.backward.keeps import Keeps
from keras_repnet.backward.keeps import keeps


def fuses_padding(padding, channels_last: bool) -> bool:
    """Whether the lean depthwise rule fuses a zero padding before a
    depthwise convolution of this `padding` (`"valid"`, as a Keras layer or
    a TensorFlow op says it: the padding is then all explicit) and layout
    (channels-last only)."""
    if isinstance(padding, bytes):
        padding = padding.decode()
    return padding.upper() == "VALID" and channels_last


@keeps(Keeps(masks=("output",), mask_temporaries=2))
def _relu_grad(op, grad):
    """`ReluGrad` without the float output: the bits of `y > 0`."""
    return bits.where(bits.keep(op.outputs[0], lambda y: y > 0), grad)


@keeps(Keeps(masks=("output",), mask_temporaries=3))
def _relu6_grad(op, grad):
    """`Relu6Grad` (also hard-swish's) from the bits of `0 < y < 6`."""
    mask_of = lambda y: tf.logical_and(y > 0, y < 6)  # noqa: E731
    return bits.where(bits.keep(op.outputs[0], mask_of), grad)


@keeps(Keeps(tensors=("x",), recomputed=("gate",), no_gradient=("gate",)))
def _lean_mul_grad(op, grad):
    """Mul of `x` and `relu6(x + a) / b` (hard-swish): the gradient of `x`
    through both factors, from `x` alone. TensorFlow keeps the float gate and
    a mask of its ReLU6 as well; here the gate is recomputed from `x` in the
    backward pass and the gate's own ops get no gradient."""
    for index in (0, 1):
        x, gate = op.inputs[index], op.inputs[1 - index]
        parts = _hard_sigmoid_parts(gate, x)
        if parts is not None:
            break
    else:
        return None  # Not covered: TensorFlow's function.
    shift, scale_type, scale = parts
    with tf.control_dependencies([grad]):  # Recompute in the backward pass.
        x = tf.identity(x)
    relu6 = tf.nn.relu6(x + shift)
    scaled = tf.math.divide if scale_type == "RealDiv" else tf.math.multiply
    inner = tf.where(
        tf.logical_and(relu6 > 0, relu6 < 6),
        scaled(grad * x, scale),
        tf.zeros((), grad.dtype),
    )
    grads = [None, None]
    grads[index] = grad * scaled(relu6, scale) + inner
    return grads


def _hard_sigmoid_parts(gate, x):
    """`(a, op type, b)` if `gate` is `relu6(x + a)` divided by or times a
    scalar constant `b`, else None."""
    if tf.executing_eagerly() or gate.op.type not in ("RealDiv", "Mul"):
        return None
    relu6, scale = gate.op.inputs
    if gate.op.type == "Mul" and relu6.op.type != "Relu6":
        relu6, scale = scale, relu6
    scale = tf.get_static_value(scale)
    if relu6.op.type != "Relu6" or scale is None or np.size(scale) != 1:
        return None
    add = relu6.op.inputs[0].op
    if add.type not in ("AddV2", "Add"):
        return None
    for value, shift in (add.inputs, reversed(add.inputs)):
        shift = tf.get_static_value(shift)
        if value.name == x.name and shift is not None and np.size(shift) == 1:
            return shift, gate.op.type, scale
    return None


@keeps(Keeps(fuses_padding=True))
def _lean_depthwise_grad(op, grad):
    """DepthwiseConv2dNative after a zero `Pad` (MobileNet's stride-2
    blocks): the input gradient of the unpadded tensor in one op (EXPLICIT
    padding) instead of the padded one and a slice of it, which are both
    alive at the step's peak (see `_lean_pad_grad`). Shapes are constants,
    not read from the forward tensors."""
    x, kernel = op.inputs
    attrs = {
        name: ops.attr(op, name)
        for name in (
            "dilations", "strides", "padding", "explicit_paddings",
            "data_format",
        )
    }
    filter_grad = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
        input=x, filter_sizes=ops.shape(kernel), out_backprop=grad, **attrs
    )
    paddings = _spatial_zero_padding(x, attrs)
    if paddings is None:
        input_grad = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
            input_sizes=ops.shape(x), filter=kernel, out_backprop=grad, **attrs
        )
        return input_grad, filter_grad
    unpadded = x.op.inputs[0]
    attrs.update(
        padding="EXPLICIT", explicit_paddings=paddings.reshape(-1).tolist()
    )
    input_grad = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
        input_sizes=ops.shape(unpadded), filter=kernel, out_backprop=grad, **attrs
    )
    # Pad's gradient (a slice) recognises this pad and returns `input_grad`;
    # the pad itself is then unused and pruned from the graph.
    return tf.pad(input_grad, paddings), filter_grad


def _spatial_zero_padding(x, attrs):
    """The constant `[4, 2]` paddings of `x` if `x` is a graph-mode zero
    `Pad` of height and width only feeding a VALID NHWC op, else None."""
    if (
        tf.executing_eagerly()
        or x.op.type != "Pad"
        or not fuses_padding(
            attrs["padding"], attrs["data_format"] in (b"NHWC", "NHWC")
        )
        or not x.op.inputs[0].shape.is_fully_defined()
    ):
        return None
    paddings = tf.get_static_value(x.op.inputs[1])
    if paddings is None or paddings[0].any() or paddings[3].any():
        return None
    return np.asarray(paddings)


@keeps(Keeps())
def _lean_pad_grad(op, grad):
    """Pad: if the incoming gradient is itself a zero pad by the same
    amounts (see `_lean_depthwise_grad`), its input is the answer; slicing
    the padded copy would keep both alive."""
    if tf.executing_eagerly() or grad.op.type != "Pad":
        return None  # Not covered: TensorFlow's function.
    forward = tf.get_static_value(op.inputs[1])
    backward = tf.get_static_value(grad.op.inputs[1])
    if forward is None or backward is None:
        return None
    if not np.array_equal(forward, backward):
        return None
    return grad.op.inputs[0], None


RULES = {
    "Mul": _lean_mul_grad,
    "Relu": _relu_grad,
    "Relu6": _relu6_grad,
    "DepthwiseConv2dNative": _lean_depthwise_grad,
    "Pad": _lean_pad_grad,
}
