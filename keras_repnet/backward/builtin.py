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

from keras_repnet.backward import ops


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


RULES = {
    "Conv2D": _conv2d_grad,
    "DepthwiseConv2dNative": _depthwise_grad,
    "AvgPool": _avg_pool_grad,
    "ResizeBilinear": _resize_bilinear_grad,
}
