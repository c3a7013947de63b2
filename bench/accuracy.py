"""The accuracy protocol: Rep-Net against the cheap baselines, on test splits.

    python bench/accuracy.py [--image_size=64] [--epochs=6]
        [--train_examples=3000] [--stages=core,seeds,baselines,ft-full,long,
        small,fewshot,batch8,ablations,memory] [--sets=cifar10,...]
        [--output_dir=results/accuracy]

Every run trains one method on one dataset from one seed, with Adam and a
cosine decay to zero (`keras_repnet.apps.training`), and writes
`OUTPUT_DIR/runs/<run>/result.json`: the final training accuracy, the
validation accuracy of every epoch and the test accuracy, measured once at
the end. Each method's peak learning rates are picked from its grid in
`LEARNING_RATES` by final validation accuracy (seed 0). Stages, in this
order, most informative first:

1. `core`: the grids of repnet and ft-last (MobileNetV2 1.0) on every set.
2. `seeds`: repnet, ft-last and ft-full (once its grid has run: a rerun of
   the protocol) again at their picked rates from seeds 1 and 2 (the grid's
   seed 0 is the third): mean +- std.
3. `baselines`: the grids of tinytl, mobiletl and bn-only.
4. `ft-full`: the grid of full fine-tuning.
5. `long`: repnet, ft-last, ft-full and tinytl at their picked rates with 3x the
   epochs on the far-domain sets: has each reached its plateau?
6. `small`: the grids of repnet and ft-last on MobileNetV2 0.35.
7. `fewshot`: 10 and 50 labelled images per class, repnet against ft-last,
   at their picked rates, on the far-domain sets.
8. `batch8`: repnet at `build()`'s recipe and at its picked rates, and
   ft-last at its picked rate, at batch 8 on the far-domain sets.
9. `ablations`: the other Rep-Net connector modes on the first set.
10. `mask`: `repnet-mask` (Rep-Net + a learned binary mask per backbone
    kernel, the paper's Table 4) at repnet's picked rates on the far-domain
    sets, for the protocol's epochs and 3x as many, at its defaults and at
    `MASK_VARIANTS` (a lower start; the options before the scores'
    warm-up), with its sparsity and inference multiply-adds (at 224 px, the
    learned masks on the same backbone).
11. `mask-options`: `repnet-mask` with other options (`MASK_OPTIONS`:
    constant initial scores, other initial scores, channel masks, a warm-up
    of the scores' rate) on the first far-domain set.
12. `memory`: each method's measured training-step peak at batch 8 and
    224 px (`keras_repnet.memory.measure`), for the plot.

Validation is used for every choice; the test split (the dataset's own, or a
seeded 20% held out before anything else) only for the reported numbers.
Rerunning skips finished runs and resumes an interrupted one from its last
epoch, so a long run can be stopped and started again. After each run the
report is rewritten: `results.json`, `results.md` (the README's table, copied
in by `bench/readme.py`) and `accuracy_vs_memory.png`.
"""

import functools
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
from absl import app
from absl import flags
from common import SHARED_ASSETS

