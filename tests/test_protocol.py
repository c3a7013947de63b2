"""The accuracy protocol's picks (`bench/protocol.py`): which rates a grid
runs beyond its edges, and that a pick waits for its grid; its driver
(`bench/runs.py`), which follows the picks as runs finish; and its report
(`bench/report.py`)."""

import json
import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import grids  # noqa: E402
import protocol  # noqa: E402
import report  # noqa: E402
import stages  # noqa: E402

POINT = ("MobileNetV2", 128)


def grid_results(
    validation, method="repnet", set_name="cifar10", tag=None, point=POINT
):
    """Finished seed-0 runs of `method`'s grid (its variant `tag`'s) at
    `point`, one per rate, with the given final validation accuracies."""
    backbone, size = point
    options, grid = (None, grids.LEARNING_RATES[method])
    if tag:
        options, grid = grids.VARIANTS[method][tag]
    return [
        {
            "set": set_name, "backbone": backbone, "method": method,
            "learning_rates": list(rates), "seed": 0, "shots": None,
            "image_size": size, "validation_accuracy": [accuracy],
            "options": options, "tag": tag,
        }
        for rates, accuracy in zip(grid, validation)
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
        stages.stage_runs("core", POINT, ["cifar10"], results, lambda s: (3000, 10))
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


def picked(results, method):
    """`(rates, tag)` of `method`'s pick on CIFAR-10 at `POINT`, or `None`."""
    backbone, size = POINT
    run = protocol.best_run(results, "cifar10", backbone, method, size)
    return None if run is None else (tuple(run["learning_rates"]), run["tag"])


def test_a_tie_picks_the_lower_rates():
    # 1e-2 and 3e-2 tie, whatever order the runs are read in.
    results = grid_results((0.7, 0.9, 0.9, 0.8))
    lower = grids.LEARNING_RATES["repnet"][1]
    assert picked(results, "repnet") == (lower, None)
    assert picked(results[::-1], "repnet") == (lower, None)


def test_a_half_run_grid_picks_nothing():
    # TinyTL's first rate finished alone on CIFAR-10 at 128 px once; its
    # pick (and the seeds and targets that follow it) must wait.
    grid = grids.LEARNING_RATES["tinytl"]
    assert picked(grid_results((0.74,), method="tinytl"), "tinytl") is None
    results = grid_results((0.74, 0.70), method="tinytl")
    assert picked(results, "tinytl") == (grid[0], None)


def test_a_variant_competes_once_its_grid_has_run():
    recipe = grid_results((0.58, 0.60, 0.55), method="ft-full")
    bn09 = grid_results((0.66, 0.65, 0.64, 0.63), method="ft-full", tag="bn0.9")
    grid = grids.VARIANTS["ft-full"]["bn0.9"][1]
    # Three of bn0.9's four rates: the recipe's grid picks.
    assert picked(recipe + bn09[:3], "ft-full") == (
        grids.LEARNING_RATES["ft-full"][1], None
    )
    assert picked(recipe + bn09, "ft-full") == (grid[0], "bn0.9")
    # A finished variant competes without the recipe's grid.
    assert picked(bn09, "ft-full") == (grid[0], "bn0.9")


def test_an_option_grid_seeds_its_pick_once_every_member_has_run():
    grid = "modules6-side-bn0.9-shifts-sign-int8"
    point = ("MobileNetV3Small", 128)
    members = grids.OPTION_GRIDS[grid]
    assert grid in grids.SEEDED_OPTIONS[point]
    validation = [0.70, 0.72, 0.75, 0.74, 0.60][: len(members)]
    results = [
        {
            "set": "cifar10", "backbone": point[0], "method": "repnet",
            "learning_rates": [3e-2, 3e-3], "seed": 0, "shots": None,
            "image_size": point[1], "validation_accuracy": [accuracy],
            "options": grids.REPNET_OPTIONS[tag], "tag": tag,
        }
        for tag, accuracy in zip(members, validation)
    ]

    def seeded(results):
        runs = stages.stage_runs(
            "repnet-options", point, ["cifar10"],
            results + grid_results((0.7, 0.8, 0.7, 0.6), point=point),
            lambda s: (3000, 10),
        )
        tags = {run.tag for run in runs if run.seed == 1}
        return tags & set(members) - set(grids.SEEDED_OPTIONS[point])

    assert stages.picked_option(results[:-1], "cifar10", point, grid) is None
    assert seeded(results[:-1]) == set()
    assert stages.picked_option(results, "cifar10", point, grid) == members[2]
    assert seeded(results) == {members[2]}


def _option_runs(point):
    """The options stage's seed-0 runs on CIFAR-10 at `point`, by tag, once
    repnet's grid there picked its second rate."""
    return {
        run.tag: run
        for run in stages.stage_runs(
            "repnet-options", point, ["cifar10"],
            grid_results((0.7, 0.8, 0.7, 0.6), point=point),
            lambda s: (3000, 10),
        )
        if run.seed == 0
    }


def test_options_on_mobilenet_v3_run_over_its_former_defaults():
    """`build`'s rule changed MobileNetV3Small's defaults; its options stay
    the runs they were: over four modules without shifts, at the rates the
    former defaults picked, whatever the new defaults pick."""
    from keras_repnet.core.shift_rule import APPROXIMATE_SHIFT_DEFAULTS

    point = ("MobileNetV3Small", 128)
    # The new defaults' grid picks 1e-2: the options keep 3e-2.
    runs = _option_runs(point)
    former = grids.FORMER_DEFAULTS[point][0]
    assert runs["former-defaults"].option_dict == former
    assert runs["wide"].rates == (3e-2, 3e-3)
    assert runs["wide"].option_dict == {**former, "side_width": 2.0}
    # Shifts an option turns on train at the side's rate, as they did.
    assert runs["shifts-masks"].option_dict == {
        **former, "backbone_shifts": "masks", "shift_learning_rate": 3e-2
    }
    # The option that sets everything the rule sets is the defaults before
    # the side top.
    tag = "modules6-side-bn0.9-shifts-sign-int8-shift0.003"
    assert runs[tag].option_dict == {
        **APPROXIMATE_SHIFT_DEFAULTS, "side_top_channels": 0
    }
    # An option of `OVER_DEFAULTS` runs over today's defaults, at their pick.
    assert runs["no-side-top"].option_dict == {"side_top_channels": 0}
    assert runs["no-side-top"].rates == grids.LEARNING_RATES["repnet"][1]


def test_options_on_mobilenet_v2_run_where_they_ran():
    """At 128 px, over the defaults before the side top at the rates those
    picked per set; at 64 px as written."""
    point = ("MobileNetV2", 128)
    runs = _option_runs(point)
    assert runs["modules6"].option_dict == {
        "num_modules": 6, "side_top_channels": 0
    }
    assert runs["modules6"].rates == (3e-3, 1e-3)  # CIFAR-10's former pick.
    assert runs["no-side-top"].rates == grids.LEARNING_RATES["repnet"][1]
    assert stages.option_options(("MobileNetV2", 64), {"num_modules": 6}) == {
        "num_modules": 6
    }


@pytest.mark.parametrize(
    "point, method, pinned",
    [
        (("MobileNetV2", 64), "repnet", {"side_top_channels": 0}),
        (("MobileNetV2", 64), "repnet-mask", {"side_top_channels": 0}),
        (("MobileNetV2", 64), "tinytl", {}),
        (("MobileNetV2", 128), "repnet", {}),
        (("MobileNetV3Small", 224), "repnet", {}),
    ],
)
def test_points_run_before_the_side_top_build_without_it(point, method, pinned):
    assert protocol.pinned_options(*point, method) == pinned
    # Their measured memory is the model's that ran.
    assert protocol.run_memory_key(*point, method, {"num_modules": 6}) == (
        protocol.memory_key(point[0], method, {"num_modules": 6, **pinned})
    )


@pytest.mark.parametrize("point", [("MobileNetV2", 64), POINT])
def test_full_fine_tuning_runs_its_own_grid_at_the_base_point_only(point):
    """keras.applications' own norms (the untagged grid) run at 64 px; the
    larger points run the variants only."""
    specs = list(
        stages.stage_runs("ft-full", point, ["cifar10"], [], lambda s: (3000, 10))
    )
    tagged = [(s.tag, s.rates) for s in specs if s.tag]
    assert tagged == [
        (tag, rates)
        for tag, (_, grid) in grids.VARIANTS["ft-full"].items()
        for rates in grid
    ]
    untagged = [s.rates for s in specs if not s.tag]
    own = list(grids.LEARNING_RATES["ft-full"])
    assert untagged == (own if point[1] == 64 else [])


def test_the_driver_lists_a_stage_again_after_each_run(tmp_path, monkeypatch):
    """The driver (`runs.run_stage`) runs a grid's rate beyond its edge in
    the same invocation, and the seeds at the pick that rate makes."""
    import report
    import runs

    def validation(spec):  # Rep-Net's lowest rate, the edge's, scores best.
        return 0.9 - spec.rates[0] if spec.method == "repnet" else 0.5

    trained = []

    def train(spec, output_dir):
        trained.append(spec)
        path = runs.result_path(spec, output_dir)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({
            "set": spec.set, "backbone": spec.backbone, "method": spec.method,
            "learning_rates": list(spec.rates), "seed": spec.seed,
            "shots": None, "image_size": spec.image_size,
            "batch_size": None, "epochs": None,
            "validation_accuracy": [validation(spec)],
        }))

    def read(output_dir, sets):
        return [
            json.loads(p.read_text())
            for p in sorted(pathlib.Path(output_dir).glob("runs/*/result.json"))
        ]

    monkeypatch.setattr(runs, "run", train)
    monkeypatch.setattr(report, "write", read)
    results = []
    for stage in ("core", "seeds"):
        results = runs.run_stage(stage, POINT, ["cifar10"], tmp_path, results)
    edge = grids.EDGE_RATES["repnet"][0]
    repnet = [(s.rates, s.seed) for s in trained if s.method == "repnet"]
    assert repnet == [
        *((rates, 0) for rates in grids.LEARNING_RATES["repnet"]),
        (edge, 0), (edge, 1), (edge, 2),
    ]
    # Nothing runs twice: a second walk finds every run finished.
    count = len(trained)
    runs.run_stage("core", POINT, ["cifar10"], tmp_path, results)
    assert len(trained) == count
    # `--methods` keeps one method's runs.
    trained.clear()
    runs.run_stage(
        "core", POINT, ["cifar10"], tmp_path / "ft-last", [], methods=["ft-last"]
    )
    assert {spec.method for spec in trained} == {"ft-last"}


