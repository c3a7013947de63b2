"""Image files: which ones decode, and reading them as `tf.data`.

Photo folders copied from phones and the web hold a few files that are not
images, or not whole ones. `readable()` decodes every listed file once,
before training, and reports those that fail; `read_files()` then reads the
others lazily, as `keras.utils.image_dataset_from_directory` does.
"""

import concurrent.futures
import os
import re

import numpy as np
import tensorflow as tf

from keras_repnet.data import pipeline

# Files decoded at once while checking a folder.
_CHECK_THREADS = 8
# Files named in the summary line.
_NAMED = 5


def readable(folder, paths, *, strict=False, log=print) -> np.ndarray:
    """Which of the image files `paths` (relative to `folder`) decode.

    Each file that does not is reported once, with its path and the reason,
    followed by one summary line.

    Args:
        folder: str or path-like. The image folder.
        paths: list of str. Files relative to `folder`.
        strict: bool. Raise a `ValueError` on the first unreadable file
            instead. Defaults to `False`.
        log: callable that prints one line. Defaults to `print`.

    Returns:
        A bool array, `True` for each file that decodes.
    """
    full = [os.path.join(folder, path) for path in paths]
    with concurrent.futures.ThreadPoolExecutor(_CHECK_THREADS) as pool:
        reasons = list(pool.map(_decode_error, full))
    bad = [(path, reason) for path, reason in zip(full, reasons) if reason]
    if bad and strict:
        path, reason = bad[0]
        raise ValueError(
            f"Cannot decode the image {path} ({reason}). Remove or replace "
            "it, or leave out `strict_images` (`--strict_images`) to skip "
            "such files."
        )
    for path, reason in bad:
        log(f"Skipping {path}: {reason}.")
    if bad:
        named = ", ".join(os.path.relpath(p, folder) for p, _ in bad[:_NAMED])
        more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
        log(
            f"Skipped {len(bad):,} of {len(paths):,} files in {folder} that "
            f"could not be read as images: {named}{more}."
        )
    return np.array([reason is None for reason in reasons], bool)


def _decode_error(path):
    """Why `path` does not decode as an image, or `None` if it does."""
    try:
        data = tf.io.read_file(path)
        if not int(tf.strings.length(data)):
            return "empty file"
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        return _first_line(error.message)
    return None


def _first_line(message):
    """TensorFlow's error message without its op and function names."""
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", message).strip()
    line = message.splitlines()[0] if message else "unknown error"
    return line.split(" [Op:")[0].rstrip(". ")


def read_files(folder, paths, labels, *, image_size) -> pipeline.Examples:
    """The images `paths` (relative to `folder`) with `labels`, decoded as
    RGB, resized to `image_size` and stored as uint8."""
    full = [os.path.join(folder, path) for path in paths]
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(full, tf.string), tf.constant(labels, tf.int32))
    ).map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
    return pipeline.Examples(
        pipeline.stored_as_uint8(dataset, image_size), len(paths), list(paths)
    )


def _decode(path, label):
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False
    )
    image.set_shape((None, None, 3))
    return image, label
