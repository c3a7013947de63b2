"""The builtin rules: gradients written with TFLite builtin ops only.

`override(builtins_only=True)` installs them (over the lean rules) so that a
traced training step converts with `TFLITE_BUILTINS` alone: phones have no
Flex delegate. Cases a rule does not cover fall back to TensorFlow's
function.
"""

import contextlib
import contextvars

import numpy as np
import tensorflow as tf

from keras_repnet.backward import lean
from keras_repnet.backward import ops
from keras_repnet.backward import windows


# Whether the input gradient of a 1x1 convolution reads its kernel in the
# forward layout (`conv1x1_input_grad`), so that a converter stores it once.
_SHARED_KERNELS = contextvars.ContextVar("shared_kernels", default=True)


@contextlib.contextmanager
def kernel_copies():
    """Within the block, 1x1 input gradients are TensorFlow's
    `conv2d_transpose` (LiteRT `TRANSPOSE_CONV`, with its own transposed
    copy of each kernel), as before weight sharing."""
    token = _SHARED_KERNELS.set(False)
    try:
        yield
    finally:
        _SHARED_KERNELS.reset(token)


def _conv2d_grad(op, grad):
    """Conv2D: TRANSPOSE_CONV for the input, one CONV_2D for the filter.

    The filter gradient is a convolution of the input with the output
    gradient where the batch plays the role of the channels and the stride
    becomes a dilation ("swap"). 1x1 stride-1 kernels use matmuls for both
    (see `conv1x1_input_grad`).
    """
    x, kernel = op.inputs
    strides, dilations = ops.attr(op, "strides"), ops.attr(op, "dilations")
    padding = ops.padding_name(op)
    groups = x.shape[-1] // kernel.shape[2] if x.shape[-1] else None
    if (
        ops.attr(op, "data_format") != b"NHWC"
        or padding not in ("SAME", "VALID")
        or list(dilations) != [1, 1, 1, 1]
        or groups != 1
        or None in x.shape[1:]
    ):
        return None  # Not covered: TensorFlow's function.
    if (
        _SHARED_KERNELS.get()
        and tuple(kernel.shape[:2]) == (1, 1)
        and list(strides) == [1, 1, 1, 1]
    ):
        input_grad = conv1x1_input_grad(grad, kernel, ops.shape(x))
    else:
        input_grad = tf.nn.conv2d_transpose(
            grad, kernel, ops.shape(x), strides, padding=padding
        )
    return input_grad, conv2d_filter_grad(
        x, grad, kernel.shape, strides[1:3], padding
    )


def conv1x1_input_grad(grad, kernel, input_shape):
    """Gradient of a 1x1 stride-1 `Conv2D` w.r.t. its input, reading the
    kernel in the layout of the forward `CONV_2D`.

    LiteRT stores a convolution's filter as `[Cout, KH, KW, Cin]`; a
    `TRANSPOSE_CONV` (TensorFlow's input gradient) wants
    `[Cin, KH, KW, Cout]`, so a frozen kernel would be stored twice. A
    batched matmul by the `[Cout, Cin]` kernel holds the same bytes as the
    forward filter, and the converter stores identical constants once. (A
    2-D matmul would become `FULLY_CONNECTED`, whose weights are
    `[Cin, Cout]` again.)

    Args:
        grad: the output gradient, `[N, H, W, Cout]`.
        kernel: the kernel, `[1, 1, Cin, Cout]`.
        input_shape: the convolution's input shape, `[N, H, W, Cin]`.

    Returns:
        The input gradient, `[N, H, W, Cin]`.
    """
    cin, cout = kernel.shape[2:]
    forward_layout = tf.transpose(tf.reshape(kernel, [cin, cout]))  # [Cout, Cin]
    rows = tf.reshape(grad, [1, -1, cout])
    return tf.reshape(tf.matmul(rows, forward_layout[None]), input_shape)


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
    x = windows.pad_for_windows(x, grad.shape[1:3], (kh, kw), strides, padding)
    dw = tf.nn.conv2d(
        tf.transpose(x, [3, 1, 2, 0]),  # [Cin, H, W, N]: batch <-> channels
        tf.transpose(grad, [1, 2, 0, 3]),  # [OH, OW, N, Cout] as a filter
        strides=1,
        padding="VALID",
        dilations=list(strides),
    )  # [Cin, KH, KW, Cout]
    return tf.transpose(dw, [1, 2, 0, 3])