STAGES = (
    "core",
    "seeds",
    "baselines",
    "ft-full",
    "long",
    "small",
    "fewshot",
    "batch8",
    "ablations",
    "mask",
    "mask-options",
    "memory",
)

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "results/accuracy", "Where runs and the report go."
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Input side in pixels.")
# The protocol's epochs (the flag's default) and label smoothing.
EPOCHS = 6
LABEL_SMOOTHING = 0.1
_EPOCHS = flags.DEFINE_integer("epochs", EPOCHS, "Training epochs of every run.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Examples per step.")
_TRAIN_EXAMPLES = flags.DEFINE_integer(
    "train_examples",
    3000,
    "Cap on the training (and validation) examples of each set.",
)
_STAGES = flags.DEFINE_list(
    "stages",
    list(STAGES),
    "Stages to run, in this order.",
)
_SETS = flags.DEFINE_list(
    "sets", None, "Datasets to run (default: all of `SETS`)."
)
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Only rewrite the report from finished runs."
)

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
BACKBONES = {
    "MobileNetV2": (
        "MobileNetV2",
        WEIGHTS / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    "MobileNetV2-0.35": (
        "MobileNetV2-0.35",
        WEIGHTS / "mobilenet_v2_0.35_224_no_top.weights.h5",
    ),
}
METHODS = ("repnet", "ft-last", "ft-full", "bn-only", "tinytl", "mobiletl")
GRID_STAGES = {
    "core": ("MobileNetV2", ("repnet", "ft-last")),
    "ft-full": ("MobileNetV2", ("ft-full",)),
    "baselines": ("MobileNetV2", ("tinytl", "mobiletl", "bn-only")),
    "small": ("MobileNetV2-0.35", ("repnet", "ft-last")),
}
SMALL_BACKBONE_METHODS = ("repnet", "ft-last")
SEEDED_METHODS = ("repnet", "ft-last", "ft-full")
# Trained 3x longer in the `long` stage: the seeded methods and the strongest
# cheap baseline.
LONG_METHODS = (*SEEDED_METHODS, "tinytl")
SEEDS = (0, 1, 2)
# `build()`'s documented recipe (side, head), tried as is at batch 8.
REPNET_RECIPE = (1e-2, 1e-3)
SMALL_BATCH = 8
# The `long` stage trains this many times the protocol's epochs.
LONG_EPOCHS_FACTOR = 3
SHOTS = (10, 50)
ABLATIONS = (
    "repnet-no-shifts", "repnet-dual", "repnet-down", "repnet-none", "repnet-all"
)
MASK_METHOD = "repnet-mask"
# The options `repnet-mask` ran with before the warm-up.
MASK_BEFORE_WARMUP = {"mask_initial_score": 0.1, "mask_warmup": 0.0}
# The `mask` stage runs these beside the defaults on every far set: tag ->
# options (a lower start that drops more, and the options before the
# warm-up).
MASK_VARIANTS = {
    "start0.02": {"mask_initial_score": 0.02},
    "before": MASK_BEFORE_WARMUP,
}
# `mask-options` stage: tag -> options of repnet-mask: `build_method`
# arguments, and the optimizer's `OPTIMIZER_OPTIONS`.
MASK_OPTIONS = {
    "constant": {**MASK_BEFORE_WARMUP, "mask_by_magnitude": False},
    "score0.02": {
        "mask_initial_score": 0.02, "mask_by_magnitude": False, "mask_warmup": 0.0
    },
    "score0.5": {
        "mask_initial_score": 0.5, "mask_by_magnitude": False, "mask_warmup": 0.0
    },
    "channel": {
        **MASK_BEFORE_WARMUP, "backbone_mask": "channel", "mask_by_magnitude": False
    },
    "magnitude0.05": {"mask_initial_score": 0.05, "mask_warmup": 0.0},
    "magnitude0.07": {"mask_initial_score": 0.07, "mask_warmup": 0.0},
    "warmup0.2": {"mask_warmup": 0.2, "mask_initial_score": 0.1},
    "warmup0.2-magnitude0.05": {"mask_warmup": 0.2, "mask_initial_score": 0.05},
    "warmup0.2-magnitude0.02": {"mask_warmup": 0.2, "mask_initial_score": 0.02},
    "warmup0.2-magnitude0.01": {"mask_warmup": 0.2, "mask_initial_score": 0.01},
}
# Options of a run that go to `make_optimizer`, not to `build_method`.
OPTIMIZER_OPTIONS = ("mask_warmup",)
# Where the `mask` stage counts inference multiply-adds (the paper's size).
MASK_COST_SIZE = 224
# Peak learning rates (side, head) tried per method; "side" is every
# trainable variable outside the head (ft-last has none). Each grid holds
# the method's default (`keras_repnet.methods.default_learning_rates`); the
# cheaper baselines also get Rep-Net's recipe (side 1e-2, head 1e-3). The
# grids of repnet and ft-last were widened where the first runs picked an
# edge (ft-last's lowest, repnet's highest rate).
LEARNING_RATES = {
    "repnet": ((3e-3, 1e-3), (1e-2, 1e-3), (3e-2, 3e-3), (1e-1, 1e-2)),
    "ft-last": ((1e-3, 1e-3), (3e-3, 3e-3), (1e-2, 1e-2), (3e-2, 3e-2)),
    "ft-full": ((1e-4, 1e-3), (3e-4, 3e-3), (1e-3, 1e-3)),
    "bn-only": ((1e-3, 1e-2), (1e-2, 1e-3)),
    "tinytl": ((1e-3, 1e-2), (1e-2, 1e-3)),
    "mobiletl": ((1e-3, 1e-2), (1e-2, 1e-3)),
}


# === Data ===


@functools.lru_cache(maxsize=2)
def _dataset(name, image_size):
    """`(train, test)` arrays of a set: its own test split, or a 20% split
    drawn with a fixed seed (the same for every run)."""
    import keras_repnet

    train, test, _ = SETS[name]
    if train == test:  # an idx folder with its t10k files
        train, test = keras_repnet.data.load_idx_folder(DATASETS / train)
        return train, test
    if test is not None:
        return (
            _read_folder(DATASETS / train, image_size),
            _read_folder(DATASETS / test, image_size),
        )
    x, y = _read_folder(DATASETS / train, image_size)
    order = np.random.default_rng(0).permutation(len(x))
    cut = len(x) // 5
    test_index, rest = order[:cut], order[cut:]
    return (x[rest], y[rest]), (x[test_index], y[test_index])


def _read_folder(folder, image_size):
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        str(folder),
        image_size=(image_size, image_size),
        batch_size=256,
        shuffle=False,
        verbose=False,
    )
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return (
        np.concatenate(images).round().astype(np.uint8),
        np.concatenate(labels),
    )


