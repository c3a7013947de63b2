"""Federated Rep-Net on Flower: what travels, the partitions, and a real
deployment (a SuperLink and SuperNodes as separate processes on 127.0.0.1,
no Ray) with phones that die or send bad arrays, and a server restart."""

import json

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import RecordDict  # noqa: E402
from repnet_flower import task  # noqa: E402

from keras_repnet.apps import federate  # noqa: E402


def test_only_what_trains_travels():
    names = [
        "repnet_head_kernel", "repnet_module_0_norm_moving_mean",
        "repnet_module_0_norm_gamma", "optimizer_iterations",
        "optimizer_repnet_head_kernel_momentum",
    ]
    assert task.travelling(names) == [
        "repnet_head_kernel", "repnet_module_0_norm_gamma",
        "repnet_module_0_norm_moving_mean",
    ]
    assert task.travelling(names, "local") == [
        "repnet_head_kernel", "repnet_module_0_norm_gamma",
    ]
    with pytest.raises(ValueError, match="batch-norm"):
        task.travelling(names, "shared")


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda a: a.update(w=np.full(3, np.nan, np.float32)), "NaN or inf"),
        (lambda a: a.update(w=np.zeros((3, 2), np.float32)), "shape"),
        (lambda a: a.update(w=np.zeros(3, np.float64)), "dtype"),
        (lambda a: a.update(v=a.pop("w")), "other array names"),
    ],
)
def test_bad_replies_are_refused_with_a_reason(change, reason):
    expected = {"w": np.zeros(3, np.float32), "b": np.zeros(1, np.float32)}
    arrays = {name: value.copy() for name, value in expected.items()}
    assert task.check_reply(arrays, expected) is None
    change(arrays)
    assert reason in task.check_reply(arrays, expected)


def test_floating_arrays_travel_in_the_wire_dtype():
    weights = {
        "w": np.linspace(-1, 1, 1000, dtype=np.float32),
        "step": np.arange(3, dtype=np.int64),
    }
    full = task.to_record(weights, ["w", "step"])
    half = task.to_record(weights, ["w", "step"], "float16")
    back = task.from_record(half, np.float32)
    assert back["w"].dtype == np.float32 and back["step"].dtype == np.int64
    np.testing.assert_array_equal(back["step"], weights["step"])
    # float16 keeps 11 significant bits: relative error <= 2**-11.
    np.testing.assert_allclose(back["w"], weights["w"], rtol=2**-11, atol=1e-7)
    assert not np.array_equal(back["w"], weights["w"])
    sizes = [task.wire_bytes(RecordDict({"arrays": r})) for r in (full, half)]
    assert sizes[1] < 0.55 * sizes[0]
    with pytest.raises(ValueError, match="wire dtype"):
        task.check_wire_dtype("bfloat16")


@pytest.mark.parametrize("partition", ["iid", "dirichlet:0.5", "dirichlet:0.1"])
def test_partitions_cover_the_examples_once(partition):
    labels = np.repeat(np.arange(5), 40)
    parts = federate.partition_indices(labels, 4, partition, seed=3)
    joined = np.concatenate(parts)
    assert sorted(joined) == list(range(len(labels)))
    assert all(len(part) >= federate.MIN_CLIENT_EXAMPLES for part in parts)
    if partition.startswith("dirichlet"):
        assert len({len(part) for part in parts}) > 1  # Phones differ.
        # Non-IID: some client's labels far from the even 20% each.
        shares = [np.bincount(labels[p], minlength=5) / len(p) for p in parts]
        assert max(np.max(np.abs(s - 0.2)) for s in shares) > 0.15
    assert partition != "iid" or len({len(part) for part in parts}) == 1
    with pytest.raises(ValueError, match="dirichlet:ALPHA"):
        federate.partition_indices(labels, 4, "zipf", seed=3)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """Two rounds on five phones: one switched off in round 1, two that
    send NaN and wrongly shaped arrays every round."""
    from helpers import FLOWERS
    from helpers import requires  # noqa: F401

    if not FLOWERS.exists():
        pytest.skip(f"offline asset not found: {FLOWERS}")
    output = tmp_path_factory.mktemp("federated") / "run"
    arguments = dict(
        backbone="MobileNetV3Small",
        weights=None,
        output_dir=str(output),
        clients=5,
        rounds=2,
        partition="iid",
        max_examples=100,
        image_size=32,
        model_options={"side_top_channels": 0},
        node_options={0: {"fail-in-round": 1}, 1: {"corrupt": "nan"},
                      2: {"corrupt": "shape"}},
        timeout=900,
        log=lambda line: None,
    )
    results = federate.federate(str(FLOWERS), **arguments)
    return results, arguments, output


