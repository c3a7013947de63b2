"""The training job behind `keras-repnet train`."""

import json
import os
import platform
import time
import warnings

import keras
import tensorflow as tf

from keras_repnet import data as data_lib
from keras_repnet.apps import files
from keras_repnet.apps import plotting
from keras_repnet.apps import resumable
from keras_repnet.core.plan import parameter_counts
from keras_repnet.core.recipe import Recipe
from keras_repnet.core.summary import describe
from keras_repnet.methods import build_method
from keras_repnet.methods import get_method
from keras_repnet.version import __version__


def prepare(
    data,
    *,
    test_data,
    backbone,
    weights,
    method,
    recipe,
    max_examples,
    strict_images=False,
    model_options=None,
):
    """A run's data and model, seeded: `(splits, model)`.

    The global seed is set first, so that every method of a comparison
    reads the same shuffled and augmented examples in the same order and
    starts from the same initial weights.
    """
    keras.utils.set_random_seed(recipe.seed)
    splits = data_lib.load(
        data,
        test=test_data,
        recipe=recipe,
        preprocess=data_lib.preprocessing_for(backbone),
        max_examples=max_examples,
        strict_images=strict_images,
    )
    size = recipe.image_size
    model = build_method(
        method,
        backbone,
        splits.num_classes,
        input_shape=(size, size, 3),
        weights=weights,
        recipe=recipe,
        **(model_options or {}),
    )
    return splits, model


# Fewer optimizer steps than this draw a warning. A Rep-Net starts as the
# frozen backbone (its side modules add zero) and needs steps to learn (the
# few-shot runs of `bench/accuracy.py`, in docs/results.md).
MIN_STEPS = 250