def _few_shot(source, shots, seed):
    """The first `shots` examples of each class, in a seeded order."""
    x, y = source
    order = np.random.default_rng(seed).permutation(len(x))
    keep = np.concatenate(
        [order[y[order] == label][:shots] for label in np.unique(y)]
    )
    return x[keep], y[keep]


# === Runs ===


def few_shot_epochs(set_name, shots, settings):
    """Epochs that give a few-shot run the optimizer steps of the protocol's
    run on the whole set: a phone that holds 10 images per class trains them
    for many epochs, and a side network that starts from zero needs steps."""
    train, _ = _dataset(set_name, settings["image_size"])
    num_classes = len(np.unique(train[1]))
    batch = settings["batch_size"]
    whole = min(settings["train_examples"], int(0.8 * len(train[0])))
    steps = settings["epochs"] * math.ceil(whole / batch)
    return math.ceil(steps / math.ceil(shots * num_classes / batch))


def _run_name(set_name, backbone, method, rates, seed, shots, batch_size, epochs):
    rate = "_".join(f"{r:g}" for r in rates)
    shot = f"_{shots}shot" if shots else ""
    batch = f"_b{batch_size}" if batch_size else ""
    longer = f"_e{epochs}" if epochs else ""
    return f"{set_name}_{backbone}_{method}_lr{rate}_s{seed}{shot}{batch}{longer}"


def _backbone_model(backbone, image_size):
    import keras

    name, weights = BACKBONES[backbone]
    if name == "MobileNetV2-0.35":
        model = keras.applications.MobileNetV2(
            alpha=0.35,
            include_top=False,
            weights=None,
            input_shape=(image_size, image_size, 3),
        )
        model.load_weights(str(weights))
        return model, None
    return name, str(weights)


