"""The LiteRT benches' tables: issue 24's targets (`bench/litert_targets.py`)
and what the backbone shifts add to a profiled step
(`bench/litert_profile.py --without_shifts`), on hand-made measurements.
The bench scripts themselves define absl flags, which the package's
commands define too: only their flag-free modules are imported here."""

import pathlib
import sys

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import litert_targets  # noqa: E402


def _speed(weights, train, infer, rss, infer_rss, xnnpack="yes"):
    return {
        "backbone": "MobileNetV2",
        "weights": weights,
        "threads": 2,
        "XNNPACK": xnnpack,
        "train ms (batch 8)": train,
        "infer ms (batch 8)": infer,
        "peak RSS MiB": rss,
        "infer-only peak RSS MiB": infer_rss,
    }


def test_targets_show_the_ratios_without_shifts_beside_the_float_file():
    speeds = [
        _speed("float", 50.0, 12.5, 150.0, 75.0),
        _speed("int8", 52.0, 12.5, 180.0, 90.0),
        _speed("float, kernel copies", 51.0, 12.5, 160.0, 80.0),
        _speed(litert_targets.NO_SHIFTS, 15.0, 10.0, 62.0, 57.4),
    ]
    rows = litert_targets.target_rows(speeds, batch=8)
    assert [r["weights"] for r in rows] == ["float", "int8"]
    float_row, int8_row = rows
    assert float_row["train / infer"] == "NOT met (4.00x, target 2.5x)"
    assert float_row["without shifts: train / infer"] == "1.50x"
    assert float_row["train RSS / infer-only RSS"] == "NOT met (2.00x, target 1.3x)"
    assert float_row["without shifts: RSS ratio"] == "1.08x"
    # The file without shifts is float: nothing beside the int8 row.
    assert int8_row["without shifts: train / infer"] == "-"
    assert int8_row["int8 RSS < float RSS"] == "NOT met (180.0 against 150.0 MiB)"


def test_targets_without_a_file_without_shifts_leave_the_columns_empty():
    rows = litert_targets.target_rows([_speed("float", 20.0, 10.0, 60, 50)], 8)
    assert rows[0]["train / infer"] == "met (2.00x, target 2.5x)"
    assert rows[0]["without shifts: train / infer"] == "-"


def _profile(ops, train_ms, infer_ms):
    return {
        "ops": {
            "train": [
                {"op": op, "runs_in": "XNNPACK", "calls": calls, "us": [us, us, us]}
                for op, calls, us in ops
            ],
            "infer": [],
        },
        "steps": {"train": {"ops_ms": train_ms}, "infer": {"ops_ms": infer_ms}},
    }


def test_what_the_shifts_add_is_the_difference_per_op_largest_first():
    with_shifts = _profile(
        [("Mul", 30, 3000.0), ("GEMM", 20, 1000.0), ("Convert", 10, 500.0),
         ("Ceil", 5, 100.0)],
        train_ms=4.6, infer_ms=1.0,
    )
    without = _profile([("Mul", 10, 1000.0), ("GEMM", 20, 1000.0), ("Pad", 1, 200.0)],
                       train_ms=2.2, infer_ms=0.9)
    rows = litert_targets.shift_rows("m", "delegate", with_shifts, without, top=2)
    table = {
        r["op (LiteRT or XNNPACK name)"]: (
            r["calls with shifts"], r["calls without"], r["shifts add ms"]
        )
        for r in rows
    }
    assert [r["op (LiteRT or XNNPACK name)"] for r in rows] == [
        "Mul", "Convert", "all other ops", "train step (sum of ops)",
        "infer (sum of ops)",
    ]
    assert table["Mul"] == (30, 10, 2.0)
    assert table["Convert"] == (10, 0, 0.5)
    # Ceil (+0.1), GEMM (0.0) and Pad (-0.2), summed.
    assert table["all other ops"] == (25, 21, -0.1)
    assert table["train step (sum of ops)"][2] == 2.4
    assert table["infer (sum of ops)"][2] == 0.1
