"""Swapping TensorFlow's gradient functions, and recomputation.

`override()` installs the rules of `lean.py` (and of `builtin.py` with
`builtins_only=True`) in TensorFlow's gradient registry while a `with`
block runs; `recompute()` wraps a layer so that its backward pass runs its
forward again. See `keras_repnet.backward` for the whole story.
"""

import collections
import contextlib
import threading

import keras
import tensorflow as tf

from keras_repnet import compat
from keras_repnet.backward import builtin
from keras_repnet.backward import lean
from keras_repnet.backward.keeps import Keeps
from keras_repnet.backward.keeps import TENSORFLOW_KEEPS

_TYPE_TAG = "type"  # The key of the function in a registry entry.

_lock = threading.RLock()
_active = collections.Counter()  # op type -> entries of `override` open
_originals = {}  # op type -> TensorFlow's registry entry, while overridden
_calls = collections.Counter()  # op type -> times a rule built a gradient


# === Registry swapping ===

LEAN_RULES = lean.RULES
BUILTIN_RULES = {**lean.RULES, **builtin.RULES}
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
        entry = _originals.get(op_type) or compat.gradient_registry()[op_type]
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
    registry = compat.gradient_registry()
    with _lock:
        for op_type in op_types:
            if not _active[op_type]:
                _originals[op_type] = registry[op_type]
                registry[op_type] = {
                    **registry[op_type],
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
                    registry[op_type] = _originals.pop(op_type)


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


def keeps_of(op_type: str, lean: bool) -> Keeps:
    """What the gradient of `op_type` keeps: the lean rule's declaration
    when `lean` and a lean rule exists, else TensorFlow's function's
    (`TENSORFLOW_KEEPS`; nothing declared: an empty `Keeps`)."""
    rule = LEAN_RULES.get(op_type) if lean else None
    if rule is not None:
        return rule.keeps
    return TENSORFLOW_KEEPS.get(op_type, Keeps())


def builtins_only() -> bool:
    """Whether an `override(builtins_only=True)` block is open: gradients
    made now are for a TFLite export."""
    with _lock:
        return bool(_builtin_entries)


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
