"""How gradients pass through a frozen backbone: one set of rewrites, two uses.

TensorFlow builds a backward pass by looking up, for every op on the path,
the gradient function of its type in
`tensorflow.python.framework.ops._gradient_registry` (`tf.GradientTape`, in
`backprop._gradient_function`, and graph-mode `tf.gradients` both look up
when the backward pass is constructed). `override()` swaps some of those
functions while a `with` block runs:

- Lean rules, for a memory-lean Keras training step (224x224, batch 8, with
  `RepNetModel`'s side-module recomputation: step peak MobileNetV2
  207 -> 97 MB, MobileNetV3Small 112 -> 45 MB):
  - `Relu`, `Relu6` (also inside hard-swish): `tf.where(mask, grad, 0)` on a
    bool mask of the output instead of `ReluGrad(grad, output)`, which keeps
    the float output of every frozen ReLU alive. Never a float mask: a cast
    does not depend on `grad`, so it runs in the forward pass and the float
    copy is kept after all. The mask is computed before the output's
    forward consumers run (control edges, `_forward`): as a side branch the
    executor may postpone it to the backward pass, keeping the float alive
    (with one inter-op thread it always does: 181 MB instead of 97).
  - `DepthwiseConv2dNative` after a zero `Pad` and `Pad`: the input gradient
    of the unpadded tensor in one op, not the padded gradient and its slice
    (two 39 MB tensors at MobileNetV2's step peak: 113 -> 97 MB).
  - `Mul` in hard-swish, `x * relu6(x + 3) / 6`: the gradient from `x`
    alone, with the gate recomputed in the backward pass, instead of keeping
    the float gate and its ReLU6 mask (MobileNetV3Small: 67 -> 45 MB).
- Builtin rules (`builtins_only=True`) for on-device training: gradients of
  `Conv2D`, `DepthwiseConv2dNative`, `AvgPool` and `ResizeBilinear` written
  with TFLite builtin ops, so that a traced training step converts with
  `TFLITE_BUILTINS` only (phones have no Flex delegate). Cases a rule does
  not cover fall back to TensorFlow's function.

`recompute()` is the third piece: a layer whose backward pass runs its
forward again (the Rep-Net side modules; their rules still apply inside).

Every rule gives TensorFlow's gradient (`tests/test_gradients.py`: lean
rules bit-exact, builtin rules within 1e-5). `counts()` says how often each
rule ran, so that a caller can prove an override took effect.

Example:

>>> with keras_repnet.gradients.override():
...     with tf.GradientTape() as tape:
...         loss = loss_fn(y, model(x, training=True))
...     grads = tape.gradient(loss, model.trainable_variables)
"""

import collections
import contextlib
import threading

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

_REGISTRY = tf_ops._gradient_registry._registry  # op type -> entry dict
_TYPE_TAG = "type"  # The key of the function in a registry entry.

_lock = threading.RLock()
_active = collections.Counter()  # op type -> entries of `override` open
_originals = {}  # op type -> TensorFlow's registry entry, while overridden
_calls = collections.Counter()  # op type -> times a rule built a gradient


# === Lean rules ===


def _relu_grad(op, grad):
    """`ReluGrad` without the float output: a bool mask, selected."""
    mask = _forward(op.outputs[0], lambda y: y > 0)
    return _select(mask, grad)


def _relu6_grad(op, grad):
    """`Relu6Grad` (also hard-swish's) from a bool mask of `0 < y < 6`."""
    mask = _forward(
        op.outputs[0], lambda y: tf.logical_and(y > 0, y < 6)
    )
    return _select(mask, grad)


def _select(mask, grad):
    # `tf.where` reads the bool mask directly; multiplying by a float copy of
    # it would keep a float tensor per ReLU alive (see the module docstring).
    return tf.where(mask, grad, tf.zeros((), grad.dtype))


