"""Writes that never leave a half-written file behind."""

import json
import os
import tempfile

import keras


def _temporary_path(path, suffix=""):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=directory
    )
    os.close(handle)
    return temporary


def _replace(temporary, path):
    try:
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_json(data, path):
    """Writes `data` as JSON to `path` atomically."""
    temporary = _temporary_path(path)
    with open(temporary, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    _replace(temporary, path)


def write_text(text, path):
    """Writes `text` to `path` atomically."""
    temporary = _temporary_path(path)
    with open(temporary, "w") as f:
        f.write(text)
    _replace(temporary, path)


def save_model(model: keras.Model, path):
    """Saves `model` to a `.keras` file atomically."""
    temporary = _temporary_path(path, suffix=".keras")
    try:
        model.save(temporary)
    except BaseException:
        os.unlink(temporary)
        raise
    _replace(temporary, path)
