"""Trains an exported Rep-Net `.tflite` model with LiteRT alone, no TensorFlow.

    python tflite/repnet_trainer.py --model=model.tflite --data=photos/

The model and its sidecar `model.json` come from `keras_repnet.export_tflite`
(or `keras-repnet export`). This file needs only numpy and `ai_edge_litert`
(or the older `tflite_runtime`), plus Pillow to decode an image folder: it runs
where TensorFlow cannot be installed, as on a phone, and shows in Python what
`tflite/android/` does in Kotlin.

Training uses the model's "train" signature one batch at a time, at a
learning rate that decays from the export's peak to zero along a cosine over
the run's steps (as `keras-repnet train` does), validation its "infer"
signature. After every epoch (and every `--save-every` steps) all
the weights of "get_weights" go to a checkpoint `.npz`, written atomically;
running the same command again resumes from it, through "set_weights", at the
saved epoch and step with the same data order.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
import zipfile
import zlib

import numpy as np

MODEL_FORMAT = "keras-repnet-tflite/2"
CHECKPOINT_FORMAT = "keras-repnet-checkpoint/1"
# The checkpoint's own entry. A "." never occurs in a weight name.
META_KEY = "meta.json"
SIGNATURES = ("train", "infer", "get_weights", "set_weights")
# The image types `keras.utils.image_dataset_from_directory` reads.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: corrupt, or another model's."""


# === Model ===


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ImportError(
                "The trainer needs the LiteRT interpreter. Install it with "
                "`pip install ai-edge-litert` (or the older `tflite-runtime`)."
            ) from None
    return Interpreter


def default_metadata_path(model_path):
    """`model.tflite` -> `model.json`, the sidecar `export_tflite` writes."""
    return os.path.splitext(model_path)[0] + ".json"