def test_the_methods_flag_takes_only_what_a_stage_runs(tmp_path):
    """`--methods` names a method some stage runs, else a usage error that
    lists them (a registered method no stage runs would run nothing)."""
    import subprocess

    from keras_repnet.methods import METHODS

    assert set(protocol.METHODS) <= set(METHODS)
    assert "adv-rep" in METHODS and "adv-rep" not in protocol.METHODS
    done = subprocess.run(
        [sys.executable, str(BENCH / "accuracy.py"), "--methods=adv-rep",
         f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert "Unknown methods ['adv-rep']. Known: ['repnet'," in done.stderr
    assert not any(tmp_path.iterdir())  # Refused before any report is written.


def test_the_long_table_tells_the_points_apart():
    # The same set and method trained 3x longer at two points: MobileNetV2
    # at the base size and MobileNetV3Small at 224 px.
    runs = [
        {
            "set": "sign_digits", "backbone": backbone, "method": "ft-last",
            "learning_rates": rates, "seed": 0, "shots": None,
            "image_size": size, "epochs": 18, "batch_size": None,
            "validation_accuracy": [0.9], "test_accuracy": test,
            "final_train_accuracy": 0.9,
        }
        for backbone, size, rates, test in (
            ("MobileNetV2", None, [0.01, 0.01], 0.772),
            ("MobileNetV3Small", 224, [0.03, 0.03], 0.922),
        )
    ]
    table = report.markdown(runs, [], {})
    for row in (
        "| sign_digits | MobileNetV2 | 64 | ft-last | 18 | 0.01, 0.01 | 0.772 |",
        "| sign_digits | MobileNetV3Small | 224 | ft-last | 18 | 0.03, 0.03 "
        "| 0.922 |",
    ):
        assert row in table
