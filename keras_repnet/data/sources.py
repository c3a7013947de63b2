"""The sources `load()` reads: image folders, idx files, `.npz` files,
numpy arrays and TensorFlow Datasets.

Each reader returns `(train, validation, test, class_names)`: three
`pipeline.Examples` (`test` is `None` for a source without a held-out split
of its own) and the class names.
"""

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from repnet_trainer import split

from keras_repnet.data import images
from keras_repnet.data import pipeline

TFDS_PREFIX = "tfds:"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an array from an idx file, as used by MNIST and Fashion-MNIST.

    Args:
        path: str or `os.PathLike`. An idx file of unsigned bytes, gzipped
            when its name ends with `.gz`.

    Returns:
        A uint8 numpy array with the shape stored in the file header, e.g.
        `(num_images, 28, 28)` for images or `(num_labels,)` for labels.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    # Magic number: two zero bytes, the type code (0x08: unsigned byte) and
    # the number of dimensions, followed by each dimension as a big-endian
    # int32.
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(
            "Expected an idx file of unsigned bytes (magic number 2049 for "
            f"labels or 2051 for images). Received: path={path}, with magic "
            f"number {int.from_bytes(data[:4], 'big')}"
        )
    ndim = data[3]
    shape = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(
        shape
    )


def load_idx_folder(
    path: str | os.PathLike,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Reads the images and labels of an MNIST-style folder of idx files.

    Args:
        path: str or `os.PathLike`. A folder with `train-images-idx3-ubyte`
            and `train-labels-idx1-ubyte` and optionally the matching `t10k-*`
            test files, each possibly gzipped (`.gz`).

    Returns:
        `((x_train, y_train), (x_test, y_test))`, where the test pair is
        `None` when the folder has no `t10k-*` files.
    """
    train = _read_idx_pair(path, "train")
    if train is None:
        raise FileNotFoundError(
            "Expected `train-images-idx3-ubyte[.gz]` and "
            "`train-labels-idx1-ubyte[.gz]` in the folder. "
            f"Received: path={path}"
        )
    return train, _read_idx_pair(path, "t10k")


def _check_num_classes(num_classes, received):
    if num_classes < 2:
        raise ValueError(
            "A classification dataset needs at least 2 classes. "
            f"Received: {received}"
        )


def read_source(source, image_size, validation_split, seed, strict=False):
    if isinstance(source, str) and source.startswith(TFDS_PREFIX):
        return _read_tfds(
            source[len(TFDS_PREFIX) :], image_size, validation_split
        )
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError(
                "Expected a tuple `(x, y)` of images and labels. "
                f"Received: a tuple of length {len(source)}"
            )
        return _read_arrays(source, None, validation_split, seed)
    if isinstance(source, (str, os.PathLike)):
        return _read_path(
            Path(source), image_size, validation_split, seed, strict
        )
    raise ValueError(
        "Expected `source` to be a path to an image folder, an idx folder or "
        "a `.npz` file, a tuple `(x, y)` of numpy arrays, or 'tfds:NAME'. "
        f"Received: source of type {type(source).__name__}"
    )


def _read_path(path, image_size, validation_split, seed, strict):
    if not path.exists():
        raise FileNotFoundError(
            "No such file or folder. Pass a folder with one sub-folder of "
            "images per class, a folder of idx files, or a `.npz` file. "
            f"Received: source={str(path)!r}"
        )
    if path.is_dir() and _find_idx_file(path, "train-images-idx3-ubyte"):
        train, test = load_idx_folder(path)
        return _read_arrays(train, test, validation_split, seed)
    if path.is_dir() and _is_split_folder(path):
        train, validation, _, class_names = _read_image_folder(
            path / "train", image_size, validation_split, seed, strict
        )
        test, test_class_names = read_test_source(
            path / "test", image_size, seed, strict
        )
        _require(
            test_class_names == class_names,
            "The train/ and test/ folders must hold the same class "
            f"sub-folders. Received: {class_names} in {path / 'train'}, "
            f"{test_class_names} in {path / 'test'}",
        )
        return train, validation, test, class_names
    if path.is_dir():
        return _read_image_folder(
            path, image_size, validation_split, seed, strict
        )
    if path.suffix == ".npz":
        return _read_arrays(*_load_npz(path), validation_split, seed)
    raise ValueError(
        "Expected a folder or a `.npz` file. "
        f"Received: source={str(path)!r}"
    )


def read_test_source(test, image_size, seed, strict=False):
    """Reads a whole source as one test split: `(examples, class_names)`."""
    examples, _, held_out, class_names = read_source(
        test, image_size, 0.0, seed, strict
    )
    _require(
        held_out is None,
        "A test set must be one split, not a source with a test split of "
        f"its own. Received: test={test!r}",
    )
    return examples, class_names


def _is_split_folder(path):
    """Whether `path` holds exactly a `train/` and a `test/` image folder."""
    children = {item.name for item in path.iterdir() if item.is_dir()}
    return children == {"train", "test"} and any(
        item.is_dir() for item in (path / "train").iterdir()
    )


def _read_image_folder(path, image_size, validation_split, seed, strict):
    """An image folder split by the project's one split
    (`repnet_trainer.split`, which the device trainer uses too), with the
    files that cannot be decoded found first and left out."""
    paths, labels, class_names = split.list_image_files(path)
    kept = images.readable(path, paths, strict=strict)
    train, validation = split.split_kept(kept, validation_split, seed)
    paths = [name for name, keep in zip(paths, kept) if keep]
    labels = np.asarray(labels, np.int32)[kept]
    print(
        f"Found {int(kept.sum()):,} images in {len(class_names)} classes in {path}: "
        f"{len(train):,} for training, {len(validation):,} for validation."
    )
    read = functools.partial(images.read_files, path, image_size=image_size)
    return (
        read([paths[i] for i in train], labels[train]),
        read([paths[i] for i in validation], labels[validation]),
        None,
        class_names,
    )


def _load_npz(path):
    with np.load(path, allow_pickle=False) as arrays:
        keys = sorted(arrays.files)
        if {"x", "y"} <= set(keys):
            return (arrays["x"], arrays["y"]), None
        if {"x_train", "y_train"} <= set(keys):
            test = (
                (arrays["x_test"], arrays["y_test"])
                if {"x_test", "y_test"} <= set(keys)
                else None
            )
            return (arrays["x_train"], arrays["y_train"]), test
    raise ValueError(
        "Expected a `.npz` file with arrays `x` and `y`, or `x_train` and "
        "`y_train` (and optionally `x_test` and `y_test`). "
        f"Received: path={path}, with arrays {keys}"
    )


def _read_idx_pair(folder, prefix):
    images = _find_idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    return read_idx(images), read_idx(labels)


def _find_idx_file(folder, name):
    for candidate in (name + ".gz", name):
        if (Path(folder) / candidate).is_file():
            return Path(folder) / candidate
    return None


def _read_arrays(train, test, validation_split, seed):
    x, y = _standardize_arrays(*train)
    # The project's one split (`repnet_trainer.split`). Training examples
    # come in its seeded random order, so that `max_examples` keeps a random
    # subset and the bounded shuffle buffer mixes all classes even when the
    # source is sorted by class.
    train_index, validation_index = split.split_indices(
        len(x), validation_split, seed
    )
    validation = x[validation_index], y[validation_index]
    train = x[train_index], y[train_index]
    test = None if test is None else _standardize_arrays(*test)
    labels = np.concatenate([y] + ([] if test is None else [test[1]]))
    _check_num_classes(
        len(np.unique(labels)), f"labels with values {np.unique(labels)}"
    )
    class_names = [str(label) for label in range(labels.max() + 1)]
    return (
        _from_arrays(*train),
        _from_arrays(*validation),
        None if test is None else _from_arrays(*test),
        class_names,
    )


def _standardize_arrays(x, y):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    _require(
        x.ndim == 4 and x.shape[-1] in (1, 3),
        "Expected images of shape (N, H, W), (N, H, W, 1) or "
        f"(N, H, W, 3). Received: x.shape={x.shape}",
    )
    _require(
        np.issubdtype(x.dtype, np.number),
        "Expected numeric images with values in [0, 255]. "
        f"Received: x.dtype={x.dtype}",
    )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    _require(
        y.ndim == 1 and len(y) == len(x),
        "Expected one integer label per image, of shape (N,). "
        f"Received: x.shape={x.shape}, y.shape={y.shape}",
    )
    _require(
        np.issubdtype(y.dtype, np.integer),
        "Expected integer class labels; convert them with "
        f"`y.astype('int32')`. Received: y.dtype={y.dtype}",
    )
    _require(
        not len(y) or y.min() >= 0,
        "Expected class labels >= 0. "
        f"Received: labels with minimum {y.min() if len(y) else None}",
    )
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x, y.astype(np.int32)


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _from_arrays(x, y):
    return pipeline.Examples(tf.data.Dataset.from_tensor_slices((x, y)), len(x))


def _read_tfds(name, image_size, validation_split):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "Loading a TensorFlow Datasets source needs the "
            "`tensorflow-datasets` package. Install it with "
            f"`pip install keras-repnet[tfds]`. Received: source='tfds:{name}'"
        ) from error
    builder = tfds.builder(name)
    builder.download_and_prepare()

    def read_split(split):
        dataset = builder.as_dataset(split=split, as_supervised=True)
        num_examples = builder.info.splits[split].num_examples
        return pipeline.Examples(
            pipeline.stored_as_uint8(dataset, image_size), num_examples
        )

    train_name, validation_name, test_name = _tfds_split_names(
        builder.info.splits.keys(), validation_split
    )
    train = read_split(train_name)
    validation = (
        read_split(validation_name) if validation_name else train.empty()
    )
    test = read_split(test_name) if test_name else None
    return train, validation, test, builder.info.features["label"].names


def _tfds_split_names(available, validation_split):
    """Returns the tfds split names for training, validation (or None) and
    test (or None)."""
    test = "test" if "test" in available else None
    if "validation" in available:
        return "train", "validation", test
    if not validation_split:
        return "train", None, test
    percent = round(100 * (1 - validation_split))
    return f"train[:{percent}%]", f"train[{percent}%:]", test
