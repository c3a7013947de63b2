"""The sources `load()` reads: image folders, idx files, `.npz` files,
numpy arrays and TensorFlow Datasets.

Each reader returns `((train, num_train), (validation, num_validation),
test, class_names)` where `test` is `(test, num_test)` for a source with a
held-out split of its own, else `None`, and the datasets yield unbatched
`(uint8 image, int32 label)`.
"""

import gzip
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

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


def read_source(source, image_size, validation_split, seed):
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
        return _read_path(Path(source), image_size, validation_split, seed)
    raise ValueError(
        "Expected `source` to be a path to an image folder, an idx folder or "
        "a `.npz` file, a tuple `(x, y)` of numpy arrays, or 'tfds:NAME'. "
        f"Received: source of type {type(source).__name__}"
    )


def _read_path(path, image_size, validation_split, seed):
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
            path / "train", image_size, validation_split, seed
        )
        test, test_class_names = read_test_source(
            path / "test", image_size, seed
        )
        _require(
            test_class_names == class_names,
            "The train/ and test/ folders must hold the same class "
            f"sub-folders. Received: {class_names} in {path / 'train'}, "
            f"{test_class_names} in {path / 'test'}",
        )
        return train, validation, test, class_names
    if path.is_dir():
        return _read_image_folder(path, image_size, validation_split, seed)
    if path.suffix == ".npz":
        return _read_arrays(*_load_npz(path), validation_split, seed)
    raise ValueError(
        "Expected a folder or a `.npz` file. "
        f"Received: source={str(path)!r}"
    )


def read_test_source(test, image_size, seed):
    """Reads a whole source as one test split: `((dataset, count),
    class_names)`."""
    (dataset, count), _, held_out, class_names = read_source(
        test, image_size, 0.0, seed
    )
    _require(
        held_out is None,
        "A test set must be one split, not a source with a test split of "
        f"its own. Received: test={test!r}",
    )
    return (dataset, count), class_names


def _is_split_folder(path):
    """Whether `path` holds exactly a `train/` and a `test/` image folder."""
    children = {item.name for item in path.iterdir() if item.is_dir()}
    return children == {"train", "test"} and any(
        item.is_dir() for item in (path / "train").iterdir()
    )


def _read_image_folder(path, image_size, validation_split, seed):
    class_folders = sorted(
        item.name for item in path.iterdir() if item.is_dir()
    )
    _check_num_classes(
        len(class_folders),
        f"path={path}, with class sub-folders {class_folders}. Put the "
        "images of each class in their own sub-folder, e.g. "
        f"{path / 'cat' / '001.jpg'}",
    )
    split_args = (
        dict(validation_split=validation_split, subset="both")
        if validation_split
        else {}
    )
    try:
        datasets = keras.utils.image_dataset_from_directory(
            str(path),
            label_mode="int",
            image_size=image_size,
            batch_size=None,
            seed=seed,
            **split_args,
        )
    except ValueError as error:
        raise ValueError(
            "Could not read an image folder with one sub-folder of images per "
            f"class (e.g. {path / 'cat' / '001.jpg'}): {error} "
            f"Received: path={path}, validation_split={validation_split}"
        ) from error
    if not validation_split:
        train = _counted_files(datasets, image_size)
        return train, _empty(train), None, datasets.class_names
    train, validation = datasets
    return (
        _counted_files(train, image_size),
        _counted_files(validation, image_size),
        None,
        train.class_names,
    )


def _counted_files(dataset, image_size):
    return pipeline.stored_as_uint8(dataset, image_size), len(dataset.file_paths)


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
    # Training examples are always in a seeded random order, so that
    # `max_examples` keeps a random subset and the bounded shuffle buffer
    # mixes all classes even when the source is sorted by class.
    order = np.random.default_rng(seed).permutation(len(x))
    num_validation = int(validation_split * len(x))
    validation = x[order[:num_validation]], y[order[:num_validation]]
    train = x[order[num_validation:]], y[order[num_validation:]]
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
    return tf.data.Dataset.from_tensor_slices((x, y)), len(x)


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
        return pipeline.stored_as_uint8(dataset, image_size), num_examples

    train_name, validation_name, test_name = _tfds_split_names(
        builder.info.splits.keys(), validation_split
    )
    train = read_split(train_name)
    validation = (
        read_split(validation_name) if validation_name else _empty(train)
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


def _empty(split):
    """Returns an empty `(dataset, 0)` split of the same element type."""
    dataset, _ = split
    return dataset.take(0), 0