def run(
    set_name, backbone, method, rates, seed, shots, settings,
    batch_size=None, epochs=None, options=None, tag=None,
):
    """Trains one run, or reads its result if it finished before.
    `batch_size` and `epochs` override the protocol's (the `batch8` and
    `long` stages); `options` are more `build_method` arguments (for
    `bench/recipe_search.py`, which keeps its runs apart, and for the
    `mask-options` stage, which names them with `tag`)."""
    import keras

    import keras_repnet
    from keras_repnet.apps import training

    name = _run_name(
        set_name, backbone, method, rates, seed, shots, batch_size, epochs
    ) + (f"_{tag}" if tag else "")
    batch = batch_size or settings["batch_size"]
    num_epochs = epochs or settings["epochs"]
    folder = Path(settings["output_dir"]) / "runs" / name
    result_path = folder / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    print(f"== {name}", flush=True)
    started = time.time()
    size = settings["image_size"]
    keras.backend.clear_session()
    source, test = _dataset(set_name, size)
    validation_split = 0.2
    if shots:
        source, validation_split = _few_shot(source, shots, seed), 0.0
    keras.utils.set_random_seed(seed)
    splits = keras_repnet.data.load(
        source,
        test=test,
        image_size=size,
        batch_size=batch,
        validation_split=validation_split,
        seed=seed,
        preprocess=keras_repnet.data.preprocessing_for("MobileNetV2"),
        max_examples=None if shots else settings["train_examples"],
    )
    backbone_model, weights = _backbone_model(backbone, size)
    build_options = _build_options(options)
    model = keras_repnet.build_method(
        method,
        backbone_model,
        splits.num_classes,
        input_shape=(size, size, 3),
        weights=weights,
        **build_options,
    )
    steps = num_epochs * math.ceil(splits.num_train / batch)
    optimizer_options = {
        key: value
        for key, value in (options or {}).items()
        if key in OPTIMIZER_OPTIONS
    }
    training.compile_model(
        model,
        training.make_optimizer(*rates, steps, **optimizer_options),
        settings["label_smoothing"],
    )
    history = training.fit_resumable(
        model,
        training.one_hot(splits.train, splits.num_classes),
        training.one_hot(splits.validation, splits.num_classes)
        if splits.num_validation
        else None,
        epochs=num_epochs,
        output_dir=str(folder),
        verbose=2,
    )
    _, test_accuracy = model.evaluate(
        training.one_hot(splits.test, splits.num_classes), verbose=0
    )
    result = {
        "set": set_name,
        "backbone": backbone,
        "method": method,
        "learning_rates": list(rates),
        "seed": seed,
        "shots": shots,
        "batch_size": batch_size,
        "epochs": epochs,
        "steps": steps,
        "num_train": splits.num_train,
        "num_validation": splits.num_validation,
        "num_test": splits.num_test,
        "final_train_accuracy": history["accuracy"][-1],
        "validation_accuracy": history.get("val_accuracy", []),
        "test_accuracy": float(test_accuracy),
        "trainable_params": keras_repnet.parameter_counts(model)["trainable"],
        "wall_time_s": round(time.time() - started, 1),
    }
    if options:
        result["options"] = options
    if method == MASK_METHOD:
        result["mask"] = _mask_report(
            model, backbone, splits.num_classes, build_options
        )
    _write_json(result, result_path)
    return result


def _build_options(options):
    """A run's options that are `build_method` arguments."""
    return {
        key: value
        for key, value in (options or {}).items()
        if key not in OPTIMIZER_OPTIONS
    }


def _mask_report(model, backbone, num_classes, options):
    """A masked model's sparsity and multiply-adds, at `MASK_COST_SIZE` px:
    the learned scores copied into the same model built at that size
    (scores do not depend on the input size)."""
    import keras_repnet
    from keras_repnet.core import flops
    from keras_repnet.core import masks

    backbone_model, _ = _backbone_model(backbone, MASK_COST_SIZE)
    large = keras_repnet.build_method(
        MASK_METHOD,
        backbone_model,
        num_classes,
        input_shape=(MASK_COST_SIZE, MASK_COST_SIZE, 3),
        weights=None,
        **options,
    )
    scores = {l.name: l.score for l in model.layers if masks.is_masked(l)}
    for layer in large.layers:
        if masks.is_masked(layer):
            layer.score.assign(scores[layer.name])
    cost = flops.multiply_adds(large)
    report = masks.sparsity(large)
    return {
        "granularity": cost["granularity"],
        "sparsity": report["sparsity"],
        "masked_weights": report["masked_weights"],
        "dropped_weights": report["dropped_weights"],
        "image_size_of_cost": MASK_COST_SIZE,
        "multiply_adds": cost["dense"],
        "masked_multiply_adds": cost["masked"],
    }


