"""Writes that never leave a half-written file behind.

The atomic writes are the device trainer's (`repnet_trainer.files`): a
temporary file in the same folder, renamed over the target, with the
permissions an ordinary write would give.
"""

import keras
from repnet_trainer import files
from repnet_trainer.files import check_writable

__all__ = ["check_writable", "save_model", "write_json", "write_text"]


def write_json(data, path):
    """Writes `data` as indented JSON to `path` atomically."""
    files.write_json(path, data, indent=2)


def write_text(text, path):
    """Writes `text` to `path` atomically."""
    files.write_text(path, text)


def save_model(model: keras.Model, path):
    """Saves `model` to a `.keras` file atomically."""
    with files.atomic_path(path, suffix=".keras") as temporary:
        model.save(temporary)
