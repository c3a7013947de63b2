"""The runs that chose `build()`'s defaults: one change at a time, CIFAR-10.

    python bench/recipe_search.py [--configs=NAME,...]

Each configuration trains MobileNetV2 (the offline ImageNet weights) on the
CIFAR-10 subset (`cifar10_32px/train`, a seeded 80/20 split, each split
capped at 3,000 images) at 64 px for 6 epochs, batch 32, seed 1337, label
smoothing 0.1, and evaluates the official test images once at the end. One
seed per configuration: differences of about a point are noise. Appends one
JSON line per configuration to `results/recipe_search/results.jsonl` (a rerun
skips the configurations already there) and rewrites `results.md`.

"before" is the defaults of then: dual connectors at 5 taps (from stride 2),
modules at full resolution as wide as their taps, side 1e-3 / head 1e-2,
random crops of 25-100% of the area.

Round 2 (`ROUND_2`, after the first protocol runs showed TinyTL ahead on
sign digits and Fashion-MNIST) starts from the defaults of then (`repnet-no-
shifts`: "up" connectors, 4 modules at half resolution, no backbone shifts)
and trains through `bench/accuracy.py`'s `run` at its settings (64 px, batch
32, at most 3,000 images, seed 0, side 3e-2 / head 3e-3: the rates the
protocol picked on the far sets), on sign digits unless a set is named, 6
epochs unless 18 are, writing `results/recipe_search/runs/<config>/`. A
configuration that is a run of the protocol (a method's defaults, label
smoothing 0.1) reads or makes that run in `results/accuracy/runs/`.
"""

import json
import time
from pathlib import Path

from absl import app
from absl import flags
from common import NO_SIDE_TOP
from common import MOBILENET_V2_WEIGHTS
from common import SHARED_ASSETS

_CONFIGS = flags.DEFINE_list("configs", None, "Configurations to run (default: all).")

CIFAR = SHARED_ASSETS / "datasets" / "cifar10_32px"
OUTPUT = Path("results/recipe_search")
BEFORE = {
    "method": "repnet-dual",
    "taps": "find_taps",
    "side_width": 1.0,
    "side_downscale": 1,
    "rates": (1e-3, 1e-2),
    "min_crop_area": 0.25,
}
# name -> (what changes against BEFORE, the changes), in the order tried.
CONFIGS = {
    "before": ("the defaults of then", {}),
    "lr-flipped": ("side 1e-2, head 1e-3", {"rates": (1e-2, 1e-3)}),
    "up": ("up connectors, side 1e-2, head 1e-3",
           {"method": "repnet", "rates": (1e-2, 1e-3)}),
    "ft-last": ("ft-last, 1e-2", {"method": "ft-last", "rates": (1e-2, 1e-2)}),
    "ft-full": ("ft-full, 1e-4 / head 1e-3",
                {"method": "ft-full", "rates": (1e-4, 1e-3)}),
    "tinytl": ("tinytl, side 1e-2, head 1e-3",
               {"method": "tinytl", "rates": (1e-2, 1e-3)}),
    "up-side-3e-3": ("up, side 3e-3", {"method": "repnet", "rates": (3e-3, 1e-3)}),
    "up-no-stride-2-tap": ("up, no stride-2 tap (select_taps)", {
        "method": "repnet", "rates": (1e-2, 1e-3), "taps": "select_taps"}),
    "up-half-resolution": ("up, modules at half resolution", {
        "method": "repnet", "rates": (1e-2, 1e-3), "side_downscale": 2}),
    "up-half-width": ("up, modules half as wide", {
        "method": "repnet", "rates": (1e-2, 1e-3), "side_width": 0.5}),
    "up-side-3e-2": ("up, side 3e-2", {"method": "repnet", "rates": (3e-2, 1e-3)}),
    "up-no-smoothing": ("up, no label smoothing", {
        "method": "repnet", "rates": (1e-2, 1e-3), "label_smoothing": 0.0}),
    "dual-no-stride-2-tap": ("dual, side 1e-2, head 1e-3, no stride-2 tap", {
        "rates": (1e-2, 1e-3), "taps": "select_taps"}),
    "up-head-3e-3": ("up, head 3e-3", {"method": "repnet", "rates": (1e-2, 3e-3)}),
    "up-crop-64": ("up, crops of 64-100% of the area", {
        "method": "repnet", "rates": (1e-2, 1e-3), "min_crop_area": 0.64}),
    "ft-full-crop-64": ("ft-full, crops of 64-100%", {
        "method": "ft-full", "rates": (1e-4, 1e-3), "min_crop_area": 0.64}),
    "ft-last-crop-64": ("ft-last, crops of 64-100%", {
        "method": "ft-last", "rates": (1e-2, 1e-2), "min_crop_area": 0.64}),
    "ft-full-bn-momentum": ("ft-full, batch-norm momentum 0.9 (0.999 in Keras)", {
        "method": "ft-full", "rates": (1e-4, 1e-3), "bn_momentum": 0.9}),
}


