"""Runs that survive interruptions: `fit_resumable` and a run's folder.

A run folder holds `backup/` (the model and optimizer after the last
finished epoch, `keras.callbacks.BackupAndRestore`), `history.csv` (every
epoch's metrics), `run.json` (the run's settings, written when it starts)
and, once finished, `model.keras` and `results.json`.
"""

import csv
import json
import os
import shutil
import signal
import threading

import keras

BACKUP = "backup"
HISTORY = "history.csv"
MODEL = "model.keras"
RESULTS = "results.json"
SETTINGS = "run.json"


# What `keras.callbacks.CSVLogger` writes for a metric an epoch lacks.
_MISSING = "NA"


def fit_resumable(
    model,
    train,
    validation,
    *,
    epochs,
    output_dir,
    callbacks=(),
    verbose="auto",
    keep_backup=True,
    log=print,
) -> dict:
    """`model.fit` that resumes: a backup every epoch in `output_dir/backup`
    (`keras.callbacks.BackupAndRestore`, the model and optimizer state;
    with `keep_backup`, kept after the last epoch so that a longer run can
    continue) and every epoch's metrics in `output_dir/history.csv`, also
    across a resume. A resume is announced with `log`. Returns the history
    as `read_history` does."""
    os.makedirs(output_dir, exist_ok=True)
    log_path = os.path.join(output_dir, HISTORY)
    done = finished_epochs(output_dir)
    if done:
        log(
            f"Resuming {output_dir} at epoch {done + 1} of {epochs}: epochs "
            f"1-{done} were trained before."
        )
    elif os.path.exists(log_path):
        os.remove(log_path)  # A new run, not a resumed one.
    interrupts = _InterruptAtBatchEnd()
    try:
        model.fit(
            train,
            validation_data=validation,
            epochs=epochs,
            shuffle=False,  # The training pipeline shuffles.
            callbacks=[
                interrupts,
                keras.callbacks.BackupAndRestore(
                    os.path.join(output_dir, BACKUP),
                    delete_checkpoint=not keep_backup,
                ),
                keras.callbacks.CSVLogger(log_path, append=True),
                *(callbacks or []),
            ],
            verbose=verbose,
        )
    finally:
        interrupts.restore()
    return read_history(log_path)


class _InterruptAtBatchEnd(keras.callbacks.Callback):
    """Ctrl-C during `fit` stops it at the next batch's end (a second one
    at once), never while the backup is being written: an interrupted run
    always leaves a backup it can resume from."""

    def __init__(self):
        super().__init__()
        self.requested = False
        self._previous = None

    def on_train_begin(self, logs=None):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum, frame):
        self.requested = True
        self.restore()

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_train_batch_end(self, batch, logs=None):
        if self.requested:
            raise KeyboardInterrupt

    on_epoch_begin = on_train_batch_end


def finished_epochs(output_dir) -> int:
    """How many epochs the backup in `output_dir` holds (0 without one)."""
    path = os.path.join(output_dir, BACKUP, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def clear(output_dir) -> None:
    """Removes what a run wrote to `output_dir` (for `overwrite`)."""
    for name in (BACKUP, HISTORY, RESULTS, SETTINGS, MODEL, "history.png"):
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def interrupted_message(output_dir) -> str:
    """One line on what an interrupted run in `output_dir` saved."""
    done = finished_epochs(output_dir)
    if not done:
        return (
            f"Interrupted before the first epoch ended: nothing was saved in "
            f"{output_dir}. Run the same command to start again."
        )
    return (
        f"Interrupted. {os.path.join(output_dir, BACKUP)} holds the model "
        f"after epoch {done}: run the same command to resume from there."
    )


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
