"""FedAvg and FedAdam that refuse bad replies, count bytes and resume.

`make_strategy(name, expected, ...)` gives Flower's own `FedAvg` or
`FedAdam` with four additions:

- Each client's reply is checked against the arrays the server sent
  (`task.check_reply`): other names, shapes or dtypes, NaN or inf are
  rejected with a logged reason and never averaged in. A failed client
  (an error reply, or none before the round's timeout) is left out; the
  round goes on with the others, given the strategy's minimum.
- The arrays travel in `wire_dtype`: they are cast to it once Flower has
  built the messages, and each accepted reply's back to float32 before
  Flower averages them; the aggregate is float32 too (Flower's FedAdam
  would make it float64), so the global model, FedAdam's moments and the
  checkpoints are float32 and each client trains in float32 from what it
  received.
- The bytes of every message, as Flower serialises it, are counted per
  round (`traffic`).
- Rounds are numbered from `round_offset`, so that a server that resumes
  from a checkpoint goes on where it stopped (FedAdam's bias correction and
  the clients' learning-rate schedule depend on the round).
"""

from logging import INFO
from logging import WARNING

import numpy as np
from flwr.serverapp.strategy import FedAdam
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from repnet_flower import task

STRATEGIES = {"fedavg": FedAvg, "fedadam": FedAdam}
# FedAdam's state, saved with each checkpoint.
_OPTIMIZER_STATE = ("m_t", "v_t")


class _Checked:
    """Mixed in before a Flower strategy (see the module docstring)."""

    def __init__(self, *args, expected, round_offset=0, wire_dtype="float32",
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.wire_dtype = task.check_wire_dtype(wire_dtype)
        self.expected = {
            name: task.cast(value, wire_dtype) for name, value in expected.items()
        }
        self.round_offset = round_offset
        self.traffic = {}  # round -> {"sent": [...], "received": [...]}
        self.rejected = {}  # round -> [(node, reason)]
        self.client_metrics = {}  # round -> the clients' own evaluation

    def configure_train(self, server_round, arrays, config, grid):
        server_round += self.round_offset
        messages = self._on_wire(
            super().configure_train(server_round, arrays, config, grid)
        )
        self.traffic[server_round] = {
            "sent": [task.wire_bytes(m.content) for m in messages],
            "received": [],
        }
        return messages

    def aggregate_train(self, server_round, replies):
        server_round += self.round_offset
        key = self.arrayrecord_key
        accepted, rejected, received = [], [], []
        for message in replies:
            if message.has_error():
                rejected.append((message.metadata.src_node_id, message.error.reason))
                continue
            arrays = task.from_record(message.content[key])
            reason = task.check_reply(arrays, self.expected)
            if reason:
                rejected.append((message.metadata.src_node_id, reason))
                continue
            received.append(task.wire_bytes(message.content))
            message.content[key] = task.to_record(arrays, list(arrays), np.float32)
            accepted.append(message)
        for node, reason in rejected:
            log(WARNING, "Round %s: left out node %s: %s", server_round, node, reason)
        self.rejected[server_round] = rejected
        self.traffic.setdefault(server_round, {"sent": [], "received": []})[
            "received"
        ] = received
        log(INFO, "Round %s: averaging %s replies", server_round, len(accepted))
        arrays, metrics = super().aggregate_train(server_round, accepted)
        return (None if arrays is None else self._off_wire(arrays)), metrics

    def aggregate_evaluate(self, server_round, replies):
        metrics = super().aggregate_evaluate(server_round, replies)
        if metrics is not None:
            self.client_metrics[server_round + self.round_offset] = dict(metrics)
        return metrics

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self._on_wire(
            super().configure_evaluate(
                server_round + self.round_offset, arrays, config, grid
            )
        )

    def _on_wire(self, messages):
        messages = list(messages)
        if messages:
            # Flower gives every message of a round the same arrays.
            arrays = messages[0].content[self.arrayrecord_key]
            record = task.to_record(
                task.from_record(arrays), list(arrays.keys()), self.wire_dtype
            )
            for message in messages:
                message.content[self.arrayrecord_key] = record
        return messages

    def _off_wire(self, arrays):
        return task.to_record(
            task.from_record(arrays, np.float32), list(arrays.keys())
        )

    # === Checkpointed state ===

    def state(self) -> dict:
        """FedAdam's moments (empty for FedAvg), by `m_t/NAME`, `v_t/NAME`."""
        state = {}
        for key in _OPTIMIZER_STATE:
            for name, value in (getattr(self, key, None) or {}).items():
                state[f"{key}/{name}"] = value
        return state

    def load_state(self, state: dict) -> None:
        for key in _OPTIMIZER_STATE:
            if hasattr(self, key):
                values = {
                    name.split("/", 1)[1]: np.asarray(value)
                    for name, value in state.items()
                    if name.startswith(key + "/")
                }
                setattr(self, key, values or getattr(self, key))


def make_strategy(name, expected, *, round_offset=0, server_learning_rate=1e-2,
                  wire_dtype="float32", **kwargs):
    """A checked `FedAvg` or `FedAdam` (see the module docstring).

    Args:
        name: str. `"fedavg"` or `"fedadam"`.
        expected: dict. Name -> array: what each reply must match.
        round_offset: int. Rounds done before (a resumed server).
        server_learning_rate: float. FedAdam's server rate (`eta`).
        wire_dtype: str. `"float32"` or `"float16"`: the dtype the floating
            arrays travel in.
        **kwargs: the Flower strategy's arguments (`fraction_train`,
            `min_train_nodes`, ...).
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"`strategy` must be one of {sorted(STRATEGIES)}. Received: {name!r}"
        )
    base = STRATEGIES[name]
    if base is FedAdam:
        kwargs.update(eta=server_learning_rate)
    checked = type(f"Checked{base.__name__}", (_Checked, base), {})
    return checked(
        expected=expected, round_offset=round_offset, wire_dtype=wire_dtype,
        **kwargs,
    )