def _forward(x, fn):
    """`fn(x)`, a small summary of the forward tensor `x` that the backward
    pass keeps instead of `x`, computed before `x`'s forward consumers run.

    The summary does not depend on the incoming gradient, so it is part of
    the forward pass, but as a side branch that nothing waits for the
    executor may postpone it (always, with one inter-op thread), keeping the
    float `x` alive until the backward pass. Control edges from the summary
    to `x`'s other consumers make them wait for it instead.
    """
    summary = fn(x)
    if tf.executing_eagerly() or summary.graph is not x.graph:
        return summary
    new_ops = _ops_between(x, summary)
    for consumer in x.consumers():
        if consumer not in new_ops:
            consumer._add_control_input(summary.op)
    return summary


def _ops_between(x, summary):
    """The ops on paths from `x` to `summary` (those `fn` created)."""
    found, stack = set(), [summary.op]
    while stack:
        op = stack.pop()
        if op in found or op is x.op:
            continue
        found.add(op)
        stack.extend(t.op for t in op.inputs)
    return found


def _shape(x):
    """The shape of `x`, as a constant when static: reading it from `x`
    would keep `x` alive for the backward pass (see `_forward`)."""
    if x.shape.is_fully_defined():
        return tf.constant(x.shape.as_list(), tf.int32)
    return _forward(x, tf.shape)


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


def _lean_depthwise_grad(op, grad):
    """DepthwiseConv2dNative after a zero `Pad` (MobileNet's stride-2
    blocks): the input gradient of the unpadded tensor in one op (EXPLICIT
    padding) instead of the padded one and a slice of it, which are both
    alive at the step's peak (see `_lean_pad_grad`). Shapes are constants,
    not read from the forward tensors."""
    x, kernel = op.inputs
    attrs = {
        name: _attr(op, name)
        for name in (
            "dilations", "strides", "padding", "explicit_paddings",
            "data_format",
        )
    }
    filter_grad = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
        input=x, filter_sizes=_shape(kernel), out_backprop=grad, **attrs
    )
    paddings = _spatial_zero_padding(x, attrs)
    if paddings is None:
        input_grad = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
            input_sizes=_shape(x), filter=kernel, out_backprop=grad, **attrs
        )
        return input_grad, filter_grad
    unpadded = x.op.inputs[0]
    attrs.update(
        padding="EXPLICIT", explicit_paddings=paddings.reshape(-1).tolist()
    )
    input_grad = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
        input_sizes=_shape(unpadded), filter=kernel, out_backprop=grad, **attrs
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
        or attrs["padding"] not in (b"VALID", "VALID")
        or attrs["data_format"] not in (b"NHWC", "NHWC")
        or not x.op.inputs[0].shape.is_fully_defined()
    ):
        return None
    paddings = tf.get_static_value(x.op.inputs[1])
    if paddings is None or paddings[0].any() or paddings[3].any():
        return None
    return np.asarray(paddings)


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


# === Builtin rules ===


def _conv2d_grad(op, grad):
    """Conv2D: TRANSPOSE_CONV for the input, one CONV_2D for the filter.

    The filter gradient is a convolution of the input with the output
    gradient where the batch plays the role of the channels and the stride
    becomes a dilation ("swap"); 1x1 stride-1 kernels use a matmul.
    """
    x, kernel = op.inputs
    strides, dilations = _attr(op, "strides"), _attr(op, "dilations")
    padding = _padding_name(op)
    groups = x.shape[-1] // kernel.shape[2] if x.shape[-1] else None
    if (
        _attr(op, "data_format") != b"NHWC"
        or padding not in ("SAME", "VALID")
        or list(dilations) != [1, 1, 1, 1]
        or groups != 1
        or None in x.shape[1:]
    ):
        return None  # Not covered: TensorFlow's function.
    input_grad = tf.nn.conv2d_transpose(
        grad, kernel, _shape(x), strides, padding=padding
    )
    return input_grad, conv2d_filter_grad(
        x, grad, kernel.shape, strides[1:3], padding
    )