def test_rounds_go_on_without_the_faulty_phones(deployment):
    results, _, _ = deployment
    first, second = results["rounds"][1:3]
    assert first["clients_trained"] == 2 and second["clients_trained"] == 3
    reasons = " ".join(r["reason"] for r in first["left_out"])
    assert "NaN or inf" in reasons and "shape" in reasons
    assert len(first["left_out"]) == 3  # and the phone that died
    assert len(second["left_out"]) == 2
    assert all(0 <= r["accuracy"] <= 1 for r in results["rounds"])


def test_only_the_travelling_weights_go_over_the_wire(deployment):
    """What Flower sends is the side network, shifts and head (and the side
    batch-norm statistics): measured bytes against their float32 size, and
    full-model FedAvg's against every weight's."""
    from repnet_trainer import RepNetTrainer

    results, _, output = deployment
    trainer = RepNetTrainer(str(output / "model.tflite"))
    names = task.travelling(trainer.weight_specs)
    # The model the options asked for: no side top.
    assert results["settings"]["model_options"] == {"side_top_channels": 0}
    assert names and not any("side_top" in name for name in names)
    payload = sum(4 * int(np.prod(trainer.weight_specs[n][0])) for n in names)
    for row in results["rounds"][1:]:
        for key in ("bytes_sent_per_client", "bytes_received_per_client"):
            # Flower's record of each array (its name, dtype and shape)
            # and of the message add a little.
            assert payload < row[key] < payload + 256 * len(names) + 2048
    full = results["full_model_bytes"]
    assert payload < full / 5  # The frozen backbone never travels.


@pytest.fixture(scope="module")
def resumed(deployment):
    """The same run restarted for a third round, its arrays in float16."""
    from helpers import FLOWERS

    _, arguments, output = deployment
    arguments = {**arguments, "rounds": 3, "wire_dtype": "float16"}
    return federate.federate(str(FLOWERS), **arguments), output


def test_a_restarted_server_resumes_after_its_last_round(deployment, resumed):
    results = deployment[0]
    more, output = resumed
    assert [r["round"] for r in more["rounds"]] == [0, 1, 2, 3]
    assert more["rounds"][:3] == results["rounds"]  # Rounds 1-2 kept as run.
    log = (output / "flower" / "run.log").read_text()
    assert "Resuming at round 3 of 3" in log
    saved = json.loads((output / "results.json").read_text())
    assert saved["rounds"][-1]["round"] == 3


def test_float16_halves_the_bytes_and_the_server_averages_in_float32(resumed):
    from repnet_trainer import RepNetTrainer

    more, output = resumed
    assert more["settings"]["wire_dtype"] == "float16"
    float32_round, float16_round = more["rounds"][2:4]
    for key in ("bytes_sent_per_client", "bytes_received_per_client"):
        assert 0.45 < float16_round[key] / float32_round[key] < 0.55
    # The global model stays float32: the average of float16 replies,
    # not rounded to float16 itself.
    names = task.travelling(RepNetTrainer(str(output / "model.tflite")).weight_specs)
    with np.load(output / "checkpoint.npz") as checkpoint:
        kernels = [checkpoint[n] for n in names if n.endswith("kernel")]
    assert all(kernel.dtype == np.float32 for kernel in kernels)
    assert any(
        not np.array_equal(k, k.astype(np.float16).astype(np.float32))
        for k in kernels
    )
    assert 0 <= float16_round["accuracy"] <= 1