def read_metadata(path):
    """Reads the sidecar JSON of an exported model and checks its format."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No sidecar metadata at {path}. `keras_repnet.export_tflite` "
            "writes it beside the `.tflite` file; copy it along or pass "
            "--metadata."
        )
    with open(path) as f:
        try:
            metadata = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"The sidecar {path} is not valid JSON ({error}). Export the "
                "model again."
            ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != MODEL_FORMAT:
        received = (
            metadata.get("format") if isinstance(metadata, dict) else metadata
        )
        raise ValueError(
            f"Expected a sidecar with format {MODEL_FORMAT!r}. Received: "
            f"format={received!r} in {path}"
        )
    return metadata


class RepNetTrainer:
    """Runs the signatures of an exported Rep-Net `.tflite` model.

    Example:

    ```python
    trainer = RepNetTrainer("model.tflite")
    loss = trainer.train_step(images, labels)  # exactly `batch_size` images,
    # at the peak learning rate unless `learning_rate=` is given
    probabilities = trainer.predict(images)
    np.savez("weights.npz", **trainer.get_weights())
    ```

    Args:
        model_path: str. The `.tflite` file written by `export_tflite`.
        metadata_path: str or `None`. Its sidecar JSON. Defaults to the model
            path with the suffix `.json`.
        num_threads: int. CPU threads of the interpreter. Defaults to `2`.
    """

    def __init__(self, model_path, metadata_path=None, num_threads=2):
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"No model at {model_path}.")
        metadata_path = metadata_path or default_metadata_path(model_path)
        self.metadata = read_metadata(metadata_path)
        try:
            interpreter = _interpreter_class()(
                model_path=model_path, num_threads=num_threads
            )
        except ValueError as error:
            raise ValueError(
                f"LiteRT cannot load {model_path}: {error}. Expected a "
                "`.tflite` file written by `keras_repnet.export_tflite`."
            ) from None
        missing = [
            s for s in SIGNATURES if s not in interpreter.get_signature_list()
        ]
        if missing:
            raise ValueError(
                f"{model_path} lacks the signatures {missing}. Received: "
                f"{sorted(interpreter.get_signature_list())}. Export the model "
                "with `keras_repnet.export_tflite`."
            )
        self._runners = {
            s: interpreter.get_signature_runner(s) for s in SIGNATURES
        }
        x = self._runners["train"].get_input_details()["x"]
        self.batch_size = int(x["shape"][0])
        self.image_size = (int(x["shape"][1]), int(x["shape"][2]))
        self.num_classes = int(self.metadata["num_classes"])
        # The peak of the side variables' schedule (the head's follows).
        self.learning_rate = float(self.metadata["learning_rate"])
        self.class_names = self.metadata.get("class_names")
        self.weight_specs = {
            name: (
                tuple(int(d) for d in details["shape"]),
                np.dtype(details["dtype"]),
            )
            for name, details in self._runners["set_weights"]
            .get_input_details()
            .items()
        }
        self._check_metadata(metadata_path)

    def _check_metadata(self, metadata_path):
        expected = {
            "batch_size": self.batch_size,
            "image_size": list(self.image_size),
            "weights": sorted(self.weight_specs),
        }
        received = {
            "batch_size": self.metadata.get("batch_size"),
            "image_size": self.metadata.get("image_size"),
            "weights": sorted(self.metadata.get("weights") or []),
        }
        for key in expected:
            if expected[key] == received[key]:
                continue
            if key == "weights":
                only_sidecar = set(received[key]) - set(expected[key])
                only_model = set(expected[key]) - set(received[key])
                difference = (
                    f"weights {_few(sorted(only_sidecar))} where the model "
                    f"has {_few(sorted(only_model))}"
                )
            else:
                difference = (
                    f"{key} {received[key]} where the model has "
                    f"{expected[key]}"
                )
            raise ValueError(
                f"The sidecar {metadata_path} does not belong to this model: "
                f"it lists {difference}. Copy the `.json` written with this "
                "`.tflite` file."
            )

    def train_step(self, images, labels, learning_rate=None):
        """Runs one optimizer step on a batch of exactly `batch_size` images.

        Args:
            images: float32 array `(batch_size, height, width, 3)`, pixels in
                `[0, 255]`.
            labels: int32 array `(batch_size,)`, class indices.
            learning_rate: float. This step's rate of the side variables
                (the head's is scaled by the export's ratio), e.g. from
                `cosine_learning_rate`. Defaults to the export's peak.

        Returns:
            The loss of the batch before the step, as a float.
        """
        if learning_rate is None:
            learning_rate = self.learning_rate
        outputs = self._runners["train"](
            x=np.asarray(images, np.float32),
            y=np.asarray(labels, np.int32),
            learning_rate=np.float32(learning_rate),
        )
        return float(outputs["loss"])

    def predict(self, images):
        """Returns the class probabilities `(N, num_classes)` of `N` images.

        Runs "infer" on chunks of `batch_size` images, padding the last one,
        so that the interpreter never reallocates.
        """
        return self._infer(images, "probabilities")

    def logits(self, images):
        """Returns the logits `(N, num_classes)` of `N` images."""
        return self._infer(images, "logits")

    def _infer(self, images, output):
        chunks = []
        for start in range(0, len(images), self.batch_size):
            chunk = np.asarray(
                images[start : start + self.batch_size], np.float32
            )
            padded = _pad_batch(chunk, self.batch_size)
            chunks.append(
                self._runners["infer"](x=padded)[output][: len(chunk)]
            )
        return (
            np.concatenate(chunks)
            if chunks
            else np.zeros((0, self.num_classes))
        )

    def evaluate(self, images, labels):
        """Returns `{"loss", "accuracy"}` of the model on labelled images."""
        logits = self.logits(images).astype(np.float64)
        log_probabilities = logits - _logsumexp(logits)
        labels = np.asarray(labels)
        return {
            "loss": float(
                -log_probabilities[np.arange(len(labels)), labels].mean()
            ),
            "accuracy": float((logits.argmax(-1) == labels).mean()),
        }

    def get_weights(self):
        """Returns `{name: array}`: every variable that training changes."""
        runner = self._runners["get_weights"]
        # Java's runSignature rejects an empty input map, so an export may
        # give "get_weights" an ignored input: feed it zeros.
        ignored = {
            name: np.zeros(details["shape"], details["dtype"])
            for name, details in runner.get_input_details().items()
        }
        return {
            name: np.array(value) for name, value in runner(**ignored).items()
        }

    def set_weights(self, weights):
        """Assigns `{name: array}` as returned by `get_weights`.

        Raises:
            CheckpointError: when the names or shapes are not this model's.
        """
        self.check_weights(weights)
        inputs = {
            name: np.asarray(weights[name]).astype(dtype, copy=False)
            for name, (_, dtype) in self.weight_specs.items()
        }
        self._runners["set_weights"](**inputs)

    def check_weights(self, weights, source="the weights"):
        """Raises `CheckpointError` unless `weights` fit this model exactly."""
        missing = sorted(set(self.weight_specs) - set(weights))
        unexpected = sorted(set(weights) - set(self.weight_specs))
        wrong_shape = [
            f"{name}: {tuple(np.shape(weights[name]))} instead of {shape}"
            for name, (shape, _) in self.weight_specs.items()
            if name in weights and tuple(np.shape(weights[name])) != shape
        ]
        if missing or unexpected or wrong_shape:
            raise CheckpointError(
                f"{source} belong to another model. Missing: {_few(missing)}; "
                f"unexpected: {_few(unexpected)}; wrong shapes: "
                f"{_few(wrong_shape)}. Use a checkpoint written for this "
                "`.tflite` file, or another --checkpoint path to start over."
            )


def _pad_batch(array, batch_size):
    """Pads `array` to `batch_size` rows by repeating its last row."""
    missing = batch_size - len(array)
    if missing <= 0:
        return array
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])


def _logsumexp(logits):
    peak = logits.max(-1, keepdims=True)
    return peak + np.log(np.exp(logits - peak).sum(-1, keepdims=True))


def _few(items, limit=5):
    if not items:
        return "none"
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (
        f" and {len(items) - limit} more" if len(items) > limit else ""
    )


# === Data ===


def load_image_folder(path, image_size):
    """Reads a folder with one sub-folder of images per class.

    Classes are the sub-folders in sorted order and files are read in sorted
    order, as `keras.utils.image_dataset_from_directory` does. Images are
    converted to RGB and resized to `image_size` (bilinear, Pillow).

    Returns:
        `(images, labels, class_names)`: uint8 `(N, height, width, 3)`, int32
        `(N,)` and a list of str.
    """
    from PIL import Image

    class_names = sorted(
        entry.name for entry in os.scandir(path) if entry.is_dir()
    )
    if not class_names:
        raise ValueError(
            f"Expected a folder with one sub-folder of images per class. "
            f"Received: {path}, which has no sub-folders."
        )
    height, width = image_size
    images, labels = [], []
    for label, class_name in enumerate(class_names):
        folder = os.path.join(path, class_name)
        for file_name in sorted(os.listdir(folder)):
            if not file_name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            file_path = os.path.join(folder, file_name)
            try:
                with Image.open(file_path) as image:
                    image = image.convert("RGB").resize(
                        (width, height), Image.BILINEAR
                    )
                    images.append(np.asarray(image, np.uint8))
            except OSError as error:
                raise ValueError(
                    f"Cannot decode the image {file_path} ({error}). Remove "
                    "or replace it."
                ) from None
            labels.append(label)
    if not images:
        raise ValueError(
            f"Found no images ({', '.join(IMAGE_EXTENSIONS)}) in the class "
            f"folders {class_names} of {path}."
        )
    return np.stack(images), np.asarray(labels, np.int32), class_names


def load_npz(path):
    """Reads the arrays `x` (images) and `y` (labels) of an `.npz` file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data or "y" not in data:
                raise ValueError(
                    f"Expected arrays `x` (images) and `y` (labels) in {path}. "
                    f"Received: {sorted(data.files)}"
                )
            return data["x"], data["y"]
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(
            f"Cannot read {path} as an .npz file ({error})."
        ) from None