# name -> (what changes, set, method, build options, label smoothing, epochs).
ROUND_2 = {
    "sign-no-shifts": ("the defaults of then", "sign_digits",
                       "repnet-no-shifts", {}, 0.1, 6),
    "sign-full-resolution": ("modules at full resolution", "sign_digits",
                             "repnet-no-shifts", {"side_downscale": 1}, 0.1, 6),
    "sign-6-modules": ("6 modules", "sign_digits", "repnet-no-shifts",
                       {"num_modules": 6}, 0.1, 6),
    "sign-6-modules-full-resolution": (
        "6 modules at full resolution", "sign_digits", "repnet-no-shifts",
        {"num_modules": 6, "side_downscale": 1}, 0.1, 6),
    "sign-kernel-5": ("5x5 module convolutions", "sign_digits",
                      "repnet-no-shifts", {"side_kernel_size": 5}, 0.1, 6),
    "sign-no-smoothing": ("no label smoothing", "sign_digits",
                          "repnet-no-shifts", {}, 0.0, 6),
    "sign-dual": ("dual connectors", "sign_digits", "repnet-dual",
                  {"backbone_shifts": False}, 0.1, 6),
    "sign-shifts": ("backbone batch-norm shifts", "sign_digits", "repnet",
                    {}, 0.1, 6),
    "sign-dual-shifts": ("dual connectors and shifts", "sign_digits",
                         "repnet-dual", {"backbone_shifts": True}, 0.1, 6),
    "sign-no-shifts-18": ("the defaults of then, 18 epochs", "sign_digits",
                          "repnet-no-shifts", {}, 0.1, 18),
    "sign-6-modules-full-resolution-18": (
        "6 modules at full resolution, 18 epochs", "sign_digits",
        "repnet-no-shifts", {"num_modules": 6, "side_downscale": 1}, 0.1, 18),
    "sign-shifts-18": ("shifts, 18 epochs", "sign_digits", "repnet", {}, 0.1,
                       18),
    "fashion-no-shifts": ("the defaults of then, Fashion-MNIST",
                          "fashion_mnist", "repnet-no-shifts", {}, 0.1, 6),
    "fashion-shifts": ("shifts, Fashion-MNIST", "fashion_mnist", "repnet", {},
                       0.1, 6),
}
ROUND_2_RATES = (3e-2, 3e-3)
PROTOCOL_OUTPUT = "results/accuracy"


def run_round_2(name):
    import protocol
    import runs

    description, set_name, method, options, smoothing, epochs = ROUND_2[name]
    own = options or smoothing != keras_repnet_label_smoothing()
    if own:
        # Its own folder: the run's options change the recipe or the model.
        spec = protocol.Run(
            set_name, "MobileNetV2", method, ROUND_2_RATES,
            options=protocol.with_options(
                {**options, "label_smoothing": smoothing, "epochs": epochs}
            ),
        )
        output_dir = OUTPUT / "runs" / name
    else:
        spec = protocol.Run(
            set_name, "MobileNetV2", method, ROUND_2_RATES,
            epochs=epochs if epochs != protocol.EPOCHS else None,
        )
        output_dir = PROTOCOL_OUTPUT
    started = time.time()
    result = runs.run(spec, output_dir)
    return {
        "config": name,
        "description": description,
        "set": set_name,
        "method": method,
        "changes": {**options, "label_smoothing": smoothing, "epochs": epochs},
        "final_train_accuracy": result["final_train_accuracy"],
        "validation_accuracy": result["validation_accuracy"][-1],
        "test_accuracy": result["test_accuracy"],
        "trainable_params": result["trainable_params"],
        "wall_time_s": round(time.time() - started),
    }


