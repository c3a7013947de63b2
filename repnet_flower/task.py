"""What travels between the phones and the server, and one local round.

A Rep-Net `.tflite` holds every weight that training changes behind its
`get_weights` / `set_weights` signatures (`repnet_trainer.RepNetTrainer`).
Of those, the trainable weights (side network, backbone shifts, head)
travel, and the side network's batch-norm statistics unless they stay on
the client (FedBN); the optimizer's slots never do. The frozen backbone is
a constant inside the file that every phone already has: it never travels.
The arrays travel in the run's wire dtype (`"float32"`, or `"float16"` for
half the bytes).
"""

import numpy as np
from flwr.app import Array
from flwr.app import ArrayRecord
from flwr.common import serde

from repnet_trainer import loop

# Names of `get_weights` that hold batch-norm statistics.
STATISTICS = ("moving_mean", "moving_variance")
OPTIMIZER_PREFIX = "optimizer_"
BATCH_NORM_MODES = ("global", "local")
WIRE_DTYPES = ("float32", "float16")


def is_statistic(name: str) -> bool:
    return name.endswith(STATISTICS)


def check_batch_norm(batch_norm: str) -> str:
    """`batch_norm`, if it is a mode of the side network's statistics."""
    if batch_norm not in BATCH_NORM_MODES:
        raise ValueError(
            f"`batch-norm` must be one of {BATCH_NORM_MODES}. Received: "
            f"{batch_norm!r}"
        )
    return batch_norm


def travelling(names, batch_norm="global") -> list[str]:
    """The weights of `names` (a model's `get_weights`) that travel: all
    but the optimizer's, and the statistics only with `"global"`."""
    check_batch_norm(batch_norm)
    return sorted(
        name
        for name in names
        if not name.startswith(OPTIMIZER_PREFIX)
        and not (batch_norm == "local" and is_statistic(name))
    )


def check_wire_dtype(wire_dtype: str) -> str:
    """`wire_dtype`, if the arrays can travel in it."""
    if wire_dtype not in WIRE_DTYPES:
        raise ValueError(
            f"The wire dtype must be one of {WIRE_DTYPES}. Received: "
            f"{wire_dtype!r}"
        )
    return wire_dtype


def to_record(weights: dict, names, dtype=None) -> ArrayRecord:
    """`weights[name]` for each of `names` as an `ArrayRecord`, the
    floating ones cast to `dtype` where given."""
    return ArrayRecord(
        {name: Array(cast(weights[name], dtype, name)) for name in names}
    )


def from_record(record: ArrayRecord, dtype=None) -> dict:
    """Name -> array, the floating ones cast to `dtype` where given."""
    return {
        name: cast(array.numpy(), dtype, name) for name, array in record.items()
    }


def cast(value, dtype=None, name="an array"):
    """`value` as an array, cast to `dtype` if it is floating and `dtype`
    is given (integer arrays keep theirs).

    Raises:
        ValueError: when finite values do not fit `dtype` (float16 ends at
            65504).
    """
    value = np.asarray(value)
    if dtype is None or not np.issubdtype(value.dtype, np.floating):
        return value
    result = value.astype(dtype, copy=False)
    if not np.all(np.isfinite(result)) and np.all(np.isfinite(value)):
        raise ValueError(
            f"{name} holds values beyond {np.dtype(dtype).name}'s range "
            f"(largest magnitude {np.max(np.abs(value)):.4g}): send it in "
            "float32 (wire-dtype)."
        )
    return result


def wire_bytes(content) -> int:
    """The size of a message's content as Flower serialises it for the
    wire (`flwr.common.serde`'s protobuf)."""
    return serde.recorddict_to_proto(content).ByteSize()


def check_reply(arrays: dict, expected: dict) -> str | None:
    """Why a client's arrays cannot be averaged in, or `None` if they can:
    the same names, shapes and dtypes as `expected` (name -> array), every
    value finite."""
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        return (
            f"other array names (missing {_few(missing)}, unexpected "
            f"{_few(unexpected)})"
        )
    for name, value in arrays.items():
        reference = expected[name]
        if value.shape != reference.shape:
            return f"{name} has shape {value.shape}, expected {reference.shape}"
        if value.dtype != reference.dtype:
            return f"{name} has dtype {value.dtype}, expected {reference.dtype}"
        if np.issubdtype(value.dtype, np.floating) and not np.all(
            np.isfinite(value)
        ):
            return f"{name} holds NaN or inf"
    return None


def _few(items, limit=3):
    shown = ", ".join(items[:limit]) or "none"
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def start_round(trainer, received: dict, local: dict | None = None) -> None:
    """Loads a round's weights into `trainer`: the received ones, the
    client's own batch-norm statistics (`local`, with FedBN), and a fresh
    optimizer (zero slots, step 0), as each round's local training starts
    from the global model."""
    weights = trainer.get_weights()
    for name, value in weights.items():
        if name in received:
            weights[name] = received[name]
        elif local and name in local:
            weights[name] = local[name]
        elif name.startswith(OPTIMIZER_PREFIX):
            weights[name] = np.zeros_like(value)
    trainer.set_weights(weights)


def train_round(trainer, images, labels, *, epochs, learning_rate, seed):
    """`epochs` passes over the client's examples at a constant rate (the
    round's, set by the server); returns the mean loss. A client with
    fewer examples than a batch repeats them to fill one."""
    batch = trainer.batch_size
    losses = []
    for epoch in range(epochs):
        order = loop.epoch_order(np.arange(len(labels)), epoch, seed)
        if len(order) < batch:
            order = np.resize(order, batch)
        for start in range(0, len(order) - batch + 1, batch):
            index = order[start : start + batch]
            losses.append(
                trainer.train_step(images[index], labels[index], learning_rate)
            )
    return float(np.mean(losses))


def round_learning_rate(peak, server_round, num_rounds):
    """The rate of a round: the recipe's cosine decay over the rounds,
    round 1 at the peak."""
    return loop.cosine_learning_rate(peak, server_round - 1, num_rounds)