def conv2d_filter_grad(x, grad, kernel_shape, strides, padding):
    """Gradient of a NHWC `Conv2D` w.r.t. its filter, with builtin ops.

    Args:
        x: the convolution's input, `[N, H, W, Cin]` with static H, W.
        grad: the gradient of its output, `[N, OH, OW, Cout]`.
        kernel_shape: `(KH, KW, Cin, Cout)`.
        strides: `(SH, SW)`.
        padding: `"SAME"` or `"VALID"`.

    Returns:
        The filter gradient, `[KH, KW, Cin, Cout]`.
    """
    kh, kw, cin, cout = kernel_shape
    if (kh, kw, *strides) == (1, 1, 1, 1):
        dw = tf.matmul(
            tf.reshape(x, [-1, cin]), tf.reshape(grad, [-1, cout]),
            transpose_a=True,
        )
        return tf.reshape(dw, kernel_shape)
    x = _pad_for_windows(x, grad.shape[1:3], (kh, kw), strides, padding)
    dw = tf.nn.conv2d(
        tf.transpose(x, [3, 1, 2, 0]),  # [Cin, H, W, N]: batch <-> channels
        tf.transpose(grad, [1, 2, 0, 3]),  # [OH, OW, N, Cout] as a filter
        strides=1,
        padding="VALID",
        dilations=list(strides),
    )  # [Cin, KH, KW, Cout]
    return tf.transpose(dw, [1, 2, 0, 3])


def _depthwise_grad(op, grad):
    """DepthwiseConv2dNative: zero insertion and a depthwise conv for the
    input, strided slices times the gradient for the filter."""
    x, kernel = op.inputs
    strides, dilations = _attr(op, "strides"), _attr(op, "dilations")
    padding = _padding_name(op)
    if (
        _attr(op, "data_format") != b"NHWC"
        or padding not in ("SAME", "VALID")
        or list(dilations) != [1, 1, 1, 1]
        or strides[1] != strides[2]
        or None in x.shape[1:]
    ):
        return None  # Not covered: TensorFlow's function.
    stride = strides[1]
    return (
        depthwise_input_grad(grad, kernel, x.shape[1:3], stride, padding),
        depthwise_filter_grad(x, grad, kernel.shape, stride, padding),
    )


def depthwise_input_grad(grad, kernel, input_size, stride, padding):
    """Gradient of a NHWC depthwise convolution w.r.t. its input.

    The gradient is the "full" correlation of the output gradient, with
    `stride - 1` zeros inserted between its pixels, and the flipped kernel:
    zero insertion (pad + reshape), one pad, one stride-1 depthwise conv.

    Args:
        grad: the output gradient, `[N, OH, OW, C * M]`.
        kernel: the depthwise kernel, `[KH, KW, C, M]`.
        input_size: `(H, W)` of the convolution's input.
        stride: int. Same stride along both axes.
        padding: `"SAME"` or `"VALID"`.

    Returns:
        The input gradient, `[N, H, W, C]`.
    """
    kh, kw, channels, multiplier = kernel.shape
    out_size = grad.shape[1:3]
    pads = [
        _same_or_valid_pads(n, o, k, stride, padding)[0]
        for n, o, k in zip(input_size, out_size, (kh, kw))
    ]
    if stride > 1:
        grad = _insert_zeros(grad, stride)
    # Rows [i - (k - 1 - pad)] of the dilated gradient feed input row i.
    edges = []
    for axis, (n, k, pad) in enumerate(zip(input_size, (kh, kw), pads), 1):
        before = k - 1 - pad
        after = n + k - 1 - before - grad.shape[axis]
        grad = _crop(grad, axis, -min(before, 0), -min(after, 0))
        edges.append([max(before, 0), max(after, 0)])
    grad = tf.pad(grad, [[0, 0], *edges, [0, 0]])
    flipped = tf.reverse(kernel, [0, 1])
    flipped = tf.reshape(flipped, [kh, kw, channels * multiplier, 1])
    dx = tf.nn.depthwise_conv2d(grad, flipped, [1, 1, 1, 1], "VALID")
    if multiplier > 1:
        dx = tf.reduce_sum(
            tf.reshape(dx, [-1, *input_size, channels, multiplier]), -1
        )
    return dx