def _write_json(value, path):
    from keras_repnet.apps import files

    files.write_json(value, str(path))


# === Stages ===


def _final_validation(result):
    return result["validation_accuracy"][-1]


def _protocol_runs(results):
    """The runs at the protocol's batch size and epochs (not the `batch8`
    and `long` stages')."""
    return [
        r
        for r in results
        if not r.get("batch_size") and not r.get("epochs") and not r.get("options")
    ]


def best_rates(results, set_name, backbone, method):
    """The grid's learning rates with the best final validation accuracy."""
    candidates = [
        r
        for r in _protocol_runs(results)
        if (r["set"], r["backbone"], r["method"], r["seed"], r["shots"])
        == (set_name, backbone, method, 0, None)
    ]
    if not candidates:
        return None
    return tuple(max(candidates, key=_final_validation)["learning_rates"])


def stage_runs(stage, sets, results):
    """Yields the `(set, backbone, method, rates, seed, shots)` of a stage."""
    for set_name in sets:
        far = SETS[set_name][2]
        if stage in GRID_STAGES:
            backbone, methods = GRID_STAGES[stage]
            for method in methods:
                for rates in LEARNING_RATES[method]:
                    yield set_name, backbone, method, rates, 0, None
        elif stage == "seeds":
            for method in SEEDED_METHODS:
                rates = best_rates(results, set_name, "MobileNetV2", method)
                for seed in SEEDS[1:]:
                    if rates:
                        yield set_name, "MobileNetV2", method, rates, seed, None
        elif stage == "fewshot" and far:
            for shots in SHOTS:
                for method in SMALL_BACKBONE_METHODS:
                    rates = best_rates(results, set_name, "MobileNetV2", method)
                    if rates:
                        yield set_name, "MobileNetV2", method, rates, 0, shots
        elif stage == "long" and far:
            for method in LONG_METHODS:
                rates = best_rates(results, set_name, "MobileNetV2", method)
                if rates:
                    yield set_name, "MobileNetV2", method, rates, 0, None
        elif stage == "batch8" and far:
            picked = {
                method: best_rates(results, set_name, "MobileNetV2", method)
                for method in SMALL_BACKBONE_METHODS
            }
            specs = {("repnet", REPNET_RECIPE), *picked.items()}
            for method, rates in sorted(specs, key=str):
                if rates:
                    yield set_name, "MobileNetV2", method, rates, 0, None
        elif stage == "mask" and far:
            rates = best_rates(results, set_name, "MobileNetV2", "repnet")
            # The protocol's epochs and 3x longer (beside the `long` stage's
            # repnet), at the defaults and at `MASK_VARIANTS`.
            for epochs in (None, LONG_EPOCHS_FACTOR * EPOCHS):
                for tag, options in ((None, None), *MASK_VARIANTS.items()):
                    if rates:
                        yield set_name, "MobileNetV2", MASK_METHOD, rates, 0, None, {
                            "epochs": epochs, "options": options, "tag": tag
                        }
        elif stage == "mask-options" and set_name == next(
            (name for name in sets if SETS[name][2]), None
        ):
            rates = best_rates(results, set_name, "MobileNetV2", "repnet")
            for tag, options in MASK_OPTIONS.items():
                if rates:
                    yield set_name, "MobileNetV2", MASK_METHOD, rates, 0, None, {
                        "options": options,
                        "tag": tag,
                    }
        elif stage == "ablations" and set_name == sets[0]:
            rates = best_rates(results, set_name, "MobileNetV2", "repnet")
            for method in ABLATIONS:
                if rates:
                    yield set_name, "MobileNetV2", method, rates, 0, None


