"""Shared pytest fixtures and session set-up."""

import keras
import numpy as np
import pytest
import tensorflow as tf

# Two logical CPU devices, so that tf.distribute tests really mirror. This
# must run before TensorFlow initialises its devices, hence at import time.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)


@pytest.fixture
def make_image_folder(tmp_path):
    """Returns a function that writes a small image folder, one class a folder.

    The function takes `class_names` (default `("cat", "dog", "fox")`),
    `images_per_class` (default 6), `size` (height, width; default
    `(20, 24)`) and `folder` (default `"images"`, a path under `tmp_path`),
    writes random RGB PNG files there and returns the folder's path.
    """

    def make(
        class_names=("cat", "dog", "fox"),
        images_per_class=6,
        size=(20, 24),
        folder="images",
    ):
        root = tmp_path / folder
        rng = np.random.default_rng(0)
        for class_name in class_names:
            (root / class_name).mkdir(parents=True)
            for index in range(images_per_class):
                image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                keras.utils.save_img(root / class_name / f"{index}.png", image)
        return root

    return make
