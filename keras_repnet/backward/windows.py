"""Window geometry of NHWC convolutions and poolings, for the builtin
gradient rules (`keras_repnet.backward.builtin`): TensorFlow's SAME/VALID
padding, the rows a window reads, cropping, and the polyphase form of a
strided correlation's input gradient."""

import numpy as np
import tensorflow as tf


def phases(size, out_size, kernel, stride, pad):
    """The polyphase form of a strided correlation's input gradient along
    one axis (`pad` zeros before the input).

    Input pixel `stride * m + a` receives `grad[m + d] * w[r_a + stride * t]`
    for `d = c_a - t`, `t < T_a`. Returns `shift` (the first `d` of any
    phase), `length` (the gradient's pixels the window reads for every
    output), and `taps`: for each window position, the kernel tap each
    phase reads there (None: a zero).
    """
    phases = []
    for a in range(stride):
        r = (a + pad) % stride
        count = -(-(kernel - r) // stride) if r < kernel else 0
        phases.append((r, (a + pad - r) // stride, count))
    low = min(c - count + 1 for _, c, count in phases if count)
    high = max(c for _, c, count in phases if count)
    taps = []
    for d in range(low, high + 1):
        taps.append(
            [
                r + stride * (c - d) if count and 0 <= c - d < count else None
                for r, c, count in phases
            ]
        )
    outputs = -(-size // stride)
    return {"shift": low, "length": outputs + high - low, "taps": taps}


def same_or_valid_pads(size, out_size, kernel, stride, padding):
    """(before, after) padding TensorFlow uses along one axis."""
    if padding == "VALID":
        return 0, 0
    total = max((out_size - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_for_windows(x, out_size, kernel, strides, padding):
    """Pads (SAME) and crops `x` to exactly the rows and columns its
    convolution windows read."""
    edges = []
    sizes = zip(x.shape[1:3], out_size, kernel, strides)
    for axis, (n, o, k, s) in enumerate(sizes, 1):
        before, _ = same_or_valid_pads(n, o, k, s, padding)
        after = (o - 1) * s + k - before - n
        x = crop(x, axis, 0, -min(after, 0))
        edges.append([before, max(after, 0)])
    if any(sum(e) for e in edges):
        x = tf.pad(x, [[0, 0], *edges, [0, 0]])
    return x


def crop(x, axis, before, after):
    """`x` without `before` and `after` pixels along `axis` (NHWC)."""
    if not before and not after:
        return x
    begin = [0] * 4
    begin[axis] = before
    size = [-1] * 4
    size[axis] = x.shape[axis] - before - after
    return tf.slice(x, begin, size)


def window_counts(size, out_size, kernel, stride, padding):
    """How many real (unpadded) pixels each pooling window covers."""
    before, _ = same_or_valid_pads(size, out_size, kernel, stride, padding)
    starts = np.arange(out_size) * stride - before
    return np.minimum(starts + kernel, size) - np.maximum(starts, 0)
