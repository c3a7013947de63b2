"""The server: FedAvg (or FedAdam) of what the phones trained.

It starts from the exported model's weights (its `get_weights`), sends the
travelling arrays each round (`task.travelling`), averages the accepted
replies (`strategy`), evaluates the global weights centrally on the held-out
`server-data` with the same `.tflite`, and after every round writes
`OUTPUT_DIR/checkpoint.npz` (the global arrays, the round, FedAdam's
state) and `OUTPUT_DIR/rounds.json` (per round: accuracy, loss, the clients
heard and left out, and the bytes each client sent and received in the
round's wire dtype), each
atomically. A server started again on the same `output-dir` resumes after
its last checkpointed round.
"""

import os
import time

import numpy as np
from flwr.app import ConfigRecord
from flwr.app import Context
from flwr.serverapp import Grid
from flwr.serverapp import ServerApp

from repnet_flower import task
from repnet_flower.strategy import make_strategy
from repnet_trainer import RepNetTrainer
from repnet_trainer import files

app = ServerApp()
CHECKPOINT = "checkpoint.npz"
ROUNDS = "rounds.json"
_META = "meta/"


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = context.run_config
    output_dir = str(run["output-dir"])
    rounds = int(run["num-server-rounds"])
    trainer = RepNetTrainer(str(run["model"]), num_threads=1)
    with np.load(str(run["server-data"])) as data:
        held_out = data["x"], data["y"]
    names = task.travelling(trainer.weight_specs, str(run["batch-norm"]))
    initial = {name: value for name, value in trainer.get_weights().items()
               if name in names}
    done, arrays, strategy_state, history = _resume(output_dir, initial)
    if done >= rounds:
        print(f"{output_dir} holds all {rounds} rounds: nothing to run.")
        return
    if done:
        print(f"Resuming at round {done + 1} of {rounds} from "
              f"{os.path.join(output_dir, CHECKPOINT)}.")
    strategy = make_strategy(
        str(run["strategy"]),
        initial,
        round_offset=done,
        server_learning_rate=float(run["server-learning-rate"]),
        wire_dtype=str(run["wire-dtype"]),
        fraction_train=float(run["fraction-train"]),
        fraction_evaluate=float(run["fraction-evaluate"]),
        min_train_nodes=int(run["min-train-nodes"]),
        min_available_nodes=int(run["min-train-nodes"]),
        min_evaluate_nodes=int(run["min-train-nodes"]),
    )
    strategy.load_state(strategy_state)
    started = time.time()

    def evaluate(server_round, record):
        server_round += done
        weights = task.from_record(record)
        metrics = _central_accuracy(trainer, weights, held_out)
        if server_round == done:
            if not history:
                history.append({"round": 0, **metrics})
            return None
        traffic = strategy.traffic.get(server_round, {})
        history.append(
            {
                "round": server_round,
                **metrics,
                "clients_trained": len(traffic.get("received", [])),
                # The global weights on the clients' own held-out examples
                # (with their own statistics under FedBN), weighted by size.
                "client_accuracy": strategy.client_metrics.get(
                    server_round, {}
                ).get("accuracy"),
                "left_out": [
                    {"node": str(n), "reason": r}
                    for n, r in strategy.rejected.get(server_round, [])
                ],
                "bytes_received_per_client": _mean(traffic.get("sent", [])),
                "bytes_sent_per_client": _mean(traffic.get("received", [])),
                "wire_dtype": strategy.wire_dtype,
                "seconds": round(time.time() - started, 1),
            }
        )
        _checkpoint(output_dir, server_round, weights, strategy.state(), history)
        return None

    strategy.start(
        grid=grid,
        initial_arrays=task.to_record(arrays, names),
        num_rounds=rounds - done,
        timeout=float(run["round-timeout"]),
        train_config=ConfigRecord(
            {"num-server-rounds": rounds, "local-epochs": int(run["local-epochs"])}
        ),
        evaluate_fn=evaluate,
    )


def _central_accuracy(trainer, weights, held_out):
    task.start_round(trainer, weights)
    return trainer.evaluate(*held_out)


def _mean(values):
    return round(float(np.mean(values))) if values else None


def _resume(output_dir, initial):
    """`(rounds done, arrays, strategy state, history)` from the last
    checkpoint, or a fresh start."""
    path = os.path.join(output_dir, CHECKPOINT)
    if not os.path.exists(path):
        return 0, dict(initial), {}, []
    with np.load(path) as data:
        stored = {key: data[key] for key in data.files}
    arrays = {name: stored[name] for name in initial}
    state = {k[len(_META):]: v for k, v in stored.items() if k.startswith(_META)}
    history = _read_rounds(output_dir)
    return int(stored["round"]), arrays, state, history


def _read_rounds(output_dir):
    import json

    path = os.path.join(output_dir, ROUNDS)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["rounds"]


def _checkpoint(output_dir, server_round, weights, strategy_state, history):
    arrays = {**weights, "round": np.int64(server_round)}
    arrays.update({_META + k: v for k, v in strategy_state.items()})
    with files.atomic_path(os.path.join(output_dir, CHECKPOINT), ".npz") as path:
        np.savez(path, **arrays)
    files.write_json(
        os.path.join(output_dir, ROUNDS), {"rounds": history}, indent=2
    )
