"""Reading TensorFlow ops from inside gradient functions: attributes,
static shapes, and forward summaries computed early."""

import tensorflow as tf

from keras_repnet import compat

_ATTR_DEFAULTS = {
    "data_format": b"NHWC",
    "dilations": [1, 1, 1, 1],
    "explicit_paddings": [],
    "align_corners": False,
    "half_pixel_centers": False,
}


def attr(op, name):
    """An attribute of `op`; its default where the eager tape's stand-in
    op left it out (it reports None)."""
    value = op.get_attr(name)
    if value is None:
        return _ATTR_DEFAULTS.get(name)
    if name == "data_format" and isinstance(value, str):
        return value.encode()
    return value


def padding_name(op):
    padding = attr(op, "padding")
    return padding.decode() if isinstance(padding, bytes) else padding


def forward(x, fn):
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
            compat.add_control_input(consumer, summary.op)
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


def shape(x):
    """The shape of `x`, as a constant when static: reading it from `x`
    would keep `x` alive for the backward pass (see `forward`)."""
    if x.shape.is_fully_defined():
        return tf.constant(x.shape.as_list(), tf.int32)
    return forward(x, tf.shape)