def _depthwise_grad(op, grad):
    """DepthwiseConv2dNative: one stride-1 depthwise conv over the output
    gradient for the input (`depthwise_input_grad`), strided slices times
    the gradient for the filter.

    After a zero `Pad` of height and width (MobileNet's stride-2 blocks)
    the input gradient is that of the unpadded tensor, cropped as it is
    computed, not the padded one and a slice of it (as the lean rule,
    `lean._lean_pad_grad` returns it through the `Pad`)."""
    x, kernel = op.inputs
    strides, dilations = ops.attr(op, "strides"), ops.attr(op, "dilations")
    padding = ops.padding_name(op)
    if (
        ops.attr(op, "data_format") != b"NHWC"
        or padding not in ("SAME", "VALID")
        or list(dilations) != [1, 1, 1, 1]
        or strides[1] != strides[2]
        or None in x.shape[1:]
    ):
        return None  # Not covered: TensorFlow's function.
    stride = strides[1]
    filter_grad = depthwise_filter_grad(x, grad, kernel.shape, stride, padding)
    paddings = lean._spatial_zero_padding(
        x, {"padding": padding.encode(), "data_format": b"NHWC"}
    )
    if paddings is None:
        input_grad = depthwise_input_grad(
            grad, kernel, x.shape[1:3], stride, padding
        )
        return input_grad, filter_grad
    unpadded = x.op.inputs[0]
    input_grad = depthwise_input_grad(
        grad, kernel, unpadded.shape[1:3], stride, padding,
        explicit_paddings=paddings[1:3].tolist(),
    )
    # The Pad's rule recognises this pad and returns `input_grad`; the pad
    # itself is then unused and pruned.
    return tf.pad(input_grad, paddings), filter_grad


def depthwise_input_grad(
    grad, kernel, input_size, stride, padding, explicit_paddings=None
):
    """Gradient of a NHWC depthwise convolution w.r.t. its input.

    The input gradient is the "full" correlation of the output gradient with
    the flipped kernel, the gradient's pixels `stride` apart. Output row
    `stride * m + a` of phase `a` only meets the kernel rows `r_a`,
    `r_a + stride`, ...: each of the `stride**2` phases is a stride-1
    correlation of the gradient itself with a sub-kernel (polyphase). The
    sub-kernels, aligned in one window, run as stride-1 depthwise convs at
    the gradient's resolution and a `DEPTH_TO_SPACE` interleaves them: for
    stride 2 and a 3x3 kernel, one pad of the gradient, four 2x2 depthwise
    convs, a concatenation and the interleave, where inserting zeros cost
    seven passes over tensors up to four times the gradient and a 3x3 conv
    at the input's resolution. Stride 1 is one phase: a pad and the flipped
    kernel.

    Args:
        grad: the output gradient, `[N, OH, OW, C * M]`.
        kernel: the depthwise kernel, `[KH, KW, C, M]`.
        input_size: `(H, W)` of the convolution's input, before
            `explicit_paddings`.
        stride: int. Same stride along both axes.
        padding: `"SAME"` or `"VALID"`.
        explicit_paddings: `[[top, bottom], [left, right]]` zeros padded to
            the input before the convolution (a `Pad` op). Defaults to none.

    Returns:
        The input gradient, `[N, H, W, C]` (of the unpadded input).
    """
    kh, kw, channels, multiplier = kernel.shape
    explicit_paddings = explicit_paddings or [[0, 0], [0, 0]]
    axes = []
    for n, o, k, (before, after) in zip(
        input_size, grad.shape[1:3], (kh, kw), explicit_paddings
    ):
        pad = windows.same_or_valid_pads(n + before + after, o, k, stride, padding)[0]
        axes.append(windows.phases(n, o, k, stride, before + pad))
    # The gradient, shifted and padded to the phases' common window.
    edges = [[0, 0]] * 4
    for axis, phases in enumerate(axes, 1):
        shift, length = phases["shift"], phases["length"]
        before = max(-shift, 0)
        grad = windows.crop(grad, axis, max(shift, 0), 0)
        after = length - before - grad.shape[axis]
        grad = windows.crop(grad, axis, 0, max(-after, 0))
        edges[axis] = [before, max(after, 0)]
    if any(sum(edge) for edge in edges):
        grad = tf.pad(grad, edges)
    # Window (i, j) of phase (a, b) holds kernel tap `index`, or zero.
    rows, cols = (phases["taps"] for phases in axes)
    zero = kh * kw
    index = np.full([len(rows), len(cols), stride, stride], zero)
    for i, row_taps in enumerate(rows):
        for j, col_taps in enumerate(cols):
            for a, ki in enumerate(row_taps):
                for b, kj in enumerate(col_taps):
                    if ki is not None and kj is not None:
                        index[i, j, a, b] = ki * kw + kj
    taps = tf.reshape(kernel, [kh * kw, channels * multiplier])
    taps = tf.concat([taps, tf.zeros_like(taps[:1])], 0)
    window = tf.gather(taps, index.reshape(len(rows), len(cols), -1))
    window = tf.transpose(window, [0, 1, 3, 2])  # [WH, WW, C*M, phases]
    # One depthwise conv per phase (XNNPACK's multiplier-1 kernels are
    # several times faster than one conv with multiplier `stride**2`), the
    # phases side by side in the channels, `DEPTH_TO_SPACE` interleaves them.
    outputs = [
        tf.nn.depthwise_conv2d(grad, window[..., p : p + 1], [1, 1, 1, 1], "VALID")
        for p in range(stride * stride)
    ]
    dx = outputs[0]
    if stride > 1:  # [N, MH, MW, s*s * C*M] -> [N, MH*s, MW*s, C*M]
        dx = tf.nn.depth_to_space(tf.concat(outputs, -1), stride)
        dx = windows.crop(dx, 1, 0, dx.shape[1] - input_size[0])
        dx = windows.crop(dx, 2, 0, dx.shape[2] - input_size[1])
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
    x = windows.pad_for_windows(x, (out_h, out_w), (kh, kw), (stride, stride), padding)
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


