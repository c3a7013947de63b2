"""The TensorFlow and Keras versions keras-repnet supports, and the private
entry points it uses where no public route exists.

Each private entry point is reached through this module, which checks that
it is still there and says what to do when it is not, instead of failing
deep inside a traced step (`tests/test_internals.py` checks that each one
still takes effect):

- `gradient_registry()`: TensorFlow's gradient function per op type
  (`tensorflow.python.framework.ops._gradient_registry`), swapped by
  `keras_repnet.backward.override()` for the lean and builtin rules.
- `add_control_input()`: `Operation._add_control_input`, which orders the
  lean rules' forward summaries (`keras_repnet.backward.ops.forward`).
- `RepNetModel._run_through_graph` overrides Keras' `Functional` method of
  that name to recompute the side modules (`keras_repnet.core.models`).
- `UNFOLD_SPLAT_CONSTANTS`: the LiteRT converter's switch that writes the
  optimizer's zero-filled slots as FILL ops (`keras_repnet.export`).
- `producer()` and `producer_node()`: the layer and the graph node that
  output a symbolic Keras tensor (`KerasTensor._keras_history`,
  `Operation._inbound_nodes`), read by the one graph walker
  (`keras_repnet.core.graph`).
- `variable_index()`: `Optimizer._get_variable_index`, the slot of a
  variable in an optimizer's lists (also under `tf.distribute`), read by
  `keras_repnet.MultiRateAdam`.
- `is_functional()`: whether a model is a functional graph
  (`keras.src.models.functional.Functional`).

Example:

>>> from keras_repnet import compat
>>> compat.SUPPORTED["tensorflow"]
('2.19', '2.21')
"""

import keras
import tensorflow as tf

# Lowest and highest (major.minor) versions tested in CI.
SUPPORTED = {"tensorflow": ("2.19", "2.21"), "keras": ("3.10", "3.15")}

UNFOLD_SPLAT_CONSTANTS = "_experimental_unfold_large_splat_constant"


def _minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


def supported() -> bool:
    """Whether the installed TensorFlow and Keras are in `SUPPORTED`."""
    installed = {"tensorflow": tf.__version__, "keras": keras.__version__}
    return all(
        _minor(low) <= _minor(installed[name]) <= _minor(high)
        for name, (low, high) in SUPPORTED.items()
    )


def unavailable(what: str, workaround: str | None = None) -> RuntimeError:
    """The error raised when a private entry point has changed."""
    ranges = ", ".join(
        f"{name} {low}-{high}" for name, (low, high) in SUPPORTED.items()
    )
    return RuntimeError(
        f"{what} is not available in TensorFlow {tf.__version__} with Keras "
        f"{keras.__version__}. keras-repnet supports {ranges}: install a "
        f"supported pair" + (f", or {workaround}." if workaround else ".")
    )


def gradient_registry() -> dict:
    """TensorFlow's registry of gradient functions: op type -> entry dict
    whose `"type"` key holds the function."""
    from tensorflow.python.framework import ops as tf_ops  # noqa: PLC0415

    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):
        raise unavailable(
            "TensorFlow's gradient registry (ops._gradient_registry)",
            "train with `lean_backward=False` (plain autodiff; no LiteRT "
            "training export)",
        )
    return registry


def add_control_input(operation, control):
    """Makes graph `operation` wait for `control` (another operation)."""
    add = getattr(operation, "_add_control_input", None)
    if add is None:
        raise unavailable(
            "Operation._add_control_input",
            "train with `lean_backward=False`",
        )
    add(control)


def unfold_splat_constants(converter):
    """Asks `converter` (a `tf.lite.TFLiteConverter`) to write zero-filled
    initial values as FILL ops rather than stored zeros."""
    if not hasattr(converter, UNFOLD_SPLAT_CONSTANTS):
        raise unavailable(f"TFLiteConverter.{UNFOLD_SPLAT_CONSTANTS}")
    setattr(converter, UNFOLD_SPLAT_CONSTANTS, True)


def producer(tensor):
    """The operation (layer) that outputs the symbolic Keras `tensor`."""
    return _keras_history(tensor)[0]


def producer_node(tensor):
    """The node of a functional graph that outputs the symbolic `tensor`."""
    operation, node_index, _ = _keras_history(tensor)
    nodes = getattr(operation, "_inbound_nodes", None)
    if nodes is None:
        raise unavailable("Operation._inbound_nodes")
    return nodes[node_index]


def _keras_history(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise ValueError(
            "Expected a symbolic tensor of a functional Keras model (such as "
            f"`model.outputs[0]`). Received: {tensor!r}"
        )
    return history


def variable_index(optimizer, variable) -> int:
    """The index of `variable` in `optimizer`'s variable lists."""
    index = getattr(optimizer, "_get_variable_index", None)
    if index is None:
        raise unavailable("Optimizer._get_variable_index")
    return index(variable)


def is_functional(model) -> bool:
    """Whether `model` is a functional Keras model (a graph of layers)."""
    try:
        from keras.src.models.functional import Functional  # noqa: PLC0415
    except ImportError as error:
        raise unavailable("keras.src.models.functional.Functional") from error
    return isinstance(model, Functional)