def check_examples(images, labels, image_size, num_classes):
    """Checks images and labels against the model; returns them standardized.

    Args:
        images: array `(N, height, width)`, `(N, height, width, 1)` or
            `(N, height, width, 3)`, with pixel values in `[0, 255]`.
        labels: integer array `(N,)` (or `(N, 1)`) in `[0, num_classes)`.
        image_size: `(height, width)` of the model.
        num_classes: int. Classes of the model.

    Returns:
        `(images, labels)`: uint8 or float32 `(N, height, width, 3)` and int32
        `(N,)`.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    expected = f"(N, {image_size[0]}, {image_size[1]}, 3)"
    if (
        images.ndim != 4
        or images.shape[1:3] != tuple(image_size)
        or images.shape[-1] not in (1, 3)
    ):
        raise ValueError(
            f"Expected images of shape {expected} (greyscale without the last "
            f"axis or with 1 channel is fine). Received: shape={images.shape}. "
            "Resize them to the model's size, or use an image folder, which "
            "is resized for you."
        )
    if images.dtype == np.uint8:
        pass
    elif np.issubdtype(images.dtype, np.number) and not np.issubdtype(
        images.dtype, np.complexfloating
    ):
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 255:
            raise ValueError(
                "Expected pixel values in [0, 255] (the model applies the "
                f"backbone's preprocessing itself). Received: values in "
                f"[{low}, {high}]. Pass the raw pixels."
            )
        images = images.astype(np.float32)
    else:
        raise ValueError(
            f"Expected numeric images (uint8 or float pixels in [0, 255]). "
            f"Received: dtype={images.dtype}"
        )
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"Expected one integer label per image, shape ({len(images)},). "
            f"Received: labels of shape {labels.shape}"
            + (" (one-hot? use y.argmax(-1))." if labels.ndim == 2 else ".")
        )
    if not (
        np.issubdtype(labels.dtype, np.integer)
        or (
            np.issubdtype(labels.dtype, np.floating)
            and np.all(labels == np.round(labels))
        )
    ):
        raise ValueError(
            f"Expected integer class indices as labels. Received: "
            f"dtype={labels.dtype}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Labels must be class indices in [0, {num_classes}) for this "
            f"model of {num_classes} classes. Received: labels in "
            f"[{labels.min()}, {labels.max()}]. Export a model with as many "
            "classes as the data has."
        )
    return images, labels.astype(np.int32)


def split_indices(num_examples, validation_split, seed):
    """A seeded `(train, validation)` partition of `range(num_examples)`."""
    order = np.random.default_rng(seed).permutation(num_examples)
    num_validation = int(validation_split * num_examples)
    return (
        order[: num_examples - num_validation],
        order[num_examples - num_validation :],
    )


def epoch_order(train_indices, epoch, seed):
    """The training order of `epoch`: the same on every run with `seed`."""
    return np.random.default_rng([seed, epoch]).permutation(train_indices)


# === Checkpoints ===


def save_checkpoint(path, weights, state):
    """Writes `weights` and `state` to `path` atomically.

    The `.npz` goes to a temporary file in the same folder, is flushed to
    disk, read back and checked, and only then replaces `path`: a crash at
    any moment leaves either the old or the new checkpoint, never half of one.

    Args:
        path: str. The checkpoint, an `.npz` file.
        weights: dict of name to numpy array, from `get_weights`.
        state: JSON-serializable dict, stored as the entry `meta.json`.
    """
    bad = [
        name
        for name, value in weights.items()
        if np.issubdtype(np.asarray(value).dtype, np.floating)
        and not np.all(np.isfinite(value))
    ]
    if bad:
        raise ValueError(
            f"Not saving a checkpoint with non-finite weights ({_few(bad)}): "
            f"training diverged. The last good checkpoint at {path} is kept. "
            "Export again with a lower learning rate."
        )
    meta = {"format": CHECKPOINT_FORMAT, **state}
    arrays = {
        **weights,
        META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8),
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        read_back, _ = load_checkpoint(temporary)
        if read_back.keys() != weights.keys() or not all(
            np.array_equal(read_back[name], weights[name]) for name in weights
        ):
            raise CheckpointError(
                f"The checkpoint written to {temporary} reads back wrong: "
                f"{path} is kept. Check the disk."
            )
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    # Makes the rename itself durable (POSIX); not possible on Windows.
    if hasattr(os, "O_DIRECTORY"):
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def load_checkpoint(path):
    """Reads a checkpoint written by `save_checkpoint`.

    Returns:
        `(weights, state)`: dict of name to numpy array, and the stored dict.

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


