"""Image classification datasets as batched, preprocessed `tf.data` pipelines.

`load()` reads an image folder, MNIST-style idx files, a `.npz` file, numpy
arrays or a TensorFlow Datasets name, and returns a `DatasetSplits` whose
`train` and `validation` datasets yield `(images, labels)` batches ready for
`model.fit()`.
"""

import dataclasses
import functools
import gzip
import importlib
import inspect
import os
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_repnet import backbones

# Decoded training images are shuffled from the cache each epoch with a
# buffer of at most this many uint8 images. Sources are already in a seeded
# random order, so a bounded buffer is enough and keeps memory in check.
_MAX_SHUFFLE_BUFFER = 4096
_TFDS_PREFIX = "tfds:"


@dataclasses.dataclass
class DatasetSplits:
    """Training and validation pipelines of one image classification dataset.

    Both datasets yield `(images, labels)` batches: `images` is a float32
    tensor of shape `(batch, height, width, 3)` already passed through the
    `preprocess` function given to `load()`, and `labels` is int32 of shape
    `(batch,)`. `validation` is never augmented and always in the same order.

    Args:
        train: `tf.data.Dataset`. Shuffled (and augmented) training batches.
        validation: `tf.data.Dataset`. Validation batches; empty when
            `num_validation` is 0.
        class_names: list of str. Name of each class, indexed by label.
        num_train: int. Number of training examples.
        num_validation: int. Number of validation examples.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    class_names: list[str]
    num_train: int
    num_validation: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def preprocessing_for(backbone) -> Callable | None:
    """Returns the `preprocess_input` function of a `keras.applications` model.

    Example:

    >>> preprocess = preprocessing_for(keras.applications.MobileNetV2)
    >>> preprocess is keras.applications.mobilenet_v2.preprocess_input
    True

    Args:
        backbone: a `keras.applications` constructor (e.g.
            `keras.applications.ResNet50`), its name as a string
            (`"ResNet50"`), or anything else, such as a built `keras.Model`.

    Returns:
        The `preprocess_input` function of the module that defines the
        constructor, which expects float images in `[0, 255]`; `None` when
        `backbone` is not a constructor or its module has no such function.
    """
    if isinstance(backbone, str):
        backbone = backbones.constructor_for(backbone)
    if not inspect.isfunction(backbone):
        return None
    module = importlib.import_module(backbone.__module__)
    return getattr(module, "preprocess_input", None)


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


def load(
    source: str | os.PathLike | tuple[np.ndarray, np.ndarray],
    *,
    image_size: int | tuple[int, int],
    batch_size: int = 32,
    validation_split: float = 0.2,
    seed: int = 1337,
    preprocess: Callable | None = None,
    augment: bool = True,
    max_examples: int | None = None,
) -> DatasetSplits:
    """Loads an image classification dataset as training and validation batches.

    Images are decoded once and cached as uint8, converted to RGB and resized
    to `image_size` (bilinear). Training examples are reshuffled every epoch
    and, with `augment=True`, randomly cropped (25-100% of the area, aspect
    ratio 3/4-4/3), resized back and randomly flipped left-right. Batches of
    float32 images in `[0, 255]` then go through `preprocess`.

    Example:

    ```python
    splits = keras_repnet.data.load(
        "flowers/",
        image_size=224,
        preprocess=preprocessing_for("MobileNetV2"),
    )
    model.fit(splits.train, validation_data=splits.validation)
    ```

    Args:
        source: the dataset. One of:
            - a folder with one sub-folder of images per class, split with
              `keras.utils.image_dataset_from_directory`;
            - a folder of MNIST-style idx files (see `load_idx_folder()`);
            - a `.npz` file with arrays `x` and `y`, or `x_train` and
              `y_train` and optionally `x_test` and `y_test`;
            - a tuple `(x, y)` of numpy arrays: images of shape `(N, H, W)`,
              `(N, H, W, 1)` or `(N, H, W, 3)` with values in `[0, 255]` and
              integer labels of shape `(N,)`;
            - `"tfds:NAME"`, a TensorFlow Datasets name (needs
              `pip install keras-repnet[tfds]`).
            Numpy labels must be integers >= 0; class `i` is named `str(i)`.
        image_size: int or tuple of two ints. Height and width of the output
            images; an int gives square images.
        batch_size: int. Number of examples per batch. The last batch may be
            smaller. Defaults to `32`.
        validation_split: float. Fraction of the examples held out for
            validation, in `[0, 1)`. Ignored when the source has its own test
            split (idx `t10k-*` files, npz `x_test`/`y_test`, or a tfds
            `validation` or `test` split). With `0`, `validation` is an empty
            dataset. Defaults to `0.2`.
        seed: int. Seed of the train/validation split, the shuffling and the
            augmentation. Defaults to `1337`.
        preprocess: callable or `None`. Applied to batches of float32 images
            in `[0, 255]`, e.g. the result of `preprocessing_for()`. Defaults
            to `None` (images stay in `[0, 255]`).
        augment: bool. Whether to augment the training images. Defaults to
            `True`.
        max_examples: int or `None`. If set, keeps only the first
            `max_examples` examples of each split (after the seeded split and
            shuffle), for quick runs. Defaults to `None`.

    Returns:
        A `DatasetSplits`.
    """
    image_size = _standardize_image_size(image_size)
    _check_positive_int("batch_size", batch_size)
    if max_examples is not None:
        _check_positive_int("max_examples", max_examples)
    if not 0 <= validation_split < 1:
        raise ValueError(
            "`validation_split` must be in [0, 1). "
            f"Received: validation_split={validation_split}"
        )
    (train, num_train), (validation, num_validation), class_names = (
        _read_source(source, image_size, validation_split, seed)
    )
    train, num_train = _take(train, num_train, max_examples)
    validation, num_validation = _take(validation, num_validation, max_examples)
    pipeline = functools.partial(
        _pipeline,
        image_size=image_size,
        batch_size=batch_size,
        preprocess=preprocess,
    )
    return DatasetSplits(
        train=pipeline(
            train, shuffle_buffer=num_train, seed=seed, augment=augment
        ),
        validation=pipeline(validation),
        class_names=class_names,
        num_train=num_train,
        num_validation=num_validation,
    )


# === Argument checks ===


def _standardize_image_size(image_size):
    sides = (
        (image_size, image_size) if isinstance(image_size, int) else image_size
    )
    if not (
        isinstance(sides, (tuple, list))
        and len(sides) == 2
        and all(isinstance(side, int) and side > 0 for side in sides)
    ):
        raise ValueError(
            "`image_size` must be a positive int or a tuple of two positive "
            f"ints (height, width). Received: image_size={image_size}"
        )
    return tuple(sides)


def _check_positive_int(name, value):
    if not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value}"
        )


def _check_num_classes(num_classes, received):
    if num_classes < 2:
        raise ValueError(
            "A classification dataset needs at least 2 classes. "
            f"Received: {received}"
        )


# === Sources ===
# Each reader returns `((train, num_train), (validation, num_validation),
# class_names)` where the datasets yield unbatched `(uint8 image, int32 label)`.


def _read_source(source, image_size, validation_split, seed):
    if isinstance(source, str) and source.startswith(_TFDS_PREFIX):
        return _read_tfds(
            source[len(_TFDS_PREFIX) :], image_size, validation_split
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
    if path.is_dir():
        return _read_image_folder(path, image_size, validation_split, seed)
    if path.suffix == ".npz":
        return _read_arrays(*_load_npz(path), validation_split, seed)
    raise ValueError(
        "Expected a folder or a `.npz` file. "
        f"Received: source={str(path)!r}"
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
        return train, _empty(train), datasets.class_names
    train, validation = datasets
    return (
        _counted_files(train, image_size),
        _counted_files(validation, image_size),
        train.class_names,
    )


def _counted_files(dataset, image_size):
    return _stored_as_uint8(dataset, image_size), len(dataset.file_paths)


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
    if test is None:
        num_validation = int(validation_split * len(x))
        validation = x[order[:num_validation]], y[order[:num_validation]]
        order = order[num_validation:]
    else:
        validation = _standardize_arrays(*test)
    train = x[order], y[order]
    labels = np.concatenate([train[1], validation[1]])
    _check_num_classes(
        len(np.unique(labels)), f"labels with values {np.unique(labels)}"
    )
    class_names = [str(label) for label in range(labels.max() + 1)]
    return _from_arrays(*train), _from_arrays(*validation), class_names


def _standardize_arrays(x, y):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            "Expected images of shape (N, H, W), (N, H, W, 1) or "
            f"(N, H, W, 3). Received: x.shape={x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            "Expected numeric images with values in [0, 255]. "
            f"Received: x.dtype={x.dtype}"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            "Expected one integer label per image, of shape (N,). "
            f"Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            "Expected integer class labels; convert them with "
            f"`y.astype('int32')`. Received: y.dtype={y.dtype}"
        )
    if len(y) and y.min() < 0:
        raise ValueError(
            "Expected class labels >= 0. "
            f"Received: labels with minimum {y.min()}"
        )
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x, y.astype(np.int32)


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
        return _stored_as_uint8(dataset, image_size), num_examples

    train_name, validation_name = _tfds_split_names(
        builder.info.splits.keys(), validation_split
    )
    train = read_split(train_name)
    validation = (
        read_split(validation_name) if validation_name else _empty(train)
    )
    return train, validation, builder.info.features["label"].names


def _tfds_split_names(available, validation_split):
    """Returns the tfds split names for training and validation (or None)."""
    for held_out in ("validation", "test"):
        if held_out in available:
            return "train", held_out
    if not validation_split:
        return "train", None
    percent = round(100 * (1 - validation_split))
    return f"train[:{percent}%]", f"train[{percent}%:]"


def _stored_as_uint8(dataset, image_size):
    """Resizes decoded images to `image_size` and rounds them to uint8."""
    return dataset.map(
        functools.partial(_as_uint8, image_size=image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _empty(split):
    """Returns an empty `(dataset, 0)` split of the same element type."""
    dataset, _ = split
    return dataset.take(0), 0


# === Pipeline ===


def _take(dataset, num_examples, max_examples):
    if max_examples is None or num_examples <= max_examples:
        return dataset, num_examples
    return dataset.take(max_examples), max_examples


def _pipeline(
    dataset,
    *,
    image_size,
    batch_size,
    preprocess,
    shuffle_buffer=0,
    seed=None,
    augment=False,
):
    """Batches `(uint8 image, label)` examples as float32 `(images, labels)`.

    Shuffles when `shuffle_buffer > 0` and augments when `augment=True`.
    """
    dataset = dataset.cache()
    if shuffle_buffer:
        dataset = dataset.shuffle(
            min(shuffle_buffer, _MAX_SHUFFLE_BUFFER),
            seed=seed,
            reshuffle_each_iteration=True,
        )
    if augment:
        dataset = _augmented(dataset, seed)
    dataset = dataset.map(
        functools.partial(_as_rgb_float, image_size=image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.batch(batch_size)
    if preprocess is not None:
        dataset = dataset.map(
            lambda images, labels: (preprocess(images), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _as_uint8(image, label, image_size):
    image = tf.saturate_cast(tf.round(_resize(image, image_size)), tf.uint8)
    return image, tf.cast(label, tf.int32)


def _as_rgb_float(image, label, image_size):
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return tf.ensure_shape(_resize(image, image_size), (*image_size, 3)), label


def _resize(image, image_size):
    """Resizes to `image_size` (bilinear) as float32, unless already there."""
    if tuple(image.shape[-3:-1]) == image_size:
        return tf.cast(image, tf.float32)
    return tf.image.resize(image, image_size)


def _augmented(dataset, seed):
    """Randomly crops and flips each image, with stateless per-image seeds.

    The seeds come from `seed` and change every epoch, so augmentation is
    reproducible even though images are processed in parallel.
    """
    seeds = tf.data.Dataset.random(seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(dataset, seeds.batch(2)).map(
        _augment, num_parallel_calls=tf.data.AUTOTUNE
    )


def _augment(example, seed):
    image, label = example
    crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
    image = _random_resized_crop(image, crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed), label


def _random_resized_crop(image, seed):
    """Crops a random box of 25-100% of the area and aspect ratio 3/4-4/3."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.25, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.image.crop_to_bounding_box(
        image, begin[0], begin[1], size[0], size[1]
    )