def keras_repnet_label_smoothing():
    import keras_repnet

    return keras_repnet.Recipe().label_smoothing


def run(name, changes):
    import keras

    import keras_repnet
    config = {**BEFORE, "label_smoothing": 0.1, **changes}
    started = time.time()
    recipe = keras_repnet.Recipe(
        side_learning_rate=config["rates"][0],
        head_learning_rate=config["rates"][1],
        label_smoothing=config["label_smoothing"],
        min_crop_area=config["min_crop_area"],
        image_size=64,
        epochs=6,
        batch_size=32,
        seed=1337,
    )
    keras.utils.set_random_seed(recipe.seed)
    splits = keras_repnet.data.load(
        str(CIFAR / "train"),
        test=str(CIFAR / "test"),
        recipe=recipe,
        preprocess=keras_repnet.data.preprocessing_for("MobileNetV2"),
        max_examples=3000,
    )
    options = {}
    if config["method"].startswith("repnet"):
        backbone = keras_repnet.backbones.resolve(
            "MobileNetV2", (64, 64, 3), MOBILENET_V2_WEIGHTS
        )
        find = getattr(keras_repnet, config["taps"])
        options = {
            **NO_SIDE_TOP,
            "taps": [t.layer_name for t in find(backbone)],
            "side_width": config["side_width"],
            "side_downscale": config["side_downscale"],
        }
        weights = None
    else:
        backbone, weights = "MobileNetV2", MOBILENET_V2_WEIGHTS
    model = keras_repnet.build_method(
        config["method"],
        backbone,
        10,
        input_shape=(64, 64, 3),
        weights=weights,
        **options,
    )
    if "bn_momentum" in config:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = config["bn_momentum"]
    model.recipe.compile(model, recipe.epochs * -(-splits.num_train // recipe.batch_size))
    history = model.fit(
        splits.train,
        validation_data=splits.validation,
        epochs=recipe.epochs,
        verbose=2,
    ).history
    _, test = model.evaluate(splits.test, verbose=0)
    return {
        "config": name,
        "description": CONFIGS[name][0],
        "changes": {k: list(v) if isinstance(v, tuple) else v
                    for k, v in changes.items()},
        "final_train_accuracy": history["accuracy"][-1],
        "validation_accuracy": history["val_accuracy"][-1],
        "test_accuracy": float(test),
        "trainable_params": keras_repnet.parameter_counts(model)["trainable"],
        "wall_time_s": round(time.time() - started),
    }


def write_markdown(rows):
    first = [row for row in rows if row["config"] in CONFIGS]
    second = [row for row in rows if row["config"] in ROUND_2]
    lines = _table(first)
    if second:
        lines += ["", "Round 2 (sign digits unless named; see the docstring):", ""]
        lines += _table(second)
    (OUTPUT / "results.md").write_text("\n".join(lines) + "\n")


def _table(rows):
    lines = [
        "| configuration | what changes | test | validation | final train "
        "| trainable params |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['config']} | {row['description']} | "
            f"{row['test_accuracy']:.3f} | "
            f"{row['validation_accuracy']:.3f} | "
            f"{row['final_train_accuracy']:.3f} | {row['trainable_params']:,} |"
        )
    return lines


def main(argv):
    del argv
    known = [*CONFIGS, *ROUND_2]
    names = _CONFIGS.value or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise app.UsageError(f"Unknown configs {unknown}. Known: {known}.")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log = OUTPUT / "results.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {row["config"] for row in rows}
    for name in names:
        if name in done:
            continue
        row = run(name, CONFIGS[name][1]) if name in CONFIGS else run_round_2(name)
        rows.append(row)
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        write_markdown(rows)
    write_markdown(rows)


if __name__ == "__main__":
    app.run(main)
