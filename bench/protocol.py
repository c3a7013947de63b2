"""The accuracy protocol's definition: sets, backbones, points and stages,
and how a method's rates are picked (the grids and options each stage
tries are in `grids.py`, the runs each stage makes in `stages.py`).

What runs where, and nothing about how: `runs.py` trains a `Run`,
`report.py` summarises the results, `accuracy.py` is the command line.

Every run trains one method on one set from one seed at one image size,
with the method's recipe (`keras_repnet.methods.recipe_for`) at the rates
of its grid, and is picked or reported by its validation accuracy; the
test split only gives the reported numbers.
"""

import dataclasses

import grids
from common import SHARED_ASSETS
from common import no_side_top

DATASETS = SHARED_ASSETS / "datasets"
WEIGHTS = SHARED_ASSETS / "weights"
# name -> (training data, its test data or None for a seeded 20% test split,
# far from ImageNet). Paths relative to ../shared/assets/datasets; an idx
# folder holds its own test files.
SETS = {
    "cifar10": ("cifar10_32px/train", "cifar10_32px/test", True),
    "sign_digits": ("sign_language_digits", None, True),
    "fashion_mnist": ("fashion_mnist", "fashion_mnist", True),
    "flowers": ("flowers5_128px", None, False),
}
# name -> (keras.applications name, alpha, weights file).
BACKBONES = {
    "MobileNetV2": (
        "MobileNetV2",
        1.0,
        WEIGHTS / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    "MobileNetV2-0.35": (
        "MobileNetV2",
        0.35,
        WEIGHTS / "mobilenet_v2_0.35_224_no_top.weights.h5",
    ),
    "MobileNetV3Small": (
        "MobileNetV3Small",
        1.0,
        WEIGHTS / "mobilenet_v3_small_224_1.0_float_no_top.weights.h5",
    ),
}
# The protocol's epochs, batch size, cap on the training (and validation)
# images of a set, and the image size its first runs were made at (run
# names carry the size only when it differs).
EPOCHS = 6
BATCH_SIZE = 32
TRAIN_EXAMPLES = 3000
BASE_IMAGE_SIZE = 64

# (backbone, image size) -> the stages run there, on every set unless the
# stage or `POINT_SETS` restricts it.
PLAN = {
    ("MobileNetV2", 64): (
        "core", "baselines", "repnet-options", "ft-full", "seeds", "long",
        "fewshot", "batch8", "ablations", "mask", "mask-options",
    ),
    ("MobileNetV2-0.35", 64): ("core",),
    ("MobileNetV3Small", 128): (
        "core", "baselines", "repnet-options", "ft-full", "seeds"
    ),
    ("MobileNetV2", 128): (
        "core", "baselines", "repnet-options", "ft-full", "seeds"
    ),
    # `long` at 224 px: whether Rep-Net's smaller margin there is a matter
    # of steps (the same number of steps as at 128 px, on larger features).
    ("MobileNetV3Small", 224): (
        "core", "baselines", "repnet-options", "seeds", "long"
    ),
    ("MobileNetV2", 224): ("core", "baselines", "repnet-options", "seeds"),
}
# Points run on some sets only (2 cores allow 224 px on the smaller sets).
POINT_SETS = {
    ("MobileNetV3Small", 224): ("flowers", "sign_digits"),
    ("MobileNetV2", 224): ("flowers", "sign_digits"),
}
STAGES = (
    "core", "baselines", "repnet-options", "ft-full", "seeds", "long",
    "fewshot", "batch8", "ablations", "mask", "mask-options", "memory",
)
# Stage -> the methods whose grids it runs.
GRID_STAGES = {
    "core": ("repnet", "ft-last"),
    "baselines": ("tinytl", "mobiletl", "bn-only"),
    "ft-full": ("ft-full",),
}
# Stages whose runs `bench/accuracy.py --variants` filters by tag.
TAGGED_STAGES = (*GRID_STAGES, "repnet-options")
# Beyond MobileNetV2 at 64 px: baselines left out, and methods that run
# their variants only (Keras' own 0.999 norms scored 3-26 points below full
# fine-tuning's best variant at 64 px, lowest on sign digits at 128 px).
COSTLY_BASELINES = ("bn-only",)
VARIANTS_ONLY = ("ft-full",)
SEEDED_METHODS = ("repnet", "ft-last", "ft-full", "tinytl")
SEEDS = (0, 1, 2)
# Trained 3x longer in the `long` stage: the seeded methods.
LONG_METHODS = ("repnet", "ft-last", "ft-full", "tinytl")
LONG_EPOCHS_FACTOR = 3
SHOTS = (10, 50)
FEW_SHOT_METHODS = ("repnet", "ft-last")
# `batch8`: at batch 8 (as on a phone), Rep-Net's recipe as it is beside
# the picked rates.
SMALL_BATCH = 8
ABLATIONS = (
    "repnet-no-shifts", "repnet-dual", "repnet-down", "repnet-none", "repnet-all"
)
MASK_METHOD = "repnet-mask"
# Every method some stage runs (what `bench/accuracy.py --methods` accepts).
METHODS = (*sum(GRID_STAGES.values(), ()), *ABLATIONS, MASK_METHOD)
# Where the `mask` stage counts inference multiply-adds (the paper's size).
MASK_COST_SIZE = 224
@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the protocol.

    `batch_size` and `epochs` are `None` at the protocol's own; `options`
    are more `build_method` arguments or recipe fields (`split_options`
    tells which), named in the run by `tag`.
    """

    set: str
    backbone: str
    method: str
    rates: tuple
    seed: int = 0
    image_size: int = BASE_IMAGE_SIZE
    shots: int | None = None
    batch_size: int | None = None
    epochs: int | None = None
    options: tuple = ()
    tag: str | None = None

    @property
    def name(self) -> str:
        rate = "_".join(f"{r:g}" for r in self.rates)
        parts = [f"{self.set}_{self.backbone}_{self.method}_lr{rate}_s{self.seed}"]
        if self.shots:
            parts.append(f"{self.shots}shot")
        if self.batch_size:
            parts.append(f"b{self.batch_size}")
        if self.epochs:
            parts.append(f"e{self.epochs}")
        if self.image_size != BASE_IMAGE_SIZE:
            parts.append(f"px{self.image_size}")
        if self.tag:
            parts.append(self.tag)
        return "_".join(parts)

    @property
    def option_dict(self) -> dict:
        return dict(self.options)


def with_options(options: dict | None) -> tuple:
    """`Run.options` from a dict."""
    return tuple(sorted((options or {}).items()))


def split_options(options: dict | None) -> tuple:
    """A run's options as (`build_method` arguments, recipe fields)."""
    from keras_repnet import Recipe

    fields = {field.name for field in dataclasses.fields(Recipe)}
    build_options, recipe_fields = {}, {}
    for key, value in (options or {}).items():
        (recipe_fields if key in fields else build_options)[key] = value
    return build_options, recipe_fields


def memory_key(backbone: str, method: str, build_options=None) -> str:
    """The key of a measured step peak in `memory.json`: the backbone, the
    method and the `build_method` options (recipe fields change no memory),
    e.g. `MobileNetV3Small/repnet:backbone_shifts=True`."""
    key = f"{backbone}/{method}"
    if build_options:
        key += ":" + ",".join(
            f"{k}={v}" for k, v in sorted(build_options.items())
        )
    return key


def pinned_options(backbone, image_size, method) -> dict:
    """`build_method` options a run takes beside its own: at a point of
    `grids.POINTS_WITHOUT_SIDE_TOP`, a Rep-Net method without the side top,
    as it ran there."""
    if (backbone, image_size) in grids.POINTS_WITHOUT_SIDE_TOP:
        return no_side_top(method)
    return {}


def run_memory_key(backbone, image_size, method, build_options=None) -> str:
    """The `memory.json` key of a run's model: its `build_method` options
    and those its point pins (`pinned_options`)."""
    pinned = pinned_options(backbone, image_size, method)
    return memory_key(backbone, method, {**pinned, **(build_options or {})})


# === Picks ===


def image_size_of(result) -> int:
    return result.get("image_size") or BASE_IMAGE_SIZE


def final_validation(result) -> float:
    return result["validation_accuracy"][-1]


def protocol_runs(results):
    """The runs at the protocol's batch size, epochs and options (not the
    `batch8`, `long` and `mask` stages'), and the variants of a method
    whose batch norms train (`grids.VARIANTS`), which compete in its grid."""
    return [
        r
        for r in results
        if not r.get("batch_size") and not r.get("epochs")
        and (
            not (r.get("options") or r.get("tag"))
            or r.get("tag") in grids.VARIANTS.get(r["method"], {})
        )
    ]


def grid_runs(results, set_name, backbone, method, image_size):
    """The runs (seed 0) that compete for a method's pick at a point: its
    grid, the rates beyond its edges and its variants, each grid once every
    one of its rates has run (a half-run grid would pick from the rates
    that happened to finish first)."""
    runs = [
        r
        for r in protocol_runs(results)
        if (r["set"], r["backbone"], r["method"], r["seed"], r["shots"])
        == (set_name, backbone, method, 0, None)
        and image_size_of(r) == image_size
    ]
    return [r for r in runs if _grid_finished(runs, method, r.get("tag"))]


def _grid_finished(runs, method, tag):
    """Whether every rate of `method`'s grid (its variant `tag`'s, where
    one is given) is among `runs`."""
    if tag is None:
        grid = grids.LEARNING_RATES.get(method, ())
    else:
        grid = grids.VARIANTS[method][tag][1]
    done = {tuple(r["learning_rates"]) for r in runs if r.get("tag") == tag}
    return all(tuple(rates) in done for rates in grid)


def best_run(results, set_name, backbone, method, image_size):
    """The grid's run (seed 0) with the best final validation accuracy; on
    a tie, the one at the lower side rate (then head rate)."""
    candidates = grid_runs(results, set_name, backbone, method, image_size)
    return max(
        candidates,
        key=lambda r: (final_validation(r), [-x for x in r["learning_rates"]]),
        default=None,
    )


def best_rates(results, set_name, backbone, method, image_size=BASE_IMAGE_SIZE):
    """The picked learning rates of a method at a point, or `None`."""
    run = best_run(results, set_name, backbone, method, image_size)
    return None if run is None else tuple(run["learning_rates"])


def picked_variant(results, set_name, backbone, method, image_size):
    """`(options, tag)` of the picked run of a method: its variant."""
    run = best_run(results, set_name, backbone, method, image_size)
    if run is None or not run.get("tag"):
        return (), None
    return with_options(run.get("options")), run["tag"]


def edge_rates(results, set_name, point, method):
    """The rates one step beyond `method`'s grid (`grids.EDGE_RATES`) where
    its finished grid at `point` picked its lowest or highest rate, or
    `None` (the grid brackets its pick, or has not finished)."""
    if method not in grids.EDGE_RATES:
        return None
    backbone, size = point
    grid = grids.LEARNING_RATES[method]
    # `grid_runs` holds the grid's runs only once all of them have run.
    finished = {
        tuple(r["learning_rates"]): final_validation(r)
        for r in grid_runs(results, set_name, backbone, method, size)
        if not r.get("tag")
    }
    if not finished:
        return None
    picked = max(grid, key=finished.get)
    below, above = grids.EDGE_RATES[method]
    return {grid[0]: below, grid[-1]: above}.get(picked)
