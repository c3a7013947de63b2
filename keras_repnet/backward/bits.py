"""Masks kept for the backward pass as bits: eight elements a byte.

A lean rule keeps a mask of a frozen activation for the backward pass
(`y > 0` of a ReLU, `0 < y < 6` of a ReLU6, `x > 0` of the sign rule). As
a TensorFlow bool tensor that is a byte an element; `keep` stores it in
an eighth of that in the forward pass, and `where` unpacks it in the
backward pass, where the bool tensor lives only while it is read.

Example:

>>> mask = tf.constant([[True, False, True]])
>>> unpack(pack(mask), [1, 3]).numpy().tolist()
[[True, False, True]]
"""

import math

import tensorflow as tf

from keras_repnet.backward import ops

# Eight mask bytes (0 or 1) read as one little-endian uint64 `w`: byte k is
# bit 8k. `w * _GATHER` carries byte k to bit 56 + k (every other partial
# product lands below bit 56 or past bit 63), so the top byte is the packed
# byte. `p * _SPREAD & _SELECT` is the inverse: bit k of `p` alone in byte
# k. Three ops on an eighth of the elements, not eight passes.
_GATHER = 0x0102040810204080
_SPREAD = 0x0101010101010101
_SELECT = 0x8040201008040201


def pack(mask):
    """A bool tensor as a 1-D uint8 tensor of `ceil(size / 8)` bytes."""
    flat = tf.cast(tf.reshape(mask, [-1]), tf.uint8)
    elements = mask.shape.num_elements()
    if elements is None or elements % 8:
        flat = tf.pad(flat, [[0, (-tf.size(flat)) % 8]])
    words = tf.bitcast(tf.reshape(flat, [-1, 8]), tf.uint64)
    gathered = words * tf.constant(_GATHER, tf.uint64)
    return tf.cast(
        tf.bitwise.right_shift(gathered, tf.constant(56, tf.uint64)), tf.uint8
    )


def unpack(packed, shape):
    """The bool tensor of `shape` (a list, or a 1-D int tensor) that `pack`
    stored in `packed`."""
    spread = tf.cast(packed, tf.uint64) * tf.constant(_SPREAD, tf.uint64)
    selected = tf.bitwise.bitwise_and(spread, tf.constant(_SELECT, tf.uint64))
    flat = tf.reshape(tf.bitcast(selected, tf.uint8) > 0, [-1])
    static = not tf.is_tensor(shape) and None not in shape
    if static and not math.prod(shape) % 8:
        return tf.reshape(flat, shape)  # No padding to cut.
    return tf.reshape(flat[: tf.reduce_prod(shape)], shape)


def keep(x, mask_of):
    """In the forward pass: the bits of the bool tensor `mask_of(x)`,
    computed before `x`'s other consumers run (`ops.forward`), and the
    shape to unpack them to. Pass the result to `where`."""
    packed = ops.forward(x, lambda x: pack(mask_of(x)))
    shape = x.shape.as_list() if x.shape.is_fully_defined() else ops.shape(x)
    return packed, shape


def where(kept, grad):
    """In the backward pass: `grad` where the mask that `keep` kept holds,
    else 0."""
    packed, shape = kept
    with tf.control_dependencies([grad]):  # Not unpacked before `grad`.
        packed = tf.identity(packed)
    return tf.where(unpack(packed, shape), grad, tf.zeros((), grad.dtype))