def train(
    data,
    *,
    test_data=None,
    backbone: str = "MobileNetV2",
    weights: str | None = "imagenet",
    method: str = "repnet",
    output_dir: str = "runs/train",
    recipe: Recipe | None = None,
    max_examples: int | None = None,
    strict_images: bool = False,
    overwrite: bool = False,
    model_options: dict | None = None,
    callbacks: list | None = None,
    verbose="auto",
    log=print,
    **changes,
) -> dict:
    """Trains a classifier with a method's recipe and writes the results.

    Writes to `output_dir` `model.keras` (which keeps the recipe it trained
    with), `results.json` and `history.png`, each atomically, and
    `history.csv` epoch by epoch. Validation accuracy is reported every
    epoch; the test split (`test_data`, or the data's own) is evaluated once,
    at the end. `output_dir` is checked for writing before anything else.

    Started again with the same `output_dir` and settings, an interrupted
    run resumes from its last finished epoch (and says so); a finished run
    is left as it is and its results returned, unless `epochs` is larger
    (training continues to the new total, the schedule over the new total)
    or `overwrite=True`. Other settings are refused.

    Args:
        data: an image folder, `.npz` file, MNIST-format folder, `(x, y)`
            arrays or `"tfds:NAME"` (see `keras_repnet.data.load`).
        test_data: a separate test set, in any form `data` takes. Defaults
            to `None`: the data's own test split, if it has one.
        backbone: str. A `keras.applications` model name.
        weights: `"imagenet"`, `None` or a weights file path.
        method: str. A method of `keras_repnet.methods.METHODS`. Defaults
            to `"repnet"`.
        output_dir: str. Where results go.
        recipe: `keras_repnet.Recipe`. Defaults to the method's
            (`keras_repnet.methods.recipe_for`).
        max_examples: int. Cap on the examples used (for quick runs).
        strict_images: bool. Stop at an image that cannot be decoded instead
            of skipping it (see `keras_repnet.data.load`).
        overwrite: bool. Start again even if `output_dir` holds a run.
        model_options: dict. More arguments of the method's builder (for
            Rep-Net those of `keras_repnet.build`, e.g. `num_modules=6`).
            Defaults to `None`: the method's own.
        callbacks: list. More `keras.callbacks.Callback`s for `fit`.
        verbose: Keras `fit` verbosity.
        log: callable that prints one line. Defaults to `print`.
        **changes: recipe fields to change, e.g. `epochs=3` or
            `side_learning_rate=3e-3` (`None` values are ignored).

    Returns:
        The dict written to `results.json`.
    """
    recipe = (recipe or get_method(method).recipe).replace(**changes)
    settings = {
        "backbone": backbone,
        "weights": weights,
        "method": method,
        "data": as_given(data),
        "test_data": as_given(test_data),
        "max_examples": max_examples,
        "recipe": recipe.to_dict(),
    }
    if model_options:
        settings["model_options"] = model_options
    files.check_writable(
        os.path.join(output_dir, resumable.RESULTS), "output_dir"
    )
    finished = _previous_run(output_dir, settings, overwrite, log)
    if finished is not None:
        return finished
    files.write_json(settings, os.path.join(output_dir, resumable.SETTINGS))
    started = time.time()
    splits, model = prepare(
        data,
        test_data=test_data,
        backbone=backbone,
        weights=weights,
        method=method,
        recipe=recipe,
        max_examples=max_examples,
        strict_images=strict_images,
        model_options=model_options,
    )
    size = recipe.image_size
    describe(model, print_fn=log)
    steps_per_epoch = -(-splits.num_train // recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    if total_steps < MIN_STEPS:
        warnings.warn(
            f"Training for {total_steps} optimizer steps "
            f"({recipe.epochs} epochs of {steps_per_epoch}). Rep-Net's side "
            "network starts from zero and needs more: with few images, raise "
            f"`epochs` to at least {-(-MIN_STEPS // steps_per_epoch)}.",
            stacklevel=2,
        )
    model.recipe.compile(model, total_steps)
    history = resumable.fit_resumable(
        model,
        splits.train,
        splits.validation,
        epochs=recipe.epochs,
        output_dir=output_dir,
        callbacks=callbacks,
        verbose=verbose,
        log=log,
    )
    _, accuracy = model.evaluate(splits.validation, verbose=0)
    test_accuracy = None
    if splits.num_test:
        _, test_accuracy = model.evaluate(splits.test, verbose=0)
    files.save_model(model, os.path.join(output_dir, resumable.MODEL))
    results = {
        "validation_accuracy": float(accuracy),
        "best_validation_accuracy": max(history.get("val_accuracy", [accuracy])),
        "test_accuracy": None if test_accuracy is None else float(test_accuracy),
        "final_train_accuracy": history["accuracy"][-1],
        "parameters": parameter_counts(model),
        "class_names": splits.class_names,
        "num_train": splits.num_train,
        "num_validation": splits.num_validation,
        "num_test": splits.num_test,
        "history": history,
        "wall_time_s": round(time.time() - started, 1),
        "settings": settings,
        "versions": versions(),
    }
    files.write_json(results, os.path.join(output_dir, resumable.RESULTS))
    plotting.plot_history(
        results["history"],
        os.path.join(output_dir, "history.png"),
        title=f"{method} on {backbone}, {size} px",
    )
    return results


def _previous_run(output_dir, settings, overwrite, log):
    """What `output_dir` holds decides what `train` does: returns the saved
    results of a finished run to leave alone, or `None` to train (a new
    run, or one to resume or continue)."""
    if overwrite:
        resumable.clear(output_dir)
        return None
    path = os.path.join(output_dir, resumable.SETTINGS)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    epochs = settings["recipe"]["epochs"]
    changed = _changed(saved, settings)
    if changed:
        raise ValueError(
            f"{output_dir} holds a run with other settings ("
            + "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in changed)
            + "). Pass overwrite=True (--overwrite) to start again there, or "
            "another output folder."
        )
    done = resumable.finished_epochs(output_dir)
    results_path = os.path.join(output_dir, resumable.RESULTS)
    if os.path.exists(results_path) and done >= epochs:
        with open(results_path) as f:
            results = json.load(f)
        log(
            f"{output_dir} holds this run, finished ({done} epochs, "
            f"validation accuracy {results['validation_accuracy']:.4f}): left "
            "as it is. Pass more epochs to continue it, or overwrite=True "
            "(--overwrite) to train again."
        )
        return results
    return None


def _changed(saved, settings):
    """`(name, saved, now)` of every setting that differs, the epochs
    aside (more epochs continue a run)."""
    flat = lambda d: {  # noqa: E731
        **{k: v for k, v in d.items() if k != "recipe"},
        **{k: v for k, v in d.get("recipe", {}).items() if k != "epochs"},
    }
    before, now = flat(saved), flat(settings)
    return [
        (k, before.get(k), now.get(k))
        for k in sorted({**before, **now})
        if before.get(k) != now.get(k)
    ]


def as_given(data):
    """A data argument as the user gave it, for results files."""
    if data is None or isinstance(data, str):
        return data
    if isinstance(data, os.PathLike):
        return os.fspath(data)
    return "(arrays)"


def versions() -> dict:
    """The versions a result was produced with."""
    return {
        "keras_repnet": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }
