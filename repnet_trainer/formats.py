"""The contract between the exporter and the trainers, written once here.

`keras_repnet.export_tflite` writes a `.tflite` model with the signatures
`SIGNATURES` and a sidecar JSON of format `MODEL_FORMAT` beside it; the
trainers (this package and the Android sample) write checkpoints of format
`CHECKPOINT_FORMAT`. This module needs nothing beyond the standard library, so
that the exporter can import it without LiteRT or Pillow.
"""

import json
import os

# Format 3: the sidecar carries the model's training recipe.
MODEL_FORMAT = "keras-repnet-tflite/3"
CHECKPOINT_FORMAT = "keras-repnet-checkpoint/1"
# The checkpoint's own entry. A "." never occurs in a weight name.
META_KEY = "meta.json"
SIGNATURES = ("train", "infer", "get_weights", "set_weights")


def sidecar_path(model_path):
    """Returns the sidecar of a model: `model.tflite` -> `model.json`.

    Args:
        model_path: str or path-like. The `.tflite` file.

    Returns:
        The sidecar's path, as a str.
    """
    return os.path.splitext(os.fspath(model_path))[0] + ".json"


def read_sidecar(path):
    """Reads the sidecar JSON of an exported model and checks its format.

    Args:
        path: str or path-like. The sidecar, see `sidecar_path`.

    Returns:
        The sidecar as a dict.

    Raises:
        FileNotFoundError: when there is no file at `path`.
        ValueError: when it is not JSON, or not of format `MODEL_FORMAT`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No sidecar metadata at {path}. `keras_repnet.export_tflite` "
            "writes it beside the `.tflite` file; copy it along or pass "
            "--metadata."
        )
    with open(path, encoding="utf-8") as f:
        try:
            metadata = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
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
            f"format={received!r} in {path}. Export the model again with this "
            "version of keras-repnet."
        )
    return metadata