# === Training loop ===


def cosine_learning_rate(peak, step, total_steps):
    """The learning rate of step `step` (0-based) of `total_steps`: a cosine
    decay from `peak` to zero, as `keras.optimizers.schedules.CosineDecay`
    (which `keras-repnet train` uses) computes it."""
    progress = min(step, total_steps) / max(1, total_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


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
    max_steps=None,
    save_every=None,
    log_every=10,
    log=print,
):
    """Trains, evaluates, checkpoints and resumes; see the module docstring.

    The last partial batch of each epoch is dropped (the exported "train"
    signature takes exactly `batch_size` images); as the order changes every
    epoch, every example is still seen. Validation uses every example.

    Args:
        trainer: a `RepNetTrainer`.
        images: uint8 or float32 `(N, height, width, 3)`, see `check_examples`.
        labels: int32 `(N,)`.
        checkpoint_path: str. Where the checkpoint is written; resumed from
            when it exists.
        epochs: int. Total epochs, counting those of a resumed run. The
            learning rate decays to zero over them (`cosine_learning_rate`).
        learning_rate: float or `None`. Peak learning rate. Defaults to the
            export's (`trainer.learning_rate`).
        validation_split: float. Share of the examples held out, in `[0, 1)`.
        seed: int. Seed of the split and of each epoch's order.
        max_steps: int or `None`. Stop (with a checkpoint) after this many
            steps of this run; running again continues.
        save_every: int or `None`. Also checkpoint every this many steps.
        log_every: int. Print a progress line every this many steps.
        log: callable that prints one line.

    Returns:
        The state dict stored in the checkpoint (`epoch`, `step`, `history`
        and the fields of `resume_state`).
    """
    if not 0 <= validation_split < 1:
        raise ValueError(
            "`validation_split` must be in [0, 1). "
            f"Received: validation_split={validation_split}"
        )
    peak = trainer.learning_rate if learning_rate is None else learning_rate
    if not peak > 0:
        raise ValueError(
            f"The learning rate must be positive. Received: {peak}"
        )
    train_indices, validation_indices = split_indices(
        len(labels), validation_split, seed
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
        "seed": seed,
        "validation_split": validation_split,
        "num_examples": int(len(labels)),
    }
    state = {
        "epoch": 0,
        "step": 0,
        "loss_sum": 0.0,
        "loss_steps": 0,
        "history": [],
        **run,
    }
    if os.path.exists(checkpoint_path):
        weights, meta = load_checkpoint(checkpoint_path)
        state = resume_state(
            meta, run, steps_per_epoch, path=checkpoint_path, log=log
        )
        trainer.check_weights(
            weights, source=f"The weights in {checkpoint_path}"
        )
        trainer.set_weights(weights)
        log(
            f"Resuming from {checkpoint_path}: epoch {state['epoch'] + 1}, "
            f"step {state['step']}."
        )
    total_steps = epochs * steps_per_epoch
    steps_this_run, rate = 0, 0.0
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
            rate = (
                (step + 1 - first_step)
                * batch_size
                / (time.perf_counter() - started)
            )
            if log_every and (step + 1) % log_every == 0:
                log(
                    f"epoch {state['epoch'] + 1}/{epochs} step "
                    f"{step + 1}/{steps_per_epoch} loss {loss:.4f} "
                    f"({rate:.1f} images/s)"
                )
            if (
                max_steps
                and steps_this_run >= max_steps
                and step + 1 < steps_per_epoch
            ):
                save_checkpoint(checkpoint_path, trainer.get_weights(), state)
                log(
                    f"Stopped after {steps_this_run} steps (--max-steps); "
                    f"saved {checkpoint_path}. Run again to continue."
                )
                return state
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
        if (
            max_steps
            and steps_this_run >= max_steps
            and state["epoch"] < epochs
        ):
            log(
                f"Stopped after {steps_this_run} steps (--max-steps); "
                f"saved {checkpoint_path}. Run again to continue."
            )
            return state
    return state


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