def depthwise_filter_grad(x, grad, kernel_shape, stride, padding):
    """Gradient of a NHWC depthwise convolution w.r.t. its filter: for every
    kernel tap, the strided slice of the input it saw times the gradient.

    Args:
        x: the convolution's input, `[N, H, W, C]`.
        grad: the output gradient, `[N, OH, OW, C * M]`.
        kernel_shape: `(KH, KW, C, M)`.
        stride: int. Same stride along both axes.
        padding: `"SAME"` or `"VALID"`.

    Returns:
        The filter gradient, `[KH, KW, C, M]`.
    """
    kh, kw, channels, multiplier = kernel_shape
    out_h, out_w = grad.shape[1:3]
    x = _pad_for_windows(x, (out_h, out_w), (kh, kw), (stride, stride), padding)
    grad = tf.reshape(grad, [-1, out_h, out_w, channels, multiplier])
    taps = []
    for i in range(kh):
        for j in range(kw):
            window = x[
                :,
                i : i + (out_h - 1) * stride + 1 : stride,
                j : j + (out_w - 1) * stride + 1 : stride,
                :,
            ]
            taps.append(tf.reduce_sum(window[..., None] * grad, [0, 1, 2]))
    return tf.reshape(tf.stack(taps), kernel_shape)


def _avg_pool_grad(op, grad):
    """AvgPool: the depthwise input gradient with a kernel of ones, after
    dividing by how many input pixels each window averaged."""
    (x,) = op.inputs
    ksize, strides = _attr(op, "ksize"), _attr(op, "strides")
    padding = _padding_name(op)
    if (
        _attr(op, "data_format") != b"NHWC"
        or strides[1] != strides[2]
        or None in x.shape[1:]
    ):
        return None  # Not covered: TensorFlow's function.
    size, window = x.shape[1:3], ksize[1:3]
    counts = np.outer(
        *[
            _window_counts(n, o, k, strides[1], padding)
            for n, o, k in zip(size, grad.shape[1:3], window)
        ]
    )
    ones = tf.ones([*window, x.shape[-1], 1], grad.dtype)
    grad = grad / tf.constant(counts[None, :, :, None], grad.dtype)
    return depthwise_input_grad(grad, ones, size, strides[1], padding)


def _resize_bilinear_grad(op, grad):
    """ResizeBilinear: the resize is `A_h @ x @ A_w^T` for fixed matrices,
    so its gradient is `A_h^T @ grad @ A_w`, two matmuls."""
    x = op.inputs[0]
    if None in x.shape[1:] or _attr(op, "align_corners"):
        return None  # Not covered: TensorFlow's function.
    half = _attr(op, "half_pixel_centers")
    rows = _interpolation_matrix(x.shape[1], grad.shape[1], half)
    cols = _interpolation_matrix(x.shape[2], grad.shape[2], half)
    rows = tf.constant(rows.T, grad.dtype)  # [H, OH]
    cols = tf.constant(cols, grad.dtype)  # [OW, W]
    # [N, OH, OW, C] -> [N, C, OH, OW] -> rows^T and cols applied.
    g = tf.transpose(grad, [0, 3, 1, 2])
    g = tf.matmul(tf.matmul(rows, g), cols)  # [N, C, H, W]
    return tf.transpose(tf.cast(g, x.dtype), [0, 2, 3, 1]), None


# === Helpers of the builtin rules ===


_ATTR_DEFAULTS = {
    "data_format": b"NHWC",
    "dilations": [1, 1, 1, 1],
    "explicit_paddings": [],
    "align_corners": False,
    "half_pixel_centers": False,
}


def _attr(op, name):
    """An attribute of `op`; its default where the eager tape's stand-in
    op left it out (it reports None)."""
    value = op.get_attr(name)
    if value is None:
        return _ATTR_DEFAULTS.get(name)
    if name == "data_format" and isinstance(value, str):
        return value.encode()
    return value


def _padding_name(op):
    padding = _attr(op, "padding")
    return padding.decode() if isinstance(padding, bytes) else padding