# The name of the casts that hold integer floats in int8 (forward: a ReLU
# or sign-rule mask, a squeeze-excite gate's rounded feature) and read them
# back (backward): the export makes them LiteRT `QUANTIZE` and `DEQUANTIZE`
# ops, which XNNPACK runs (`keras_repnet.export.xnnpack`).
INT8_MASK = "keras_repnet_int8_mask"


def _relu_grad(op, grad):
    """Relu: `grad` times a mask of `y > 0`, kept in int8.

    `min(ceil(y), 1)` is that mask exactly for every `y >= 0`. Compared with
    a bool mask and `SELECT_V2` (TFLite has no bitwise AND to unpack the
    lean rule's bits), every op of it runs in
    XNNPACK once exported: builtin comparisons and selects are LiteRT
    reference kernels on one thread, and each one splits XNNPACK's
    partition, which turns the reshapes at its edges into copies.
    """
    mask = ops.forward(
        op.outputs[0], lambda y: to_int8(tf.minimum(tf.math.ceil(y), 1))
    )
    return masked(grad, mask)


def _relu6_grad(op, grad):
    """Relu6: `grad` times a mask of `0 < y < 6`, kept in int8.

    `min(y, 6 - y) > 0` is that mask exactly for `y` in `[0, 6]`: below 3
    the minimum is `y` itself, from 3 on `6 - y` is exact (Sterbenz); and
    `min(ceil(v), 1)` is `v > 0` for `v >= 0`. See `_relu_grad` for why not
    `(y > 0) & (y < 6)`, a bool mask and `SELECT_V2` (whose `LOGICAL_AND`
    alone, a function call per element, was a quarter of MobileNetV2's
    training step).
    """
    mask = ops.forward(
        op.outputs[0],
        lambda y: to_int8(tf.minimum(tf.math.ceil(tf.minimum(y, 6 - y)), 1)),
    )
    return masked(grad, mask)


def positive_mask(x):
    """`x > 0` as an int8 `{0, 1}` mask that the export keeps in XNNPACK:
    `min(ceil(max(x, 0)), 1)`, exact for every `x` (see `_relu_grad`), for
    the sign rule of `keras_repnet.SignGradient`; `masked` applies it."""
    return to_int8(tf.minimum(tf.math.ceil(tf.nn.relu(x)), 1))


def masked(grad, mask):
    """`grad` where an int8 `{0, 1}` mask is 1, else 0."""
    return grad * from_int8(mask, grad.dtype)


