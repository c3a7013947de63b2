"""Image classification datasets as batched, preprocessed `tf.data` pipelines.

`load()` reads an image folder, MNIST-style idx files, a `.npz` file, numpy
arrays or a TensorFlow Datasets name, and returns a `DatasetSplits` whose
`train`, `validation` and `test` datasets yield `(images, labels)` batches
ready for `model.fit()`. Validation is for every choice (learning rate,
epochs); the test split, where there is one, for the final number only.
"""

import dataclasses
import functools
import importlib
import inspect
import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_repnet.core import backbones
from keras_repnet.core.recipe import REPNET
from keras_repnet.core.recipe import Recipe
from keras_repnet.data import pipeline
from keras_repnet.data import sources
from keras_repnet.data.sources import load_idx_folder
from keras_repnet.data.sources import read_idx


@dataclasses.dataclass
class DatasetSplits:
    """Training, validation and test pipelines of one image classification
    dataset.

    All datasets yield `(images, labels)` batches: `images` is a float32
    tensor of shape `(batch, height, width, 3)` already passed through the
    `preprocess` function given to `load()`, and `labels` is int32 of shape
    `(batch,)`. `validation` and `test` are never augmented and always in the same
    order.

    Args:
        train: `tf.data.Dataset`. Shuffled (and augmented) training batches.
        validation: `tf.data.Dataset`. Validation batches; empty when
            `num_validation` is 0.
        class_names: list of str. Name of each class, indexed by label.
        num_train: int. Number of training examples.
        num_validation: int. Number of validation examples.
        test: `tf.data.Dataset` or `None`. Test batches, to evaluate once at
            the end; `None` when the data has no test split.
        num_test: int. Number of test examples.
        train_files: list of str, or `None`. For an image folder, the
            training images' paths relative to it, in `train`'s order before
            shuffling; `None` for other sources.
        validation_files: list of str, or `None`. Likewise for `validation`.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    class_names: list[str]
    num_train: int
    num_validation: int
    test: tf.data.Dataset | None = None
    num_test: int = 0
    train_files: list[str] | None = None
    validation_files: list[str] | None = None

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


def load(
    source: str | os.PathLike | tuple[np.ndarray, np.ndarray],
    *,
    image_size: int | tuple[int, int] | None = None,
    test: str | os.PathLike | tuple[np.ndarray, np.ndarray] | None = None,
    batch_size: int | None = None,
    validation_split: float | None = None,
    seed: int | None = None,
    preprocess: Callable | None = None,
    augment: bool = True,
    max_examples: int | None = None,
    recipe: Recipe | None = None,
    strict_images: bool = False,
) -> DatasetSplits:
    """Loads an image classification dataset as train, validation and test
    batches.

    Images are decoded once and cached as uint8, converted to RGB and resized
    to `image_size` (bilinear). Training examples are reshuffled every epoch
    and, with `augment=True`, randomly cropped (the recipe's
    `min_crop_area`-100% of the area, aspect ratio 3/4-4/3), resized back and
    randomly flipped left-right. Batches of float32 images in `[0, 255]`
    then go through `preprocess`. Settings left `None` come from `recipe`.

    Example:

    ```python
    splits = keras_repnet.data.load(
        "flowers/",
        recipe=model.recipe,  # image size, batch size, split, seed, crops
        preprocess=preprocessing_for("MobileNetV2"),
    )
    model.fit(splits.train, validation_data=splits.validation)
    ```

    Args:
        source: the dataset. One of:
            - a folder with one sub-folder of images per class, split with
              `keras.utils.image_dataset_from_directory`, or a folder
              holding two such folders, `train/` and `test/`;
            - a folder of MNIST-style idx files (see `load_idx_folder()`);
            - a `.npz` file with arrays `x` and `y`, or `x_train` and
              `y_train` and optionally `x_test` and `y_test`;
            - a tuple `(x, y)` of numpy arrays: images of shape `(N, H, W)`,
              `(N, H, W, 1)` or `(N, H, W, 3)` with values in `[0, 255]` and
              integer labels of shape `(N,)`;
            - `"tfds:NAME"`, a TensorFlow Datasets name (needs
              `pip install keras-repnet[tfds]`).
            Numpy labels must be integers >= 0; class `i` is named `str(i)`.
            A source's own held-out split (a `test/` folder, idx `t10k-*`
            files, npz `x_test`/`y_test`, a tfds `test` split) becomes the
            test split.
        image_size: int or tuple of two ints. Height and width of the output
            images; an int gives square images. Defaults to the recipe's.
        test: a separate test set in any form `source` takes (e.g. the
            `test/` folder of a dataset), read whole as the test split; it
            must have the same classes. Defaults to `None`: the source's own
            test split, if any.
        batch_size: int. Number of examples per batch. The last batch may be
            smaller. Defaults to the recipe's.
        validation_split: float. Fraction of the examples held out for
            validation, in `[0, 1)`, drawn from the training examples (never
            from the test split). Ignored for a tfds source with a
            `validation` split. With `0`, `validation` is an empty dataset.
            Defaults to the recipe's.
        seed: int. Seed of the train/validation split, the shuffling and the
            augmentation. Defaults to `1337`.
        preprocess: callable or `None`. Applied to batches of float32 images
            in `[0, 255]`, e.g. the result of `preprocessing_for()`. Defaults
            to `None` (images stay in `[0, 255]`).
        augment: bool. Whether to augment the training images. Defaults to
            `True`.
        max_examples: int or `None`. If set, keeps only the first
            `max_examples` examples of the training split and of the
            validation split, each capped after the seeded split and shuffle
            (the test split stays whole), for quick runs. Defaults to `None`.
        recipe: `keras_repnet.Recipe`. Where settings left `None` come from,
            and the crops' smallest area. Defaults to Rep-Net's recipe.
        strict_images: bool. In an image folder, files that cannot be
            decoded (empty, truncated, not images) are found before
            training, reported once each with a summary, and left out; with
            `True` the first one raises a `ValueError` instead. Defaults to
            `False`.

    Returns:
        A `DatasetSplits`.
    """
    recipe = recipe or REPNET
    image_size = _standardize_image_size(
        recipe.image_size if image_size is None else image_size
    )
    batch_size = recipe.batch_size if batch_size is None else batch_size
    seed = recipe.seed if seed is None else seed
    if validation_split is None:
        validation_split = recipe.validation_split
    _check_positive_int("batch_size", batch_size)
    if max_examples is not None:
        _check_positive_int("max_examples", max_examples)
    if not 0 <= validation_split < 1:
        raise ValueError(
            "`validation_split` must be in [0, 1). "
            f"Received: validation_split={validation_split}"
        )
    train, validation, held_out, class_names = sources.read_source(
        source, image_size, validation_split, seed, strict_images
    )
    if test is not None:
        held_out, test_class_names = sources.read_test_source(
            test, image_size, seed, strict_images
        )
        if test_class_names != class_names:
            raise ValueError(
                "The test set must have the classes of the training set. "
                f"Received: classes {test_class_names} in test={test!r}, "
                f"{class_names} in source={source!r}"
            )
    train = train.take(max_examples)
    validation = validation.take(max_examples)
    batched = functools.partial(
        pipeline.batched,
        image_size=image_size,
        batch_size=batch_size,
        preprocess=preprocess,
    )
    return DatasetSplits(
        train=batched(
            train.dataset,
            shuffle_buffer=train.size,
            seed=seed,
            min_crop_area=recipe.min_crop_area if augment else None,
        ),
        validation=batched(validation.dataset),
        class_names=class_names,
        num_train=train.size,
        num_validation=validation.size,
        test=None if held_out is None else batched(held_out.dataset),
        num_test=0 if held_out is None else held_out.size,
        train_files=train.files,
        validation_files=validation.files,
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