def measure_memory(output_dir):
    """Measured step peaks (MB, batch 8, 224 px) of each method and of
    Rep-Net without its backbone shifts."""
    from keras_repnet import memory

    path = Path(output_dir) / "memory.json"
    measured = json.loads(path.read_text()) if path.exists() else {}
    for backbone in ("MobileNetV2",):
        for method in (
            memory.INFERENCE, *METHODS, "repnet-no-shifts", MASK_METHOD
        ):
            key = f"{backbone}/{method}"
            if key not in measured:
                print(f"== memory {key}", flush=True)
                peak = memory.measure(method, backbone, image_size=224, batch_size=8)
                measured[key] = round(peak.peak_bytes / 1e6, 1)
                _write_json(measured, path)
    return measured


# === Report ===


def _mean_std(values):
    if not values:
        return None
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std, len(values)


def summarize(results, sets, settings):
    """One row per (set, backbone, method) at the picked rates; the few-shot
    runs; the batch-8 runs."""
    small_batch = [r for r in results if r.get("batch_size")]
    longer = [
        r
        for r in results
        if r.get("epochs") and not r["shots"] and r["method"] != MASK_METHOD
    ]
    few_shot = []
    for r in results:
        if r["shots"]:
            epochs = r["epochs"] or settings["epochs"]
            batches = math.ceil(r["num_train"] / settings["batch_size"])
            few_shot.append(
                {
                    "set": r["set"],
                    "method": r["method"],
                    "shots": r["shots"],
                    "epochs": epochs,
                    "steps": r.get("steps") or epochs * batches,
                    "test": r["test_accuracy"],
                    "train": r["final_train_accuracy"],
                }
            )
    masked = [r for r in results if r["method"] == MASK_METHOD]
    everything = results
    results = _protocol_runs(results)
    rows = []
    for set_name in sets:
        for backbone in BACKBONES:
            for method in (*METHODS, *ABLATIONS):
                rates = best_rates(results, set_name, backbone, method) or next(
                    (
                        tuple(r["learning_rates"])
                        for r in results
                        if (r["set"], r["backbone"], r["method"])
                        == (set_name, backbone, method)
                    ),
                    None,
                )
                runs = [
                    r
                    for r in results
                    if (r["set"], r["backbone"], r["method"], r["shots"])
                    == (set_name, backbone, method, None)
                    and tuple(r["learning_rates"]) == rates
                ]
                if not runs:
                    continue
                rows.append(
                    {
                        "set": set_name,
                        "backbone": backbone,
                        "method": method,
                        "learning_rates": list(rates),
                        "test": _mean_std([r["test_accuracy"] for r in runs]),
                        "train": _mean_std(
                            [r["final_train_accuracy"] for r in runs]
                        ),
                        "validation": _mean_std(
                            [_final_validation(r) for r in runs]
                        ),
                        "trainable_params": runs[0]["trainable_params"],
                    }
                )
    return rows, few_shot, small_batch, longer, _mask_rows(masked, everything)


def _mask_rows(masked, results):
    """Each `repnet-mask` run beside repnet's run at the same rates, seed,
    epochs and batch size."""
    rows = []
    same = ("set", "backbone", "seed", "shots", "learning_rates", "epochs",
            "batch_size")
    for r in masked:
        plain = next(
            (
                p
                for p in results
                if p["method"] == "repnet"
                and not p.get("options")
                and all(p.get(key) == r.get(key) for key in same)
            ),
            None,
        )
        rows.append(
            {
                "set": r["set"],
                "learning_rates": r["learning_rates"],
                "options": ", ".join(
                    f"{k}={v}" for k, v in (r.get("options") or {}).items()
                ) or "defaults",
                "epochs": r.get("epochs") or EPOCHS,
                "test": r["test_accuracy"],
                "repnet_test": plain and plain["test_accuracy"],
                **r["mask"],
            }
        )
    return rows


def _cell(stat):
    if stat is None:
        return "-"
    mean, std, count = stat
    if count == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} +- {std:.3f} ({count})"