def to_int8(values):
    """Floats that are integers in [-127, 127] (a `{0, 1}` mask, or
    `round(x / scale)`) as int8, one byte each. Named `INT8_MASK`: the
    export stores them with a `QUANTIZE` of scale 1, the same bytes, which
    XNNPACK runs; `from_int8` reads them back."""
    return tf.cast(values, tf.int8, name=INT8_MASK)


def from_int8(values, dtype):
    """The floats of `to_int8`, exactly."""
    return tf.cast(values, dtype, name=INT8_MASK)


def _avg_pool_grad(op, grad):
    """AvgPool: the depthwise input gradient with a kernel of ones, after
    dividing by how many input pixels each window averaged; for windows
    that tile the input (window = stride), each pixel's share broadcast
    over its window."""
    (x,) = op.inputs
    ksize, strides = ops.attr(op, "ksize"), ops.attr(op, "strides")
    padding = ops.padding_name(op)
    if (
        ops.attr(op, "data_format") != b"NHWC"
        or strides[1] != strides[2]
        or None in x.shape[1:]
    ):
        return None  # Not covered: TensorFlow's function.
    size, window = x.shape[1:3], ksize[1:3]
    counts = np.outer(
        *[
            windows.window_counts(n, o, k, strides[1], padding)
            for n, o, k in zip(size, grad.shape[1:3], window)
        ]
    )
    grad = grad / tf.constant(counts[None, :, :, None], grad.dtype)
    if tuple(window) == (strides[1], strides[1]):
        return _tiled_pool_input_grad(grad, size, strides[1], padding)
    ones = tf.ones([*window, x.shape[-1], 1], grad.dtype)
    return depthwise_input_grad(grad, ones, size, strides[1], padding)


def _tiled_pool_input_grad(grad, size, stride, padding):
    """The input gradient of a pooling whose windows tile the input: every
    output pixel's gradient repeated over its `stride x stride` window (a
    broadcast multiply by ones, which XNNPACK runs; as `stride**2`
    depthwise phases it would be a concatenation too wide for XNNPACK)."""
    _, out_h, out_w, channels = grad.shape
    ones = tf.ones([1, 1, stride, 1, stride, 1], grad.dtype)
    grad = tf.reshape(grad, [-1, out_h, 1, out_w, 1, channels]) * ones
    grad = tf.reshape(grad, [-1, out_h * stride, out_w * stride, channels])
    # Pixel i of the input is pixel i + before of the windows.
    edges = [[0, 0]] * 4
    for axis, (n, o) in enumerate(zip(size, (out_h, out_w)), 1):
        before = windows.same_or_valid_pads(n, o, stride, stride, padding)[0]
        grad = windows.crop(grad, axis, before, max(o * stride - before - n, 0))
        edges[axis] = [0, max(n - grad.shape[axis], 0)]
    if any(sum(edge) for edge in edges):
        grad = tf.pad(grad, edges)
    return grad


def _resize_bilinear_grad(op, grad):
    """ResizeBilinear: the resize is `A_h @ x @ A_w^T` for fixed matrices,
    so its gradient is `A_h^T @ grad @ A_w`, two matmuls."""
    x = op.inputs[0]
    if None in x.shape[1:] or ops.attr(op, "align_corners"):
        return None  # Not covered: TensorFlow's function.
    half = ops.attr(op, "half_pixel_centers")
    rows = _interpolation_matrix(x.shape[1], grad.shape[1], half)
    cols = _interpolation_matrix(x.shape[2], grad.shape[2], half)
    rows = tf.constant(rows.T, grad.dtype)  # [H, OH]
    cols = tf.constant(cols, grad.dtype)  # [OW, W]
    # [N, OH, OW, C] -> [N, C, OH, OW] -> rows^T and cols applied.
    g = tf.transpose(grad, [0, 3, 1, 2])
    g = tf.matmul(tf.matmul(rows, g), cols)  # [N, C, H, W]
    return tf.transpose(tf.cast(g, x.dtype), [0, 2, 3, 1]), None


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


RULES = {
    "Conv2D": _conv2d_grad,
    "DepthwiseConv2dNative": _depthwise_grad,
    "AvgPool": _avg_pool_grad,
    "ResizeBilinear": _resize_bilinear_grad,
    "Relu": _relu_grad,
    "Relu6": _relu6_grad,
}
