"""The client: one phone, training the exported `.tflite` with LiteRT.

Each SuperNode is one client, with its own examples in the `.npz` file its
node configuration names (`data`: arrays `x`, `y`, and `x_val`, `y_val`
for its local evaluation). A round loads the global weights into the
model's `set_weights`, trains `local-epochs` passes at the round's rate
with `train`, and returns `get_weights`' travelling arrays (see `task`) in
the run's `wire-dtype`.
With `batch-norm = "local"` the side network's batch-norm statistics stay
on the client between rounds (FedBN).

Two node options simulate faulty phones, for tests of a deployment:
`fail-in-round=N` makes the client die in round N (switched off
mid-round), and `corrupt="nan"` (or `"shape"`, `"dtype"`, `"name"`) makes it
return arrays the server must refuse.
"""

import os

import numpy as np
from flwr.app import Context
from flwr.app import Message
from flwr.app import MetricRecord
from flwr.app import RecordDict
from flwr.clientapp import ClientApp

from repnet_flower import task
from repnet_trainer import RepNetTrainer

app = ClientApp()
_LOCAL = "local-statistics"


def _setup(msg: Message, context: Context):
    run, node = context.run_config, context.node_config
    trainer = RepNetTrainer(str(run["model"]), num_threads=1)
    with np.load(str(node["data"])) as data:
        examples = {key: data[key] for key in data.files}
    local = None
    if run["batch-norm"] == "local" and _LOCAL in context.state:
        local = task.from_record(context.state[_LOCAL])
    task.start_round(trainer, task.from_record(msg.content["arrays"]), local)
    return trainer, examples


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    server_round = int(config["server-round"])
    if int(context.node_config.get("fail-in-round", 0)) == server_round:
        os._exit(1)  # A phone switched off mid-round.
    trainer, examples = _setup(msg, context)
    rate = task.round_learning_rate(
        trainer.learning_rate, server_round, int(config["num-server-rounds"])
    )
    loss = task.train_round(
        trainer,
        examples["x"],
        examples["y"],
        epochs=int(context.run_config["local-epochs"]),
        learning_rate=rate,
        seed=int(context.run_config["seed"]) + server_round,
    )
    weights = trainer.get_weights()
    if context.run_config["batch-norm"] == "local":
        statistics = [name for name in weights if task.is_statistic(name)]
        context.state[_LOCAL] = task.to_record(weights, statistics)
    names = list(msg.content["arrays"].keys())
    wire_dtype = str(context.run_config["wire-dtype"])
    reply = {name: task.cast(weights[name], wire_dtype) for name in names}
    _corrupt(reply, str(context.node_config.get("corrupt", "")))
    content = RecordDict(
        {
            "arrays": task.to_record(reply, list(reply)),
            "metrics": MetricRecord(
                {"num-examples": len(examples["y"]), "train-loss": loss}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


def _corrupt(arrays, how):
    """What a faulty phone might send instead (see the module docstring)."""
    name = next(iter(arrays))
    if how == "nan":
        arrays[name] = np.full_like(arrays[name], np.nan)
    elif how == "shape":
        arrays[name] = np.zeros((*arrays[name].shape, 2), arrays[name].dtype)
    elif how == "dtype":
        arrays[name] = arrays[name].astype(np.float64)
    elif how == "name":
        arrays["not_a_weight"] = arrays.pop(name)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global model, with the client's own statistics under FedBN, on
    the client's held-out examples."""
    trainer, examples = _setup(msg, context)
    metrics = trainer.evaluate(examples["x_val"], examples["y_val"])
    content = RecordDict(
        {
            "metrics": MetricRecord(
                {
                    "num-examples": len(examples["y_val"]),
                    "accuracy": metrics["accuracy"],
                    "loss": metrics["loss"],
                }
            )
        }
    )
    return Message(content=content, reply_to=msg)

