"""The comparison harness behind `keras-repnet compare`.

`compare()` trains several transfer methods (`keras_repnet.methods`) on the
same data, split, seed, image size, epochs, batch size and learning-rate
schedule, each method at the peak rates of its recipe
(`methods.recipe_for`), and writes a table, a JSON file and two
plots. Each method's result is written as soon as it finishes, so a rerun
skips finished methods and resumes an interrupted one from its last epoch.
"""

import json
import os
import statistics
import time

import keras

from keras_repnet import methods as methods_lib
from keras_repnet.apps import files
from keras_repnet.apps import resumable
from keras_repnet.apps import training
from keras_repnet.apps.reports import MEMORY_BATCH_SIZE
from keras_repnet.apps.reports import PAPER_IMAGE_SIZE
from keras_repnet.apps.reports import markdown
from keras_repnet.apps.reports import plot_curves
from keras_repnet.apps.reports import plot_pareto
from keras_repnet.apps.reports import summary
from keras_repnet.core import backbones
from keras_repnet.core import flops
from keras_repnet.core.plan import count_params
from keras_repnet.core.recipe import REPNET

_RESULT_FILE = "result.json"


def compare(
    data,
    *,
    test_data=None,
    backbone: str = "MobileNetV2",
    weights: str | None = "imagenet",
    methods: list | tuple | None = None,
    output_dir: str = "runs/compare",
    max_examples: int | None = None,
    measure: bool = False,
    learning_rates: dict | None = None,
    strict_images: bool = False,
    verbose="auto",
    **changes,
) -> dict:
    """Trains every method on the same data and writes a comparison.

    Writes to `output_dir`: `results.json` and `results.md` (per method: best
    and final validation accuracy, trainable parameters, analytic training
    memory at batch 8 at the run's resolution and at 224 px, the measured
    step peak with `measure=True`, median step time), `pareto.png`
    (validation accuracy against training memory) and `curves.png`
    (validation accuracy per epoch, as the paper's Fig. 4). Each method
    trains in `output_dir/<method>/`, which keeps its `history.csv`, a
    backup while it trains, and `result.json` once done. Rerunning with the
    same `output_dir` and settings skips finished methods and resumes an
    interrupted one from its last finished epoch; other settings are
    refused.

    Every method trains with its own recipe (`keras_repnet.methods.
    recipe_for`: its peak learning rates; `learning_rates` overrides them)
    and the same run: data, split, seed, data order, image size, epochs,
    batch size, label smoothing and schedule (`changes` set them for every
    method). Memory columns need `keras_repnet.memory`; without it they stay
    empty.

    Args:
        data: the dataset (see `keras_repnet.data.load`).
        test_data: a separate test set, in any form `data` takes, evaluated
            once per method at the end. Defaults to `None`: the data's own
            test split, if any.
        backbone: str. A `keras.applications` model name.
        weights: `"imagenet"`, `None` or a weights file for the backbone.
        methods: list of str, or one comma-separated str. Names from
            `keras_repnet.methods.METHODS`. Defaults to all of them.
        output_dir: str. Where results go.
        max_examples: int. Cap on the examples of each split (quick runs).
        measure: bool. Also measure each method's step peak (batch 8, the
            run's resolution) in a fresh process.
        learning_rates: dict. Method name to `(side, head)` peak learning
            rates, overriding the recipes'.
        strict_images: bool. Stop at an image that cannot be decoded instead
            of skipping it (see `keras_repnet.data.load`).
        verbose: Keras `fit` verbosity (progress bars).
        **changes: recipe fields every method's run takes, e.g.
            `image_size=96`, `epochs=3` (`None` values are ignored).

    Returns:
        The dict written to `results.json`.
    """
    methods = _check_methods(methods)
    run = _run_fields(REPNET.replace(**changes))
    settings = {
        "backbone": backbone,
        "weights": weights,
        "data": training.as_given(data),
        "test_data": training.as_given(test_data),
        **run,
        "max_examples": max_examples,
    }
    _check_settings(output_dir, settings)
    rows = []
    for index, method in enumerate(methods, start=1):
        prefix = f"[{index}/{len(methods)}] {method}"
        recipe = _recipe(method, run, learning_rates)
        rates = (recipe.side_learning_rate, recipe.head_learning_rate)
        row = _load_result(output_dir, method, settings, rates)
        if row is not None:
            print(f"{prefix}: done before, skipped ({summary(row)})")
        else:
            print(
                f"{prefix}: training {recipe.epochs} epochs "
                f"({methods_lib.get_method(method).description}; peak "
                f"learning rates side {rates[0]:g}, head {rates[1]:g})"
            )
            row = _run_method(
                method, data, test_data, settings, recipe, output_dir,
                measure, verbose, strict_images,
            )
            print(f"{prefix}: {summary(row)}")
        rows.append(row)
    results = {
        "settings": settings,
        "methods": rows,
        "versions": training.versions(),
    }
    files.write_json(results, os.path.join(output_dir, "results.json"))
    files.write_text(markdown(results), os.path.join(output_dir, "results.md"))
    plot_pareto(rows, os.path.join(output_dir, "pareto.png"), settings)
    plot_curves(rows, os.path.join(output_dir, "curves.png"), settings)
    return results


