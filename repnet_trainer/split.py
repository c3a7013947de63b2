"""The one train/validation split of keras-repnet, and image folder listing.

Keras and the device split the same examples the same way: both call
`split_indices` on the same count with the same seed, so a model trained in
Keras and then on a device never validates on images it was trained on. An
image folder is split as its listing (`list_image_files`), before any file is
decoded: a file that one decoder rejects and another accepts never shifts the
split (`split_kept`). Needs numpy and the standard library only.
"""

import numbers
import os

import numpy as np

# The image types `keras.utils.image_dataset_from_directory` reads.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def split_indices(num_examples, validation_split, seed):
    """A seeded `(train, validation)` partition of `range(num_examples)`.

    The validation examples are the first `int(validation_split *
    num_examples)` of `np.random.default_rng(seed).permutation(num_examples)`,
    the training examples the rest, in that order.

    Args:
        num_examples: int >= 0. How many examples to split.
        validation_split: float in `[0, 1)`. Share held out for validation.
        seed: int >= 0. Seed of the permutation.

    Returns:
        `(train_indices, validation_indices)`: two disjoint int arrays that
        together hold every index of `range(num_examples)` once.
    """
    if not _is_int(num_examples) or num_examples < 0:
        raise ValueError(
            "`num_examples` must be an integer >= 0. Received: "
            f"num_examples={num_examples!r}"
        )
    if (
        not isinstance(validation_split, numbers.Real)
        or isinstance(validation_split, bool)
        or not 0 <= validation_split < 1
    ):
        raise ValueError(
            "`validation_split` must be a number in [0, 1), the share of "
            "the examples held out. Received: "
            f"validation_split={validation_split!r}"
        )
    if not _is_int(seed) or seed < 0:
        raise ValueError(
            "`seed` must be an integer >= 0, so that every run splits the "
            f"same way. Received: seed={seed!r}"
        )
    order = np.random.default_rng(int(seed)).permutation(int(num_examples))
    num_validation = int(validation_split * num_examples)
    return order[num_validation:], order[:num_validation]


def split_kept(kept, validation_split, seed):
    """Splits the examples that were loaded out of a longer listing.

    `split_indices` runs on the whole listing (`len(kept)` entries); the
    entries that could not be loaded are then dropped from whichever side
    they fell on.

    Args:
        kept: bool array `(num_listed,)`: which entries of the listing were
            loaded. The loaded examples are its `True` entries, in order.
        validation_split: float in `[0, 1)`.
        seed: int >= 0.

    Returns:
        `(train_rows, validation_rows)`: indices into the loaded examples.
    """
    kept = np.asarray(kept, bool)
    if kept.ndim != 1:
        raise ValueError(
            "`kept` must be a 1-D boolean array, one entry per listed "
            f"example. Received: shape={kept.shape}"
        )
    row = np.cumsum(kept) - 1  # The loaded example of each kept entry.
    train, validation = split_indices(len(kept), validation_split, seed)
    return row[train[kept[train]]], row[validation[kept[validation]]]


def list_image_files(folder):
    """Lists an image folder with one sub-folder per class.

    Classes are the sub-folders in sorted order, and each class's files are
    sorted by name, as `keras.utils.image_dataset_from_directory` reads them.
    Hidden entries (names starting with ".") and files of other types than
    `IMAGE_EXTENSIONS` (any case) are skipped; so are folders nested in a
    class folder. Nothing is opened.

    Args:
        folder: str or path-like, e.g. `photos/` holding `photos/cat/001.jpg`
            and `photos/dog/001.jpg`.

    Returns:
        `(paths, labels, class_names)`: the files relative to `folder` with
        "/" separators (`["cat/001.jpg", "dog/001.jpg"]`), the class index of
        each (`[0, 1]`) and the class names (`["cat", "dog"]`).
    """
    folder = os.fspath(folder)
    layout = (
        "Expected a folder with one sub-folder of images per class, e.g. "
        "photos/cat/001.jpg and photos/dog/001.jpg."
    )
    if not os.path.isdir(folder):
        raise ValueError(f"{layout} Received: {folder}, which is not a folder.")
    with os.scandir(folder) as entries:
        class_names = sorted(
            e.name for e in entries if e.is_dir() and not e.name.startswith(".")
        )
    if len(class_names) < 2:
        folders = "folder" if len(class_names) == 1 else "folders"
        raise ValueError(
            f"{layout} Received: {folder}, with {len(class_names)} class "
            f"{folders}: {class_names}. Put each class's images in its own "
            "sub-folder (at least 2 classes)."
        )
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        with os.scandir(os.path.join(folder, class_name)) as entries:
            names = sorted(
                e.name
                for e in entries
                if not e.name.startswith(".")
                and e.name.lower().endswith(IMAGE_EXTENSIONS)
                and e.is_file()
            )
        paths += [f"{class_name}/{name}" for name in names]
        labels += [label] * len(names)
    if not paths:
        raise ValueError(
            f"{layout} Received: {folder}, whose class folders {class_names} "
            f"hold no images ({' '.join(IMAGE_EXTENSIONS)})."
        )
    return paths, labels, class_names


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
