"""The federated job behind `keras-repnet federate`: many phones, one model.

`federate()` builds a method's model on a frozen backbone and exports it
(`export_tflite`: the file every phone trains with LiteRT), holds out the
recipe's validation share of the data for the server, partitions the rest
among the clients with `flwr_datasets` (`"iid"` or `"dirichlet:ALPHA"`
over the labels), writes each client's examples to its own `.npz`, and runs
the Flower app (`federated/pyproject.toml`, code in `repnet_flower`) on a
local deployment: a SuperLink and one SuperNode per client, as separate
processes on 127.0.0.1 (`repnet_flower.deploy`). It writes `results.json`
(per round: accuracy, loss and the bytes each client sent and received,
beside what full-model FedAvg of the same network would send), `results.md`
and `rounds.png` to `output_dir`. Run again on the same `output_dir`, the
server resumes after its last finished round.
"""

import time
from pathlib import Path

import keras
import numpy as np
from repnet_trainer import split

from keras_repnet import data as data_lib
from keras_repnet.apps import files
from keras_repnet.apps import plotting
from keras_repnet.apps import training
from keras_repnet.export import export_tflite
from keras_repnet.methods import build_method
from keras_repnet.methods import get_method

APP = Path(__file__).resolve().parents[2] / "federated"
# Each client keeps this share of its examples for its own evaluation.
CLIENT_VALIDATION_SPLIT = 0.2
# A Dirichlet partition redraws until every client has this many examples.
MIN_CLIENT_EXAMPLES = 10


def federate(
    data,
    *,
    backbone: str = "MobileNetV2",
    weights: str | None = "imagenet",
    method: str = "repnet",
    output_dir: str = "runs/federated",
    clients: int = 10,
    rounds: int = 20,
    local_epochs: int = 1,
    partition: str = "dirichlet:0.5",
    strategy: str = "fedavg",
    batch_norm: str = "global",
    wire_dtype: str = "float32",
    server_learning_rate: float = 1e-2,
    batch_size: int = 8,
    fraction_train: float = 1.0,
    fraction_evaluate: float = 1.0,
    min_clients: int = 2,
    max_examples: int | None = None,
    model_options: dict | None = None,
    node_options: dict | None = None,
    app_dir=APP,
    timeout: float = 6 * 3600,
    log=print,
    **changes,
) -> dict:
    """Trains a method's model across clients with Flower; see the module
    docstring.

    Args:
        data: the dataset (see `keras_repnet.data.load`).
        backbone: str. A `keras.applications` model name.
        weights: `"imagenet"`, `None` or a weights file for the backbone.
        method: str. A method of `keras_repnet.methods.METHODS`: its model
            and recipe (peak rate of the rounds' cosine decay, image size,
            validation share, seed).
        output_dir: str. Where everything goes.
        clients: int. SuperNodes, one client each.
        rounds: int. Federated rounds.
        local_epochs: int. Passes over its examples a client makes a round.
        partition: str. `"iid"` or `"dirichlet:ALPHA"` (non-IID labels, and
            clients of different sizes).
        strategy: str. `"fedavg"` or `"fedadam"`.
        batch_norm: str. `"global"` (the side network's batch-norm
            statistics are averaged too) or `"local"` (they stay on each
            client, FedBN).
        wire_dtype: str. `"float32"`, or `"float16"`: the arrays travel
            at half the bytes.
        server_learning_rate: float. FedAdam's server rate.
        batch_size: int. Examples per on-device step (the export's).
        fraction_train: float. Share of the clients each round trains.
        fraction_evaluate: float. Share of the clients that evaluate the
            global weights on their own held-out examples each round (0:
            central evaluation only).
        min_clients: int. A round needs this many replies.
        max_examples: int. Cap on the examples used (quick runs).
        model_options: dict. More `build_method` arguments (e.g.
            `{"side_top_channels": 0}`: no side top, a smaller update to
            send each round).
        node_options: dict. Client index -> more node configuration (e.g.
            `{0: {"fail-in-round": 2}}`: that client dies in round 2).
        app_dir: path. The Flower app folder.
        timeout: float. Seconds the Flower run may take.
        log: callable that prints one line.
        **changes: recipe fields to change (e.g. `image_size=64`).

    Returns:
        The dict written to `results.json`.
    """
    recipe = get_method(method).recipe.replace(**changes)
    _check(clients, rounds, local_epochs, min_clients, batch_norm, wire_dtype)
    output = Path(output_dir)
    files.check_writable(output / "results.json", "output_dir")
    keras.utils.set_random_seed(recipe.seed)
    started = time.time()
    splits = data_lib.load(
        data, recipe=recipe, augment=False, batch_size=256,
        max_examples=max_examples,
    )
    train = _arrays(splits.train)
    held_out = _arrays(splits.validation)
    parts = partition_indices(train[1], clients, partition, recipe.seed)
    model_path = output / "model.tflite"
    if not model_path.exists():
        size = recipe.image_size
        model = build_method(
            method, backbone, splits.num_classes, input_shape=(size, size, 3),
            weights=weights, recipe=recipe, **(model_options or {}),
        )
        export_tflite(model, model_path, batch_size=batch_size,
                      class_names=splits.class_names)
    node_configs = []
    for index, part in enumerate(parts):
        path = output / "clients" / f"client_{index}.npz"
        _write_client(path, train, part, recipe.seed + index)
        node_configs.append(
            {"data": str(path.resolve()), "partition-id": index,
             **(node_options or {}).get(index, {})}
        )
    server_data = output / "server.npz"
    _write_npz(server_data, x=held_out[0], y=held_out[1])
    run_config = {
        "model": str(model_path.resolve()),
        "server-data": str(server_data.resolve()),
        "output-dir": str(output.resolve()),
        "num-server-rounds": rounds,
        "local-epochs": local_epochs,
        "strategy": strategy,
        "server-learning-rate": float(server_learning_rate),
        "fraction-train": float(fraction_train),
        "fraction-evaluate": float(fraction_evaluate),
        "min-train-nodes": min_clients,
        "batch-norm": batch_norm,
        "wire-dtype": wire_dtype,
        "round-timeout": 600.0,
        "seed": recipe.seed,
    }
    from repnet_flower import deploy

    code = deploy.run_local(
        app_dir, node_configs, run_config, output / "flower", timeout=timeout,
        log=log,
    )
    rounds_path = output / "rounds.json"
    if code != 0 or not rounds_path.exists():
        raise RuntimeError(
            f"The Flower run ended with code {code}; its logs are in "
            f"{output / 'flower'} (run.log, superlink.log, supernode_*.log)."
        )
    done = _read_json(rounds_path)["rounds"][-1]["round"]
    if done < rounds:
        # `flwr run --stream` can end before the run does (its stream cut).
        raise RuntimeError(
            f"The Flower run stopped after round {done} of {rounds}; its logs "
            f"are in {output / 'flower'}. Run the same command again: it "
            f"resumes after round {done}."
        )
    results = {
        "settings": {
            "data": training.as_given(data),
            "backbone": backbone,
            "weights": weights,
            "method": method,
            "clients": clients,
            "rounds": rounds,
            "local_epochs": local_epochs,
            "partition": partition,
            "strategy": strategy,
            "batch_norm": batch_norm,
            "wire_dtype": wire_dtype,
            "server_learning_rate": server_learning_rate,
            "batch_size": batch_size,
            "max_examples": max_examples,
            "model_options": model_options or {},
            "recipe": recipe.to_dict(),
        },
        "client_examples": [int(len(part)) for part in parts],
        "held_out_examples": int(len(held_out[1])),
        "full_model_bytes": full_model_bytes(backbone, recipe.image_size,
                                             splits.num_classes),
        "rounds": _read_json(rounds_path)["rounds"],
        "wall_time_s": round(time.time() - started, 1),
        "versions": training.versions(),
    }
    files.write_json(results, output / "results.json")
    files.write_text(markdown(results), output / "results.md")
    plot_rounds({"": results}, output / "rounds.png")
    return results


def partition_indices(labels, clients, partition, seed) -> list[np.ndarray]:
    """Each client's example indices, drawn by `flwr_datasets`'
    partitioners: `"iid"` (equal random shares) or `"dirichlet:ALPHA"`
    (label shares from Dirichlet(ALPHA); lower is less even)."""
    import datasets
    from flwr_datasets import partitioner

    order = np.random.default_rng(seed).permutation(len(labels))
    table = datasets.Dataset.from_dict(
        {"label": np.asarray(labels)[order].tolist(), "index": order.tolist()}
    )
    if partition == "iid":
        scheme = partitioner.IidPartitioner(clients)
    elif partition.startswith("dirichlet:"):
        alpha = float(partition.split(":", 1)[1])
        scheme = partitioner.DirichletPartitioner(
            clients, "label", alpha, min_partition_size=MIN_CLIENT_EXAMPLES,
            self_balancing=False, seed=seed,
        )
    else:
        raise ValueError(
            '`partition` must be "iid" or "dirichlet:ALPHA" (e.g. '
            f'"dirichlet:0.5"). Received: partition={partition!r}'
        )
    scheme.dataset = table
    return [np.asarray(scheme.load_partition(i)["index"]) for i in range(clients)]


def full_model_bytes(backbone, image_size, num_classes) -> int:
    """What one client would send a round under full-model FedAvg of the
    same network (every weight, as Flower serialises it): the yardstick of
    the bytes Rep-Net's clients send."""
    from flwr.app import Array
    from flwr.app import ArrayRecord
    from flwr.app import RecordDict
    from flwr.common import serde

    from keras_repnet.core import backbones

    with backbones.random_weights_on_purpose():
        model = build_method(
            "ft-full", backbone, num_classes,
            input_shape=(image_size, image_size, 3), weights=None,
        )
    record = ArrayRecord(
        {str(i): Array(np.asarray(w)) for i, w in enumerate(model.get_weights())}
    )
    return serde.recorddict_to_proto(RecordDict({"arrays": record})).ByteSize()


def _check(clients, rounds, local_epochs, min_clients, batch_norm, wire_dtype):
    for name, value in (("clients", clients), ("rounds", rounds),
                        ("local_epochs", local_epochs),
                        ("min_clients", min_clients)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive int. Received: {name}={value!r}"
            )
    if min_clients > clients:
        raise ValueError(
            f"`min_clients` ({min_clients}) cannot exceed `clients` ({clients})."
        )
    from repnet_flower import task

    task.check_batch_norm(batch_norm)
    task.check_wire_dtype(wire_dtype)


def _arrays(dataset):
    """uint8 images and int32 labels of a batched (unpreprocessed) split."""
    images, labels = [], []
    for x, y in dataset.as_numpy_iterator():
        images.append(np.clip(np.round(x), 0, 255).astype(np.uint8))
        labels.append(y.astype(np.int32))
    return np.concatenate(images), np.concatenate(labels)


def _write_client(path, train, part, seed):
    """A client's examples, its own validation share held out."""
    fit, held = split.split_indices(len(part), CLIENT_VALIDATION_SPLIT, seed)
    x, y = train
    _write_npz(path, x=x[part[fit]], y=y[part[fit]],
               x_val=x[part[held]], y_val=y[part[held]])


def _write_npz(path, **arrays):
    from repnet_trainer import files as device_files

    with device_files.atomic_path(path, ".npz") as temporary:
        np.savez(temporary, **arrays)


def _read_json(path):
    import json

    with open(path) as f:
        return json.load(f)


# === Reports ===


def markdown(results) -> str:
    """Per round: central accuracy, the clients heard, the bytes."""
    settings = results["settings"]
    full = results["full_model_bytes"]
    lines = [
        f"{settings['method']} on {settings['backbone']}, {settings['clients']} "
        f"clients ({settings['partition']}), {settings['strategy']}, batch "
        f"norms {settings['batch_norm']}, arrays in "
        f"{settings.get('wire_dtype', 'float32')}, {settings['local_epochs']} local "
        f"epoch(s) a round. Accuracy on the server's {results['held_out_examples']} "
        f"held-out images. Full-model FedAvg (float32) would send {full:,} bytes a "
        "client a round.",
        "",
        "| round | accuracy | loss | clients | left out | bytes sent / client "
        "| bytes received / client | sent / full model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rounds"]:
        sent = row.get("bytes_sent_per_client")
        lines.append(
            f"| {row['round']} | {row['accuracy']:.3f} | {row['loss']:.3f} | "
            f"{row.get('clients_trained', '-')} | {len(row.get('left_out', []))} | "
            f"{'-' if sent is None else f'{sent:,}'} | "
            f"{_bytes(row.get('bytes_received_per_client'))} | "
            f"{'-' if sent is None else f'{sent / full:.3f}'} |"
        )
    return "\n".join(lines) + "\n"


def _bytes(value):
    return "-" if value is None else f"{value:,}"


def plot_rounds(runs: dict, path) -> None:
    """Central accuracy per round, a line per run (label -> results)."""
    figure = plotting.figure(figsize=(7, 4.5))
    axis = figure.subplots()
    values = []
    for label, results in runs.items():
        rounds = [r["round"] for r in results["rounds"]]
        accuracy = [r["accuracy"] for r in results["rounds"]]
        values += accuracy
        axis.plot(rounds, accuracy, marker="o", label=label or None)
    plotting.integer_ticks(axis)
    axis.set_xlabel("round")
    plotting.accuracy_axis(axis, values or [0.5], "held-out accuracy")
    if any(runs):
        axis.legend(fontsize=8)
    plotting.save(figure, path)

