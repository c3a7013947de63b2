"""`RepNetTrainer`: runs the signatures of an exported Rep-Net `.tflite`."""

import os

import numpy as np

from repnet_trainer import formats
from repnet_trainer._text import few
from repnet_trainer.checkpoint import CheckpointError


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
        model_path: str or path-like. The `.tflite` file written by
            `keras_repnet.export_tflite`.
        metadata_path: str, path-like or `None`. Its sidecar JSON. Defaults
            to the model path with the suffix `.json` (`formats.sidecar_path`).
        num_threads: int. CPU threads of the interpreter. Defaults to `2`.
    """

    def __init__(self, model_path, metadata_path=None, num_threads=2):
        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                f"No model at {model_path}. Pass the `.tflite` file written "
                "by `keras_repnet.export_tflite` (or `keras-repnet export`)."
            )
        if not isinstance(num_threads, int) or not (
            num_threads >= 1 or num_threads == -1
        ):
            raise ValueError(
                "`num_threads` must be an integer >= 1 (or -1: LiteRT's "
                f"choice). Received: num_threads={num_threads!r}"
            )
        metadata_path = metadata_path or formats.sidecar_path(model_path)
        self.metadata = formats.read_sidecar(metadata_path)
        absent = [
            key
            for key in ("num_classes", "recipe")
            if key not in self.metadata
        ]
        if absent:
            raise ValueError(
                f"The sidecar {metadata_path} lacks {absent}. Copy the `.json` "
                "written with this `.tflite` file, or export the model again."
            )
        try:
            interpreter = _interpreter_class()(
                model_path=model_path, num_threads=num_threads
            )
        except ValueError as error:
            raise ValueError(
                f"LiteRT cannot load {model_path}: {error}. Expected a "
                "`.tflite` file written by `keras_repnet.export_tflite`."
            ) from None
        signatures = interpreter.get_signature_list()
        missing = [s for s in formats.SIGNATURES if s not in signatures]
        if missing:
            raise ValueError(
                f"{model_path} lacks the signatures {missing}. Received: "
                f"{sorted(signatures)}. Export the model "
                "with `keras_repnet.export_tflite`."
            )
        self._runners = {
            s: interpreter.get_signature_runner(s) for s in formats.SIGNATURES
        }
        x = self._runners["train"].get_input_details()["x"]
        self.batch_size = int(x["shape"][0])
        self.image_size = (int(x["shape"][1]), int(x["shape"][2]))
        self.num_classes = int(self.metadata["num_classes"])
        # How Keras trained the model (`keras_repnet.Recipe.to_dict()`):
        # the device trains the same way unless told otherwise.
        self.recipe = self.metadata["recipe"]
        # The peak of the side variables' schedule (the head's follows).
        self.learning_rate = float(self.recipe["side_learning_rate"])
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
                    f"weights {few(sorted(only_sidecar))} where the model "
                    f"has {few(sorted(only_model))}"
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
                f"{source} belong to another model. Missing: {few(missing)}; "
                f"unexpected: {few(unexpected)}; wrong shapes: "
                f"{few(wrong_shape)}. Use a checkpoint written for this "
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