def _same_or_valid_pads(size, out_size, kernel, stride, padding):
    """(before, after) padding TensorFlow uses along one axis."""
    if padding == "VALID":
        return 0, 0
    total = max((out_size - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_for_windows(x, out_size, kernel, strides, padding):
    """Pads (SAME) and crops `x` to exactly the rows and columns its
    convolution windows read."""
    edges = []
    sizes = zip(x.shape[1:3], out_size, kernel, strides)
    for axis, (n, o, k, s) in enumerate(sizes, 1):
        before, _ = _same_or_valid_pads(n, o, k, s, padding)
        after = (o - 1) * s + k - before - n
        x = _crop(x, axis, 0, -min(after, 0))
        edges.append([before, max(after, 0)])
    if any(sum(e) for e in edges):
        x = tf.pad(x, [[0, 0], *edges, [0, 0]])
    return x


def _crop(x, axis, before, after):
    if not before and not after:
        return x
    begin = [0] * 4
    begin[axis] = before
    size = [-1] * 4
    size[axis] = x.shape[axis] - before - after
    return tf.slice(x, begin, size)


def _insert_zeros(x, stride):
    """`[N, H, W, C]` -> `[N, (H-1)*s+1, (W-1)*s+1, C]` with `x` at every
    s-th pixel; 4-D pads and reshapes only (TFLite's PAD limit)."""
    _, height, width, channels = x.shape
    x = tf.reshape(x, [-1, 1, width, channels])  # one row at a time
    x = tf.pad(x, [[0, 0], [0, stride - 1], [0, 0], [0, 0]])
    x = tf.reshape(x, [-1, height * stride, width, channels])
    x = x[:, : (height - 1) * stride + 1]
    rows = x.shape[1]
    x = tf.reshape(x, [-1, 1, 1, channels])  # one pixel at a time
    x = tf.pad(x, [[0, 0], [0, 0], [0, stride - 1], [0, 0]])
    x = tf.reshape(x, [-1, rows, width * stride, channels])
    return x[:, :, : (width - 1) * stride + 1]


def _window_counts(size, out_size, kernel, stride, padding):
    """How many real (unpadded) pixels each pooling window covers."""
    before, _ = _same_or_valid_pads(size, out_size, kernel, stride, padding)
    starts = np.arange(out_size) * stride - before
    return np.minimum(starts + kernel, size) - np.maximum(starts, 0)


def _interpolation_matrix(size, out_size, half_pixel_centers):
    """The `[out_size, size]` matrix of TensorFlow's bilinear resize."""
    scale = size / out_size
    out = np.arange(out_size, dtype=np.float64)
    if half_pixel_centers:
        source = (out + 0.5) * scale - 0.5
    else:
        source = out * scale
    low = np.floor(source)
    frac = source - low
    low_index = np.clip(low, 0, size - 1).astype(int)
    high_index = np.clip(low + 1, 0, size - 1).astype(int)
    matrix = np.zeros((out_size, size))
    np.add.at(matrix, (np.arange(out_size), low_index), 1 - frac)
    np.add.at(matrix, (np.arange(out_size), high_index), frac)
    return matrix


# === Registry swapping ===

LEAN_RULES = {
    "Mul": _lean_mul_grad,
    "Relu": _relu_grad,
    "Relu6": _relu6_grad,
    "DepthwiseConv2dNative": _lean_depthwise_grad,
    "Pad": _lean_pad_grad,
}
BUILTIN_RULES = {
    **LEAN_RULES,
    "Conv2D": _conv2d_grad,
    "DepthwiseConv2dNative": _depthwise_grad,
    "AvgPool": _avg_pool_grad,
    "ResizeBilinear": _resize_bilinear_grad,
}
_builtin_entries = 0  # open `override(builtins_only=True)` entries


def _dispatcher(op_type):
    """The function installed for `op_type`: the builtin rule while any
    builtins-only entry is open, else the lean rule."""

    def gradient(op, *grads):
        with _lock:
            rules = BUILTIN_RULES if _builtin_entries else LEAN_RULES
        rule = rules.get(op_type)
        result = None if rule is None else rule(op, *grads)
        if result is None:  # The rule does not cover this op.
            return _original(op_type)(op, *grads)
        with _lock:
            _calls[op_type] += 1
        return result

    gradient.__name__ = f"keras_repnet_{op_type}_grad"
    return gradient


_DISPATCHERS = {op_type: _dispatcher(op_type) for op_type in BUILTIN_RULES}


def _original(op_type):
    """TensorFlow's gradient function for `op_type`, overridden or not."""
    with _lock:
        entry = _originals.get(op_type) or _REGISTRY[op_type]
    return entry[_TYPE_TAG]


@contextlib.contextmanager
def override(builtins_only: bool = False):
    """Replaces TensorFlow's gradient functions while the block runs.

    Only gradients *constructed* inside the block are affected (a
    `tf.function` traced inside it keeps them; one traced before does not).
    Entries may nest and overlap across threads (e.g. the replicas of
    `tf.distribute.MirroredStrategy`): each op type is swapped at its first
    entry and TensorFlow's function restored at its last exit. While any
    entry is open the replacements apply process-wide (the builtin rules
    while any builtins-only entry is open), which is harmless as all rules
    compute the same gradients.

    Args:
        builtins_only: bool. Also replace the gradients whose TensorFlow ops
            are not TFLite builtins (for on-device training export).
            Defaults to `False`: only the memory-lean rules.

    Yields:
        The op types overridden by this entry.
    """
    global _builtin_entries
    op_types = list(BUILTIN_RULES if builtins_only else LEAN_RULES)
    with _lock:
        for op_type in op_types:
            if not _active[op_type]:
                _originals[op_type] = _REGISTRY[op_type]
                _REGISTRY[op_type] = {
                    **_REGISTRY[op_type],
                    _TYPE_TAG: _DISPATCHERS[op_type],
                }
            _active[op_type] += 1
        _builtin_entries += builtins_only
    try:
        yield tuple(op_types)
    finally:
        with _lock:
            _builtin_entries -= builtins_only
            for op_type in op_types:
                _active[op_type] -= 1
                if not _active[op_type]:
                    del _active[op_type]
                    _REGISTRY[op_type] = _originals.pop(op_type)


def counts() -> dict:
    """How many gradients each rule has built since `reset_counts()`.

    Returns:
        A dict from op type (e.g. `"Relu6"`) to a count. A rule runs once per
        op when a backward pass is constructed (once per trace in a
        `tf.function`, once per op per step in eager mode).
    """
    with _lock:
        return dict(_calls)


def reset_counts():
    """Sets every count of `counts()` back to zero."""
    with _lock:
        _calls.clear()


def is_active(op_type: str = "Relu") -> bool:
    """Whether `op_type`'s gradient is currently overridden."""
    with _lock:
        return bool(_active[op_type])


def recompute(fn):
    """Wraps `fn(x) -> y` so that its backward pass recomputes `fn`.

    The forward pass keeps only `x`; the backward pass runs `fn(x)` again,
    once the gradient of `y` is available, and differentiates it. Variable
    updates during the recomputation (batch norm moving statistics) are
    discarded: they already happened in the forward pass. For cheap layers
    with large activations, such as the side modules of a Rep-Net at high
    resolution.

    Args:
        fn: callable. A function of one tensor (and constant arguments), e.g.
            a Keras layer; deterministic (no dropout).

    Returns:
        A callable with the same values and gradients as `fn`.
    """

    def wrapped(x, *args, **kwargs):
        # Further arguments (e.g. `training`) are constants of the call.
        @tf.custom_gradient
        def forward(x):
            def backward(dy, variables=None):
                variables = list(variables or ())
                with tf.control_dependencies([dy]):
                    again = tf.identity(x)  # Not before `dy` exists.
                with tf.GradientTape() as tape:
                    tape.watch(again)
                    with keras.StatelessScope():
                        y_again = fn(again, *args, **kwargs)
                dx, dvars = tape.gradient(
                    y_again, (again, variables), output_gradients=dy
                )
                return dx, dvars

            return fn(x, *args, **kwargs), backward

        return forward(x)

    return wrapped
