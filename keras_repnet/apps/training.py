"""The training job behind `keras-repnet train`."""

import csv
import os
import platform
import time
import warnings

import keras
import tensorflow as tf

from keras_repnet import data as data_lib
from keras_repnet.apps import files
from keras_repnet.apps import plotting
from keras_repnet.core.plan import parameter_counts
from keras_repnet.core.recipe import Recipe
from keras_repnet.core.summary import describe
from keras_repnet.methods import build_method
from keras_repnet.methods import get_method
from keras_repnet.version import __version__


# Fewer optimizer steps than this draw a warning. A Rep-Net starts as the
# frozen backbone (its side modules add zero) and needs steps to learn: with
# 10 sign-language images per class, 24 steps reached 0.23 test accuracy and
# 252 steps 0.73 (`bench/accuracy.py`'s few-shot runs, results/accuracy).
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
    callbacks: list | None = None,
    verbose="auto",
    **changes,
) -> dict:
    """Trains a classifier with a method's recipe and writes the results.

    Writes to `output_dir` `model.keras` (which keeps the recipe it trained
    with), `results.json` and `history.png`, each atomically, and
    `history.csv` epoch by epoch. Validation accuracy is reported every
    epoch; the test split (`test_data`, or the data's own) is evaluated once,
    at the end. An interrupted run resumes from its last finished epoch when
    started again with the same `output_dir`
    (`keras.callbacks.BackupAndRestore`).

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
        callbacks: list. More `keras.callbacks.Callback`s for `fit`.
        verbose: Keras `fit` verbosity.
        **changes: recipe fields to change, e.g. `epochs=3` or
            `side_learning_rate=3e-3` (`None` values are ignored).

    Returns:
        The dict written to `results.json`.
    """
    recipe = (recipe or get_method(method).recipe).replace(**changes)
    started = time.time()
    keras.utils.set_random_seed(recipe.seed)
    splits = data_lib.load(
        data,
        test=test_data,
        recipe=recipe,
        preprocess=data_lib.preprocessing_for(backbone),
        max_examples=max_examples,
    )
    size = recipe.image_size
    model = build_method(
        method,
        backbone,
        splits.num_classes,
        input_shape=(size, size, 3),
        weights=weights,
        recipe=recipe,
    )
    describe(model)
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
    recipe.compile(model, total_steps)
    history = fit_resumable(
        model,
        splits.train,
        splits.validation,
        epochs=recipe.epochs,
        output_dir=output_dir,
        callbacks=callbacks,
        verbose=verbose,
    )
    _, accuracy = model.evaluate(splits.validation, verbose=0)
    test_accuracy = None
    if splits.num_test:
        _, test_accuracy = model.evaluate(splits.test, verbose=0)
    files.save_model(model, os.path.join(output_dir, "model.keras"))
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
        "settings": {
            "backbone": backbone,
            "weights": weights,
            "method": method,
            "data": as_given(data),
            "test_data": as_given(test_data),
            "max_examples": max_examples,
            "recipe": recipe.to_dict(),
        },
        "versions": versions(),
    }
    files.write_json(results, os.path.join(output_dir, "results.json"))
    plotting.plot_history(
        results["history"],
        os.path.join(output_dir, "history.png"),
        title=f"{method} on {backbone}, {size} px",
    )
    return results


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


# What `keras.callbacks.CSVLogger` writes for a metric an epoch lacks.
_MISSING = "NA"


def fit_resumable(
    model, train, validation, *, epochs, output_dir, callbacks=(), verbose="auto"
) -> dict:
    """`model.fit` that resumes: a backup every epoch in `output_dir/backup`
    (`keras.callbacks.BackupAndRestore`) and every epoch's metrics in
    `output_dir/history.csv`, also across a resume. Returns the history as
    `read_history` does."""
    os.makedirs(output_dir, exist_ok=True)
    backup_dir = os.path.join(output_dir, "backup")
    log_path = os.path.join(output_dir, "history.csv")
    if not os.path.exists(backup_dir) and os.path.exists(log_path):
        os.remove(log_path)  # A new run, not a resumed one.
    model.fit(
        train,
        validation_data=validation,
        epochs=epochs,
        shuffle=False,  # The training pipeline shuffles.
        callbacks=[
            keras.callbacks.BackupAndRestore(backup_dir),
            keras.callbacks.CSVLogger(log_path, append=True),
            *(callbacks or []),
        ],
        verbose=verbose,
    )
    return read_history(log_path)


def read_history(path) -> dict:
    """Per-epoch metrics from a `CSVLogger` file, one value per epoch (the
    last row wins when a resumed run logged an epoch twice). Columns the
    logger filled with "NA" (e.g. `val_*` of a fit without validation data)
    are left out."""
    with open(path, newline="") as f:
        rows = {int(row.pop("epoch")): row for row in csv.DictReader(f)}
    epochs = [rows[e] for e in sorted(rows)]
    names = [
        name
        for name in (epochs[0] if epochs else [])
        if all(row[name] != _MISSING for row in epochs)
    ]
    return {name: [float(row[name]) for row in epochs] for name in names}