# The recipe fields every method of a comparison shares.
RUN_FIELDS = (
    "image_size",
    "epochs",
    "batch_size",
    "seed",
    "validation_split",
    "label_smoothing",
    "min_crop_area",
    "schedule",
)


def _run_fields(recipe):
    return {name: getattr(recipe, name) for name in RUN_FIELDS}


def _recipe(method, run, overrides):
    """The method's recipe with the comparison's run, and its rates
    overridden where asked."""
    recipe = methods_lib.recipe_for(method).replace(**run)
    if overrides and method in overrides:
        side, head = overrides[method]
        recipe = recipe.replace(
            side_learning_rate=float(side), head_learning_rate=float(head)
        )
    return recipe


# === Checks ===


def _check_methods(methods):
    if isinstance(methods, str):  # "repnet,ft-last", as on the command line
        methods = [name.strip() for name in methods.split(",") if name.strip()]
    methods = list(methods_lib.METHODS if methods is None else methods)
    unknown = [m for m in methods if m not in methods_lib.METHODS]
    if unknown or not methods:
        raise ValueError(
            f"Unknown or no methods: {unknown or methods}. Use names from: "
            f"{', '.join(methods_lib.METHODS)}."
        )
    if len(set(methods)) != len(methods):
        raise ValueError(f"Methods are listed twice. Received: {methods}")
    return methods


def _check_settings(output_dir, settings):
    path = os.path.join(output_dir, "settings.json")
    if os.path.exists(path):
        saved = _read_json(path)
        if saved != settings:
            changed = sorted(
                k for k in {**saved, **settings} if saved.get(k) != settings.get(k)
            )
            raise ValueError(
                f"{output_dir!r} holds a comparison with other settings "
                f"({', '.join(f'{k}: {saved.get(k)!r}' for k in changed)}). "
                f"Received: {', '.join(f'{k}={settings.get(k)!r}' for k in changed)}. "
                "Use another output folder, or the same settings to resume."
            )
    else:
        files.write_json(settings, path)


def _load_result(output_dir, method, settings, rates):
    path = os.path.join(output_dir, method, _RESULT_FILE)
    if not os.path.exists(path):
        return None
    row = _read_json(path)
    if row.get("learning_rates") != list(rates):
        raise ValueError(
            f"{path} was trained with learning rates {row.get('learning_rates')}"
            f", not {list(rates)}. Delete it to retrain {method!r}, or use "
            "another output folder."
        )
    return row


# === One method ===


class _StepTimer(keras.callbacks.Callback):
    """Wall time of each training step, the first one (tracing) excluded."""

    def __init__(self):
        super().__init__()
        self.seconds, self._start, self._skip = [], None, True

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._skip:
            self._skip = False
        else:
            self.seconds.append(time.perf_counter() - self._start)


def _run_method(
    method, data, test_data, settings, recipe, output_dir, measure, verbose,
    strict_images,
):
    started = time.time()
    # Loaded again for every method so that all read the same shuffled and
    # augmented examples in the same order (a tf.data pipeline draws new
    # orders each time it is iterated).
    splits, model = training.prepare(
        data,
        test_data=test_data,
        backbone=settings["backbone"],
        weights=settings["weights"],
        method=method,
        recipe=recipe,
        max_examples=settings["max_examples"],
        strict_images=strict_images,
    )
    if not splits.num_validation:
        raise ValueError(
            "The comparison needs validation examples. Received "
            f"validation_split={recipe.validation_split} on data with "
            "no test split: use a validation_split above 0."
        )
    steps_per_epoch = -(-splits.num_train // recipe.batch_size)
    model.recipe.compile(model, recipe.epochs * steps_per_epoch)
    timer = _StepTimer()
    history = resumable.fit_resumable(
        model,
        splits.train,
        splits.validation,
        epochs=recipe.epochs,
        output_dir=os.path.join(output_dir, method),
        callbacks=[timer],
        verbose=verbose,
        keep_backup=False,  # A finished method is skipped by its result.
    )
    accuracy = history["val_accuracy"]
    test_accuracy = None
    if splits.num_test:
        _, test_accuracy = model.evaluate(splits.test, verbose=0)
    row = {
        "method": method,
        "description": methods_lib.get_method(method).description,
        "best_validation_accuracy": max(accuracy),
        "final_validation_accuracy": accuracy[-1],
        "final_train_accuracy": history["accuracy"][-1],
        "test_accuracy": None if test_accuracy is None else float(test_accuracy),
        "trainable_params": count_params(model.trainable_weights),
        "frozen_params": count_params(model.non_trainable_weights),
        **_inference_cost(model),
        "learning_rates": [recipe.side_learning_rate, recipe.head_learning_rate],
        "memory": _memory(method, model, settings, splits.num_classes),
        "measured": (
            _measured(method, settings, splits.num_classes) if measure else None
        ),
        "median_step_ms": (
            round(1000 * statistics.median(timer.seconds), 1)
            if timer.seconds
            else None
        ),
        "num_train": splits.num_train,
        "num_validation": splits.num_validation,
        "num_test": splits.num_test,
        "history": history,
        "wall_time_s": round(time.time() - started, 1),
    }
    files.write_json(row, os.path.join(output_dir, method, _RESULT_FILE))
    return row


def _inference_cost(model):
    """Multiply-adds per image (masked weights skipped) and the share of
    the backbone's weights that the masks drop (`None` without masks)."""
    cost = flops.inference_cost(model)
    return {
        "multiply_adds": cost["masked_multiply_adds"],
        "mask_sparsity": cost["sparsity"],
        "mask_granularity": cost["granularity"],
    }


# === Memory ===



def _memory_api():
    """`(profile, measure)` from `keras_repnet.memory`, each `None` while
    that module (or the function) is not there."""
    try:
        from keras_repnet import memory
    except ImportError:
        return None, None
    return getattr(memory, "profile", None), getattr(memory, "measure", None)


def _memory(method, model, settings, num_classes):
    """Analytic memory at batch 8, at the run's size and at 224 px."""
    profile, _ = _memory_api()
    if profile is None:
        return None
    size = settings["image_size"]
    memory = {}
    for resolution in dict.fromkeys((size, PAPER_IMAGE_SIZE)):
        try:
            if resolution != size:
                # Memory depends on the structure only: no weights needed.
                with backbones.random_weights_on_purpose():
                    model = methods_lib.build_method(
                        method,
                        settings["backbone"],
                        num_classes,
                        input_shape=(resolution, resolution, 3),
                        weights=None,
                    )
            counted = profile(model, batch_size=MEMORY_BATCH_SIZE)
        except Exception as error:  # An accounting gap must not lose a run.
            print(f"  memory profile of {method} at {resolution} px failed: {error}")
            memory[str(resolution)] = {"error": str(error)}
            continue
        memory[str(resolution)] = {
            "ideal_mb": round(counted.ideal_total_bytes / 1e6, 2),
            "ours_mb": round(counted.ours_total_bytes / 1e6, 2),
            "profile": counted.to_dict(),
        }
    return memory


def _measured(method, settings, num_classes):
    _, measure = _memory_api()
    if measure is None:
        return None
    try:
        result = measure(
            method,
            settings["backbone"],
            image_size=settings["image_size"],
            batch_size=MEMORY_BATCH_SIZE,
            num_classes=num_classes,
        )
    except Exception as error:  # Measuring must not lose a finished run.
        print(f"  measuring {method} failed: {error}")
        return {"error": str(error)}
    return {
        "step_peak_mb": round(result.peak_mb, 2),
        "step_seconds": result.step_seconds,
        "batch_size": MEMORY_BATCH_SIZE,
        "image_size": settings["image_size"],
    }


# === Files ===


def _read_json(path):
    with open(path) as f:
        return json.load(f)

