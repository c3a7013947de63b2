"""Reading examples: an image folder or an `.npz`, checked against a model.

Image folders are decoded with Pillow (imported only for them). A file that
cannot be read as an image is skipped and reported, or, with `strict=True`,
refused.
"""

import os
import zipfile
import zlib

import numpy as np

from repnet_trainer import split
from repnet_trainer._text import few


def load_image_folder(path, image_size, strict=False, log=print):
    """Reads a folder with one sub-folder of images per class.

    The files are those of `split.list_image_files` (classes and files in
    sorted order, as `keras.utils.image_dataset_from_directory` reads them).
    Each is fully decoded, converted to RGB and resized to `image_size`
    (bilinear, Pillow). A file that cannot be read as an image (empty,
    truncated, corrupt, or no image despite its extension) is skipped: one
    line names it and why, and a last line sums up the skipped files.

    Args:
        path: str or path-like. The folder, e.g. `photos/` with
            `photos/cat/001.jpg`.
        image_size: `(height, width)` of the model.
        strict: bool. Raise a `ValueError` at the first unreadable file
            instead of skipping it.
        log: callable that prints one line.

    Returns:
        `(images, labels, class_names, kept)`: uint8 `(N, height, width, 3)`,
        int32 `(N,)`, a list of str, and a bool array with one entry per
        listed file, `True` for the `N` files read. Split by the listing,
        with `split.split_kept(kept, ...)`, so that a skipped file does not
        shift the split.
    """
    image_module = _pillow()
    path = os.fspath(path)
    names, labels, class_names = split.list_image_files(path)
    height, width = image_size
    images = np.empty((len(names), height, width, 3), np.uint8)
    kept = np.zeros(len(names), bool)
    skipped = []
    for position, name in enumerate(names):
        file_path = os.path.join(path, *name.split("/"))
        try:
            images[position - len(skipped)] = _decode(
                file_path, (width, height), image_module
            )
        except MemoryError:
            raise
        except Exception as error:
            reason = _reason(error, file_path)
            if strict:
                raise ValueError(
                    f"Cannot read {file_path} as an image ({reason}). Remove "
                    "or replace it, or pass strict=False (without "
                    "--strict-images) to skip such files."
                ) from None
            log(f"Skipping {file_path}: {reason}.")
            skipped.append(f"{name} ({reason})")
            continue
        kept[position] = True
    if skipped:
        log(
            f"Skipped {len(skipped)} of {len(names):,} files that could not "
            f"be read as images: {few(skipped)}."
        )
    if not kept.any():
        raise ValueError(
            f"None of the {len(names):,} image files in {path} could be read. "
            "Check that they are images of a supported type "
            f"({' '.join(split.IMAGE_EXTENSIONS)})."
        )
    labels = np.asarray(labels, np.int32)[kept]
    return images[: len(labels)], labels, class_names, kept


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "Reading an image folder needs Pillow. Install it with `pip "
            "install pillow`, or pass an .npz file with arrays x and y."
        ) from None
    return Image


def _decode(file_path, size, Image):
    if os.path.getsize(file_path) == 0:
        raise ValueError("empty file")
    with Image.open(file_path) as image:
        # Pillow decodes lazily: decode it all here, so that a truncated file
        # fails now (ImageFile.LOAD_TRUNCATED_IMAGES is left False).
        image.load()
        image = image.convert("RGB").resize(size, Image.BILINEAR)
        return np.asarray(image, np.uint8)


def _reason(error, file_path):
    """Why a file could not be read, without its path."""
    if type(error).__name__ == "UnidentifiedImageError":
        return "cannot identify image file"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    text = str(error).replace(repr(file_path), "").replace(file_path, "")
    return text.strip(" :") or type(error).__name__


def load_npz(path):
    """Reads the arrays `x` (images) and `y` (labels) of an `.npz` file."""
    advice = "Save it with `np.savez(path, x=images, y=labels)`."
    errors = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        data = np.load(path, allow_pickle=False)
    except errors as error:
        raise ValueError(
            f"Cannot read {path} as an .npz file ({error}). {advice}"
        ) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(
            f"Expected an .npz file with arrays `x` and `y`. Received: {path}, "
            f"a single array of shape {data.shape}. {advice}"
        )
    with data:
        if "x" not in data or "y" not in data:
            raise ValueError(
                f"Expected arrays `x` (images) and `y` (labels) in {path}. "
                f"Received: {sorted(data.files)}. {advice}"
            )
        try:
            return data["x"], data["y"]
        except errors as error:
            raise ValueError(
                f"Cannot read the arrays of {path} ({error}). {advice}"
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


def load_examples(data, trainer, strict=False, log=print):
    """Reads an image folder or `.npz` file and checks it against the model.

    Args:
        data: str or path-like. An image folder (`load_image_folder`) or an
            `.npz` file with arrays `x` and `y` (`load_npz`).
        trainer: a `RepNetTrainer`, for the image size and classes.
        strict: bool. Refuse unreadable images instead of skipping them.
        log: callable that prints one line.

    Returns:
        `(images, labels, kept)`: as `check_examples` returns them, and the
        bool array of `load_image_folder` (all `True` for an `.npz`): pass it
        to `fit` so that the split is that of the whole listing.
    """
    data = os.fspath(data)
    if os.path.isdir(data):
        images, labels, class_names, kept = load_image_folder(
            data, trainer.image_size, strict=strict, log=log
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
        kept = np.ones(len(labels), bool)
    else:
        raise FileNotFoundError(
            f"No data at {data}. Pass an image folder (one sub-folder per "
            "class) or an .npz file with arrays x and y."
        )
    images, labels = check_examples(
        images, labels, trainer.image_size, trainer.num_classes
    )
    return images, labels, kept
