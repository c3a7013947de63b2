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
from keras_repnet.core import masks
from keras_repnet.core.builder import HEAD_NAME
from keras_repnet.core.builder import build
from keras_repnet.core.optimizers import MultiRateAdam
from keras_repnet.core.plan import describe
from keras_repnet.core.plan import parameter_counts
from keras_repnet.methods.registry import REPNET_LEARNING_RATES
from keras_repnet.version import __version__


def make_optimizer(
    side_learning_rate: float,
    head_learning_rate: float,
    total_steps: int,
    mask_learning_rate: float = masks.MASK_LEARNING_RATE,
    mask_warmup: float = masks.MASK_WARMUP,
) -> MultiRateAdam:
    """Adam with cosine decay to zero over `total_steps`; the head's rate is
    `head_learning_rate`, the scores of backbone masks (`repnet-mask`)
    `mask_learning_rate`, ramped up from 0 over the first `mask_warmup` of
    the steps, every other trainable variable's the side's."""
    for name, value in (
        ("side_learning_rate", side_learning_rate),
        ("head_learning_rate", head_learning_rate),
        ("mask_learning_rate", mask_learning_rate),
    ):
        if value <= 0:
            raise ValueError(f"`{name}` must be positive. Received: {value}")
    if not 0 <= mask_warmup < 1:
        raise ValueError(f"`mask_warmup` must be in [0, 1). Received: {mask_warmup}")
    schedule = keras.optimizers.schedules.CosineDecay(
        side_learning_rate, decay_steps=max(1, total_steps)
    )
    mask_multiplier = mask_learning_rate / side_learning_rate
    warmup_steps = round(mask_warmup * total_steps)
    if warmup_steps:
        # A linear ramp from 0 to the multiplier, then flat (alpha=1: no
        # decay of its own; the base schedule still decays).
        mask_multiplier = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=1,
            alpha=1.0,
            warmup_target=mask_multiplier,
            warmup_steps=warmup_steps,
        )
    return MultiRateAdam(
        schedule,
        lr_multipliers={
            HEAD_NAME: head_learning_rate / side_learning_rate,
            masks.SCORE_PATHS: mask_multiplier,
        },
    )


def compile_model(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    label_smoothing: float = 0.0,
) -> None:
    """Compiles a logits model for one-hot labels (see `one_hot`).

    XLA is off: on CPU it measured slower and used more memory.
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=False,
    )


def one_hot(dataset: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    """Maps integer labels to one-hot vectors (label smoothing needs them)."""

    def encode(images, labels):
        return images, tf.one_hot(labels, num_classes)

    return dataset.map(encode)

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
    output_dir: str = "runs/train",
    image_size: int = 224,
    epochs: int = 10,
    batch_size: int = 32,
    side_learning_rate: float = REPNET_LEARNING_RATES[0],
    head_learning_rate: float = REPNET_LEARNING_RATES[1],
    label_smoothing: float = 0.1,
    connect: str = "up",
    validation_split: float = 0.2,
    seed: int = 1337,
    max_examples: int | None = None,
    callbacks: list | None = None,
    verbose="auto",
) -> dict:
    """Trains a Rep-Net classifier and writes its results to `output_dir`.

    Writes `model.keras`, `results.json` and `history.png`, each atomically,
    and `history.csv` epoch by epoch. Validation accuracy is reported every
    epoch; the test split (`test_data`, or the data's own) is evaluated once,
    at the end. An interrupted run resumes from its last
    finished epoch when started again with the same `output_dir`
    (`keras.callbacks.BackupAndRestore`).

    Args:
        data: an image folder, `.npz` file, MNIST-format folder, `(x, y)`
            arrays or `"tfds:NAME"` (see `keras_repnet.data.load`).
        test_data: a separate test set, in any form `data` takes. Defaults
            to `None`: the data's own test split, if it has one.
        backbone: str. A `keras.applications` model name.
        weights: `"imagenet"`, `None` or a weights file path.
        output_dir: str. Where results go.
        image_size: int. Side of the square input images.
        epochs: int. Training epochs.
        batch_size: int. Examples per step.
        side_learning_rate: float. Peak learning rate of the Rep-Net
            modules. Defaults to 1e-2.
        head_learning_rate: float. Peak learning rate of the head. Defaults
            to 1e-3.
        label_smoothing: float. Label smoothing of the cross-entropy.
        connect: str. Connector mode (see `keras_repnet.build`). Defaults
            to `"up"`.
        validation_split: float. Share of the data held out for validation.
        seed: int. Seed of the split, the shuffling and the initialisation.
        max_examples: int. Cap on the examples used (for quick runs).
        callbacks: list. More `keras.callbacks.Callback`s for `fit`.
        verbose: Keras `fit` verbosity.

    Returns:
        The dict written to `results.json`.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(
            "`epochs` and `batch_size` must be at least 1. Received: "
            f"epochs={epochs}, batch_size={batch_size}"
        )
    started = time.time()
    keras.utils.set_random_seed(seed)
    splits = data_lib.load(
        data,
        test=test_data,
        image_size=image_size,
        batch_size=batch_size,
        validation_split=validation_split,
        seed=seed,
        preprocess=data_lib.preprocessing_for(backbone),
        max_examples=max_examples,
    )
    model = build(
        backbone,
        splits.num_classes,
        input_shape=(image_size, image_size, 3),
        weights=weights,
        connect=connect,
    )
    describe(model)
    steps_per_epoch = -(-splits.num_train // batch_size)
    if epochs * steps_per_epoch < MIN_STEPS:
        warnings.warn(
            f"Training for {epochs * steps_per_epoch} optimizer steps "
            f"({epochs} epochs of {steps_per_epoch}). Rep-Net's side network "
            f"starts from zero and needs more: with few images, raise "
            f"`epochs` to at least {-(-MIN_STEPS // steps_per_epoch)}.",
            stacklevel=2,
        )
    compile_model(
        model,
        make_optimizer(
            side_learning_rate, head_learning_rate, epochs * steps_per_epoch
        ),
        label_smoothing,
    )
    train_ds = one_hot(splits.train, splits.num_classes)
    validation_ds = one_hot(splits.validation, splits.num_classes)
    history = fit_resumable(
        model,
        train_ds,
        validation_ds,
        epochs=epochs,
        output_dir=output_dir,
        callbacks=callbacks,
        verbose=verbose,
    )
    _, accuracy = model.evaluate(validation_ds, verbose=0)
    test_accuracy = None
    if splits.num_test:
        _, test_accuracy = model.evaluate(
            one_hot(splits.test, splits.num_classes), verbose=0
        )
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
            "data": as_given(data),
            "test_data": as_given(test_data),
            "image_size": image_size,
            "epochs": epochs,
            "batch_size": batch_size,
            "side_learning_rate": side_learning_rate,
            "head_learning_rate": head_learning_rate,
            "label_smoothing": label_smoothing,
            "connect": connect,
            "validation_split": validation_split,
            "seed": seed,
            "max_examples": max_examples,
        },
        "versions": versions(),
    }
    files.write_json(results, os.path.join(output_dir, "results.json"))
    plotting.plot_history(
        results["history"],
        os.path.join(output_dir, "history.png"),
        title=f"Rep-Net ({connect}) on {backbone}, {image_size} px",
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