def _extra_runs_table(title, runs, extra_columns):
    """A markdown table of runs outside the protocol's settings."""
    header = ["set", "method", *extra_columns, "lr (side, head)", "test", "final train"]
    lines = [
        "",
        title,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in sorted(runs, key=lambda r: (r["set"], r["method"], r["learning_rates"])):
        cells = [
            r["set"],
            r["method"],
            *(str(r[c]) for c in extra_columns),
            f"{r['learning_rates'][0]:g}, {r['learning_rates'][1]:g}",
            f"{r['test_accuracy']:.3f}",
            f"{r['final_train_accuracy']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(rows, few_shot, small_batch, longer, masked, measured, settings):
    lines = [
        f"Test accuracy at {settings['image_size']} px, {settings['epochs']} "
        f"epochs, batch {settings['batch_size']}, at most "
        f"{settings['train_examples']} training images per set; mean +- std "
        "(number of seeds). Learning rates (side, head) picked on validation. "
        "Memory: measured step peak, MobileNetV2 224 px batch 8 (MB).",
        "",
        "| set | backbone | method | test | final train | lr (side, head) "
        "| trainable params | memory MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        memory_mb = measured.get(f"{row['backbone']}/{row['method']}", "-")
        lines.append(
            f"| {row['set']} | {row['backbone']} | {row['method']} | "
            f"{_cell(row['test'])} | {_cell(row['train'])} | "
            f"{row['learning_rates'][0]:g}, {row['learning_rates'][1]:g} | "
            f"{row['trainable_params']:,} | {memory_mb} |"
        )
    if longer:
        lines += _extra_runs_table(
            f"{LONG_EPOCHS_FACTOR}x the epochs, MobileNetV2, seed 0 (the "
            "`long` stage at the picked rates; other rates are round 2 of "
            "`bench/recipe_search.py`):",
            longer,
            ("epochs",),
        )
    if small_batch:
        lines += _extra_runs_table(
            f"Batch {SMALL_BATCH} (as on a phone), MobileNetV2, seed 0, same "
            "epochs (4x the steps):",
            small_batch,
            (),
        )
    if masked:
        lines += [
            "",
            f"Rep-Net + a learned binary mask per backbone kernel "
            f"(`{MASK_METHOD}`, the `mask` stages), MobileNetV2, seed 0, "
            "against `repnet` at the same rates and seed. Multiply-adds per "
            f"image at {MASK_COST_SIZE} px with the learned masks. Training "
            f"memory (measured step peak, 224 px batch 8): {MASK_METHOD} "
            f"{measured.get('MobileNetV2/' + MASK_METHOD, '-')} MB, repnet "
            f"{measured.get('MobileNetV2/repnet', '-')} MB.",
            "",
            "| set | lr (side, head) | options | epochs | test | repnet test "
            "| sparsity | M multiply-adds (dense -> masked) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in sorted(
            masked, key=lambda r: (r["set"], r["epochs"], r["options"])
        ):
            repnet = row["repnet_test"]
            lines.append(
                f"| {row['set']} | {row['learning_rates'][0]:g}, "
                f"{row['learning_rates'][1]:g} | {row['options']} | "
                f"{row['epochs']} | "
                f"{row['test']:.3f} | "
                f"{'-' if repnet is None else format(repnet, '.3f')} | "
                f"{row['sparsity']:.1%} | {row['multiply_adds'] / 1e6:.1f} -> "
                f"{row['masked_multiply_adds'] / 1e6:.1f} |"
            )
    if few_shot:
        lines += [
            "",
            "Few-shot (labelled images per class), MobileNetV2, seed 0, at the "
            "protocol's epochs and at the optimizer steps of a run on the "
            "whole set:",
            "",
            "| set | shots | method | epochs | steps | test | final train |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in sorted(
            few_shot,
            key=lambda r: (r["set"], r["shots"], r["steps"], r["method"]),
        ):
            lines.append(
                f"| {row['set']} | {row['shots']} | {row['method']} | "
                f"{row['epochs']} | {row['steps']} | {row['test']:.3f} | "
                f"{row['train']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def plot(rows, measured, path):
    import matplotlib

    matplotlib.use("Agg")  # writes a file; no display needed
    from matplotlib import pyplot as plt
    from matplotlib import ticker

    sets = sorted({r["set"] for r in rows})
    figure, axes = plt.subplots(
        1, len(sets), figsize=(4 * len(sets), 3.5), squeeze=False
    )
    for axis, set_name in zip(axes[0], sets):
        for row in rows:
            key = f"{row['backbone']}/{row['method']}"
            if row["set"] != set_name or key not in measured:
                continue
            mean, std, _ = row["test"]
            axis.errorbar(measured[key], mean, yerr=std, fmt="o")
            axis.annotate(row["method"], (measured[key], mean), fontsize=7)
        memories = [
            measured[f"{r['backbone']}/{r['method']}"]
            for r in rows
            if r["set"] == set_name and f"{r['backbone']}/{r['method']}" in measured
        ]
        if memories and max(memories) > 3 * min(memories):
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(ticker.ScalarFormatter())
            axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_title(set_name)
        axis.set_xlabel("measured training memory, MB (224 px, batch 8)")
        axis.set_ylabel("test accuracy")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def report(output_dir, sets, settings):
    runs_dir = Path(output_dir) / "runs"
    results = [
        json.loads(p.read_text())
        for p in sorted(runs_dir.glob("*/result.json"))
    ]
    memory_path = Path(output_dir) / "memory.json"
    measured = json.loads(memory_path.read_text()) if memory_path.exists() else {}
    rows, few_shot, small_batch, longer, masked = summarize(
        results, sets, settings
    )
    _write_json(
        {
            "settings": settings,
            "summary": rows,
            "few_shot": few_shot,
            "batch_8": [
                {k: r[k] for k in ("set", "method", "learning_rates", "test_accuracy")}
                for r in small_batch
            ],
            "mask": masked,
            "memory_mb": measured,
            "runs": results,
        },
        Path(output_dir) / "results.json",
    )
    text = markdown(
        rows, few_shot, small_batch, longer, masked, measured, settings
    )
    (Path(output_dir) / "results.md").write_text(text)
    if rows and measured:
        plot(rows, measured, Path(output_dir) / "accuracy_vs_memory.png")
    return results


def main(argv):
    del argv
    sets = _SETS.value or list(SETS)
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise app.UsageError(f"Unknown sets {unknown}. Known: {list(SETS)}.")
    settings = {
        "output_dir": _OUTPUT_DIR.value,
        "image_size": _IMAGE_SIZE.value,
        "epochs": _EPOCHS.value,
        "batch_size": _BATCH_SIZE.value,
        "train_examples": _TRAIN_EXAMPLES.value,
        "label_smoothing": LABEL_SMOOTHING,
    }
    os.makedirs(settings["output_dir"], exist_ok=True)
    results = report(settings["output_dir"], sets, settings)
    if _REPORT_ONLY.value:
        return
    unknown = sorted(set(_STAGES.value) - set(STAGES))
    if unknown:
        raise app.UsageError(f"Unknown stages {unknown}. Known: {STAGES}.")
    for stage in _STAGES.value:
        if stage == "memory":
            measure_memory(settings["output_dir"])
        else:
            overrides = {
                "batch8": {"batch_size": SMALL_BATCH},
                "long": {"epochs": LONG_EPOCHS_FACTOR * settings["epochs"]},
            }.get(stage, {})
            for spec in list(stage_runs(stage, sets, results)):
                if stage == "fewshot":
                    overrides = {
                        "epochs": few_shot_epochs(spec[0], spec[5], settings)
                    }
                if len(spec) == 7:  # Options of the run.
                    spec, overrides = spec[:6], spec[6]
                run(*spec, settings=settings, **overrides)
                results = report(settings["output_dir"], sets, settings)
    report(settings["output_dir"], sets, settings)


if __name__ == "__main__":
    app.run(main)
