"""The accuracy protocol's picks (`bench/protocol.py`): which rates a grid
runs beyond its edges."""

import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import grids  # noqa: E402
import protocol  # noqa: E402

POINT = ("MobileNetV2", 128)


def grid_results(validation, method="repnet", set_name="cifar10"):
    """Finished seed-0 runs of `method`'s grid at `POINT`, one per rate,
    with the given final validation accuracies."""
    backbone, size = POINT
    return [
        {
            "set": set_name, "backbone": backbone, "method": method,
            "learning_rates": list(rates), "seed": 0, "shots": None,
            "image_size": size, "validation_accuracy": [accuracy],
        }
        for rates, accuracy in zip(grids.LEARNING_RATES[method], validation)
    ]


@pytest.mark.parametrize(
    "validation, expected",
    [
        ((0.8, 0.7, 0.6, 0.5), grids.EDGE_RATES["repnet"][0]),  # Lowest.
        ((0.5, 0.6, 0.7, 0.8), grids.EDGE_RATES["repnet"][1]),  # Highest.
        ((0.6, 0.8, 0.7, 0.5), None),  # Bracketed.
        ((0.8, 0.7, 0.6), None),  # Grid not finished.
    ],
)
def test_edge_rates_extend_a_grid_past_an_edge_pick(validation, expected):
    results = grid_results(validation)
    assert protocol.edge_rates(results, "cifar10", POINT, "repnet") == expected


def test_core_stage_runs_the_rate_beyond_the_edge():
    results = grid_results((0.8, 0.7, 0.6, 0.5)) + grid_results(
        (0.5, 0.6, 0.7, 0.8), method="ft-last"
    )
    runs = list(
        protocol.stage_runs("core", POINT, ["cifar10"], results, lambda s: (3000, 10))
    )
    rates = {run.method: [] for run in runs}
    for run in runs:
        if not run.tag:  # The variants' grids are `grids.VARIANTS`'.
            rates[run.method].append(run.rates)
    assert rates["repnet"] == [
        *grids.LEARNING_RATES["repnet"], grids.EDGE_RATES["repnet"][0]
    ]
    assert rates["ft-last"] == [
        *grids.LEARNING_RATES["ft-last"], grids.EDGE_RATES["ft-last"][1]
    ]
