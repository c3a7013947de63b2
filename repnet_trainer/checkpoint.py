"""Checkpoints: every weight of a model and the training state, in an `.npz`.

A checkpoint is an ordinary `.npz` (`numpy.load` reads it): one array per
weight, named as in "get_weights", plus `META_KEY`, a uint8 array holding
UTF-8 JSON with `format`, `epoch` (finished epochs), `step` (steps done in the
next one) and more. The Android sample reads and writes the same files.
"""

import json
import zipfile
import zlib

import numpy as np

from repnet_trainer import files
from repnet_trainer._text import few
from repnet_trainer.formats import CHECKPOINT_FORMAT
from repnet_trainer.formats import META_KEY


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: corrupt, or another model's."""


def save_checkpoint(path, weights, state):
    """Writes `weights` and `state` to `path` atomically.

    The `.npz` goes to a temporary file in the same folder, is synced to disk,
    read back and checked, and only then replaces `path` (`files.atomic_path`):
    a crash at any moment leaves either the old or the new checkpoint.

    Args:
        path: str or path-like. The checkpoint, an `.npz` file.
        weights: dict of name to numpy array, from `get_weights`.
        state: JSON-serializable dict, stored as the entry `meta.json`.

    Raises:
        ValueError: when a weight is not finite (training diverged); `path`
            is left as it was.
    """
    bad = [
        name
        for name, value in weights.items()
        if np.issubdtype(np.asarray(value).dtype, np.floating)
        and not np.all(np.isfinite(value))
    ]
    if bad:
        raise ValueError(
            f"Not saving a checkpoint with non-finite weights ({few(bad)}): "
            f"training diverged. The last good checkpoint at {path} is kept. "
            "Export again with a lower learning rate."
        )
    meta = {"format": CHECKPOINT_FORMAT, **state}
    arrays = {
        **weights,
        META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8),
    }
    with files.atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            np.savez(f, **arrays)
        read_back, _ = load_checkpoint(temporary)
        if read_back.keys() != weights.keys() or not all(
            np.array_equal(read_back[name], weights[name]) for name in weights
        ):
            raise CheckpointError(
                f"The checkpoint written to {temporary} reads back wrong: "
                f"{path} is kept. Check the disk."
            )


def load_checkpoint(path):
    """Reads a checkpoint written by `save_checkpoint` or the Android sample.

    Args:
        path: str or path-like.

    Returns:
        `(weights, meta)`: dict of name to numpy array, and the stored dict.

    Raises:
        CheckpointError: when the file is truncated, corrupt or not a
            checkpoint. The file is left as it is.
    """
    advice = (
        "It was left untouched. Delete it (or pass another --checkpoint) to "
        "start over."
    )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        raise CheckpointError(
            f"The checkpoint {path} is truncated or corrupt ({error}). {advice}"
        ) from None
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    except (KeyError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a keras-repnet checkpoint (no readable "
            f"{META_KEY}: {error!r}). {advice}"
        ) from None
    received = meta.get("format") if isinstance(meta, dict) else meta
    if received != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"Expected a checkpoint of format {CHECKPOINT_FORMAT!r}. Received: "
            f"format={received!r} in {path}. {advice}"
        )
    return arrays, meta


def resume_state(meta, run, steps_per_epoch, *, path, log=print):
    """The training state to continue from, given a checkpoint's `meta.json`.

    Checkpoints move between this trainer and the Android sample in both
    directions, and neither side requires the fields that only the other
    writes. `epoch` and `step` are required. The Android sample writes only
    `format`, `epoch` and `step`; for the rest:

    - `seed`, `validation_split`, `num_examples` (the run's settings): when
      recorded they must equal this run's (the split and the order depend on
      them); when missing, this run's (the command line's) are taken and
      recorded from now on.
    - `loss_sum`, `loss_steps` (the running loss of the unfinished epoch):
      when missing, the epoch's loss is averaged over the steps run after
      resuming. A `loss_sum` without `loss_steps` (written before that field
      existed) counts all `step` steps.
    - `history` (one record per finished epoch): when missing, `[]`.

    Every other field is kept as it is and written back with the next save.

    Args:
        meta: dict. The checkpoint's `meta.json`, from `load_checkpoint`.
        run: dict. This run's `seed`, `validation_split` and `num_examples`.
        steps_per_epoch: int. Training steps per epoch with this data.
        path: str. The checkpoint, for messages.
        log: callable that prints one line.

    Raises:
        CheckpointError: when `epoch` or `step` is missing or invalid, or the
            checkpoint was written with other settings or data.
    """
    advice = "Delete it (or pass another --checkpoint) to start over."
    for key, limit in (("epoch", None), ("step", steps_per_epoch)):
        value = meta.get(key)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < 0
            or (limit is not None and value > limit)
        ):
            bound = "" if limit is None else f" and at most {limit}"
            raise CheckpointError(
                f"The meta.json of {path} needs `{key}` as an integer >= 0"
                f"{bound} (`epoch`: finished epochs, `step`: steps done in "
                f"the next one, of {steps_per_epoch} per epoch with this "
                f"data and batch size). Received: {key}={value!r}. {advice}"
            )
    if not isinstance(meta.get("history", []), list):
        raise CheckpointError(
            f"The meta.json of {path} needs `history` as a list of epoch "
            f"records. Received: history={meta['history']!r}. {advice}"
        )
    changed = {
        k: (meta[k], v) for k, v in run.items() if k in meta and meta[k] != v
    }
    if changed:
        raise CheckpointError(
            f"{path} was written by a run with other data or settings (saved, "
            f"now): {changed}. Resume with the same ones so that the split and "
            "the order match, or pass another --checkpoint to start over."
        )
    unrecorded = [k for k in run if k not in meta]
    if unrecorded:
        taken = ", ".join(f"{k}={run[k]}" for k in unrecorded)
        log(
            f"{path} does not record {', '.join(unrecorded)} (the Android "
            f"sample writes only epoch and step): using this run's {taken}."
        )
    state = {**run, "history": [], **meta}
    if "loss_sum" not in meta:
        state.update(loss_sum=0.0, loss_steps=0)
    else:
        state.setdefault("loss_steps", meta["step"])
    return state


def saved_position(path):
    """`(epoch, step)` of the checkpoint at `path`, or `None` when there is
    none or it cannot be read. Reads only its `meta.json`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data[META_KEY].tobytes().decode())
        return int(meta["epoch"]), int(meta["step"])
    except Exception:  # Only for a message: any failure means "unknown".
        return None