# === Command line ===


def load_examples(data, trainer):
    """Reads an image folder or `.npz` file and checks it against the model."""
    if os.path.isdir(data):
        images, labels, class_names = load_image_folder(
            data, trainer.image_size
        )
        expected = trainer.class_names
        if expected is not None and class_names != list(expected):
            raise ValueError(
                f"The class folders of {data} are {class_names}, but the "
                f"model was exported for {list(expected)}: labels would mean "
                "other classes. Rename the folders to match."
            )
    elif os.path.isfile(data):
        images, labels = load_npz(data)
    else:
        raise FileNotFoundError(
            f"No data at {data}. Pass an image folder (one sub-folder per "
            "class) or an .npz file with arrays x and y."
        )
    return check_examples(
        images, labels, trainer.image_size, trainer.num_classes
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="repnet_trainer",
        description="Trains an exported Rep-Net .tflite with LiteRT alone.",
    )
    parser.add_argument(
        "--model", required=True, help="The exported .tflite file."
    )
    parser.add_argument(
        "--data",
        required=True,
        help="An image folder (one sub-folder per class) or an .npz with x, y.",
    )
    parser.add_argument(
        "--metadata",
        help="The sidecar JSON. Defaults to the model path with .json.",
    )
    parser.add_argument(
        "--checkpoint",
        help="Checkpoint .npz, resumed from when it exists. Defaults to "
        "MODEL.checkpoint.npz beside the model.",
    )
    parser.add_argument("--epochs", type=int, default=5, help="Total epochs.")
    parser.add_argument(
        "--learning-rate",
        type=float,
        help="Peak learning rate of the cosine decay. Defaults to the "
        "export's (its sidecar's `learning_rate`).",
    )
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument(
        "--max-steps",
        type=int,
        help="Stop after this many steps of this run, with a checkpoint.",
    )
    parser.add_argument(
        "--save-every", type=int, help="Also checkpoint every this many steps."
    )
    parser.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="Steps between progress lines.",
    )
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    checkpoint = (
        args.checkpoint or os.path.splitext(args.model)[0] + ".checkpoint.npz"
    )
    try:
        trainer = RepNetTrainer(args.model, args.metadata, args.num_threads)
        images, labels = load_examples(args.data, trainer)
        print(
            f"{len(labels)} examples, {trainer.num_classes} classes, "
            f"{trainer.image_size[0]}x{trainer.image_size[1]} px, batches of "
            f"{trainer.batch_size}, {args.num_threads} threads."
        )
        state = fit(
            trainer,
            images,
            labels,
            checkpoint_path=checkpoint,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            validation_split=args.validation_split,
            seed=args.seed,
            max_steps=args.max_steps,
            save_every=args.save_every,
            log_every=args.log_every,
        )
    except (ValueError, FileNotFoundError, ImportError) as error:
        parser.exit(2, f"repnet_trainer: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(
            130,
            f"Interrupted. The last checkpoint, {checkpoint}, is intact: run "
            "the same command to resume.\n",
        )
    if state["epoch"] >= args.epochs:
        print(f"Done: {state['epoch']} epochs. Weights in {checkpoint}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
