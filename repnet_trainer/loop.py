"""The training loop: train, validate, checkpoint, resume.

Training runs the model's "train" signature one batch at a time, at a
learning rate that decays from the peak to zero along a cosine over the run's
steps (as `keras-repnet train` does); validation runs "infer". After every
epoch (and every `save_every` steps) every weight of "get_weights" goes to a
checkpoint, written atomically; `fit` with the same arguments resumes from it,
through "set_weights", at the saved epoch and step with the same data order.
"""

import math
import numbers
import os
import time

import numpy as np

from repnet_trainer import split
from repnet_trainer.checkpoint import load_checkpoint
from repnet_trainer.checkpoint import resume_state
from repnet_trainer.checkpoint import save_checkpoint


def cosine_learning_rate(peak, step, total_steps):
    """The learning rate of step `step` (0-based) of `total_steps`: a cosine
    decay from `peak` to zero, as `keras.optimizers.schedules.CosineDecay`
    (which `keras-repnet train` uses) computes it."""
    progress = min(step, total_steps) / max(1, total_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_order(train_indices, epoch, seed):
    """The training order of `epoch`: the same on every run with `seed`."""
    return np.random.default_rng([seed, epoch]).permutation(train_indices)


def fit(
    trainer,
    images,
    labels,
    *,
    checkpoint_path,
    epochs=5,
    learning_rate=None,
    validation_split=0.2,
    seed=1337,
    kept=None,
    max_steps=None,
    save_every=None,
    log_every=10,
    log=print,
):
    """Trains, validates, checkpoints and resumes; see the module docstring.

    The split is `split.split_indices` over the whole listing the examples
    come from (see `kept`), the same as the Keras side's. The last partial
    batch of each epoch is dropped (the exported "train" signature takes
    exactly `batch_size` images); as the order changes every epoch, every
    example is still seen. Validation uses every held-out example.

    Args:
        trainer: a `RepNetTrainer`.
        images: uint8 or float32 `(N, height, width, 3)`, see `check_examples`.
        labels: int32 `(N,)`.
        checkpoint_path: str or path-like. Where the checkpoint is written;
            resumed from when it exists.
        epochs: int. Total epochs, counting those of a resumed run. The
            learning rate decays to zero over them (`cosine_learning_rate`).
        learning_rate: float or `None`. Peak learning rate. Defaults to the
            export's (`trainer.learning_rate`).
        validation_split: float. Share of the examples held out, in `[0, 1)`.
        seed: int. Seed of the split and of each epoch's order.
        kept: bool array or `None`. One entry per listed example, `True` for
            the `N` that were loaded (`load_image_folder`'s last output): the
            split is drawn over the listing, then the others are dropped.
            Defaults to all `N`.
        max_steps: int or `None`. Stop (with a checkpoint) after this many
            steps of this run; running again continues.
        save_every: int or `None`. Also checkpoint every this many steps.
        log_every: int. Print a progress line every this many steps; `0`:
            epoch lines only.
        log: callable that prints one line.

    Returns:
        The state dict stored in the checkpoint (`epoch`, `step`, `history`
        and the fields of `resume_state`).
    """
    checkpoint_path = os.fspath(checkpoint_path)
    _check_counts(epochs=epochs, max_steps=max_steps, save_every=save_every)
    _check_counts(log_every=log_every, minimum=0)
    peak = trainer.learning_rate if learning_rate is None else learning_rate
    if not peak > 0:
        raise ValueError(
            f"The learning rate must be positive. Received: {peak}"
        )
    kept = np.ones(len(labels), bool) if kept is None else np.asarray(kept)
    kept = kept.astype(bool)
    if len(images) != len(labels) or kept.sum() != len(labels):
        raise ValueError(
            f"Expected as many images as labels (and `True` entries in "
            f"`kept`). Received: {len(images)} images, {len(labels)} labels, "
            f"{kept.sum()} kept."
        )
    train_indices, validation_indices = split.split_kept(
        kept, validation_split, seed
    )
    batch_size = trainer.batch_size
    steps_per_epoch = len(train_indices) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"The model was exported for batches of {batch_size} images but "
            f"only {len(train_indices)} are left for training. Add examples, "
            "lower --validation-split, or export with a smaller batch_size."
        )
    run = {
        "seed": int(seed),
        "validation_split": float(validation_split),
        "num_examples": len(kept),
    }
    state = {"epoch": 0, "step": 0, "loss_sum": 0.0, "loss_steps": 0}
    state.update(history=[], **run)
    if os.path.exists(checkpoint_path):
        weights, meta = load_checkpoint(checkpoint_path)
        state = resume_state(
            meta, run, steps_per_epoch, path=checkpoint_path, log=log
        )
        trainer.check_weights(
            weights, source=f"The weights in {checkpoint_path}"
        )
        if state["epoch"] >= epochs:
            trained = (
                f"{epochs} of {epochs} epochs"
                if state["epoch"] == epochs
                else f"{state['epoch']} epochs (epochs={epochs})"
            )
            log(
                f"Already trained {trained}; the weights are in "
                f"{checkpoint_path}. Pass more --epochs to continue, or "
                "another --checkpoint to start over."
            )
            return state
        trainer.set_weights(weights)
        log(
            f"Resuming from {checkpoint_path} at epoch {state['epoch'] + 1} "
            f"of {epochs}, step {state['step']} of {steps_per_epoch}."
        )
    total_steps = epochs * steps_per_epoch
    steps_this_run, rate = 0, 0.0

    def stop(reason):
        log(
            f"Stopped after {steps_this_run} steps ({reason}); saved "
            f"{checkpoint_path}. Run again to continue."
        )
        return state

    while state["epoch"] < epochs:
        order = epoch_order(train_indices, state["epoch"], seed)
        started, first_step = time.perf_counter(), state["step"]
        for step in range(state["step"], steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            global_step = state["epoch"] * steps_per_epoch + step
            loss = trainer.train_step(
                images[batch],
                labels[batch],
                cosine_learning_rate(peak, global_step, total_steps),
            )
            if not np.isfinite(loss):
                raise ValueError(
                    f"The loss became {loss} at epoch {state['epoch'] + 1} "
                    f"step {step + 1}: training diverged. The last good "
                    f"checkpoint at {checkpoint_path} is kept. Export again "
                    "with a lower learning rate."
                )
            state["step"] = step + 1
            state["loss_sum"] += loss
            state["loss_steps"] += 1
            steps_this_run += 1
            elapsed = time.perf_counter() - started
            rate = (step + 1 - first_step) * batch_size / elapsed
            if log_every and (step + 1) % log_every == 0:
                log(
                    f"epoch {state['epoch'] + 1}/{epochs} step "
                    f"{step + 1}/{steps_per_epoch} loss {loss:.4f} "
                    f"({rate:.1f} images/s)"
                )
            end_of_epoch = step + 1 == steps_per_epoch
            if max_steps and steps_this_run >= max_steps and not end_of_epoch:
                save_checkpoint(checkpoint_path, trainer.get_weights(), state)
                return stop("--max-steps")
            if save_every and steps_this_run % save_every == 0:
                save_checkpoint(checkpoint_path, trainer.get_weights(), state)
        record = {"epoch": state["epoch"] + 1}
        if state["loss_steps"]:
            # Every step of the epoch, or those since resuming a checkpoint
            # that did not record its running loss (the Android sample's).
            record["loss"] = state["loss_sum"] / state["loss_steps"]
        if len(validation_indices):
            metrics = trainer.evaluate(
                images[validation_indices], labels[validation_indices]
            )
            record.update(
                val_loss=metrics["loss"], val_accuracy=metrics["accuracy"]
            )
        state.update(
            epoch=state["epoch"] + 1,
            step=0,
            loss_sum=0.0,
            loss_steps=0,
            history=state["history"] + [record],
        )
        save_checkpoint(checkpoint_path, trainer.get_weights(), state)
        log(_epoch_line(record, epochs, rate))
        if max_steps and steps_this_run >= max_steps:
            if state["epoch"] < epochs:
                return stop("--max-steps")
    log(f"Done: {state['epoch']} epochs. Weights in {checkpoint_path}.")
    return state


def _check_counts(minimum=1, **counts):
    """Raises unless every count that is not `None` is an int >= `minimum`;
    `epochs` is always required."""
    for name, value in counts.items():
        if value is None and name != "epochs":
            continue
        if (
            not isinstance(value, numbers.Integral)
            or isinstance(value, bool)
            or value < minimum
        ):
            raise ValueError(
                f"`{name}` must be an integer >= {minimum}. Received: "
                f"{name}={value!r}"
            )


def _epoch_line(record, epochs, rate):
    line = f"epoch {record['epoch']}/{epochs}"
    if "loss" in record:
        line += f" loss {record['loss']:.4f}"
    if "val_loss" in record:
        line += (
            f" val_loss {record['val_loss']:.4f} "
            f"val_accuracy {record['val_accuracy']:.4f}"
        )
    return line + f" ({rate:.1f} images/s)"
