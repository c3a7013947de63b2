"""The `tf.data` side of `load()`: uint8 storage, the batched and
preprocessed pipeline, and augmentation."""

import dataclasses
import functools

import tensorflow as tf

# Decoded training images are shuffled from the cache each epoch with a
# buffer of at most this many uint8 images. Sources are already in a seeded
# random order, so a bounded buffer is enough and keeps memory in check.
_MAX_SHUFFLE_BUFFER = 4096


def stored_as_uint8(dataset, image_size):
    """Resizes decoded images to `image_size` and rounds them to uint8."""
    return dataset.map(
        functools.partial(_as_uint8, image_size=image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


@dataclasses.dataclass
class Examples:
    """One split as a source reads it: unbatched `(uint8 image, int32
    label)` examples, how many, and for an image folder their files
    (relative paths, in the dataset's order)."""

    dataset: tf.data.Dataset
    size: int
    files: list[str] | None = None

    def take(self, max_examples):
        """The first `max_examples` (all of them for `None`)."""
        if max_examples is None or self.size <= max_examples:
            return self
        files = None if self.files is None else self.files[:max_examples]
        return Examples(self.dataset.take(max_examples), max_examples, files)

    def empty(self):
        return Examples(self.dataset.take(0), 0, None if self.files is None else [])


def batched(
    dataset,
    *,
    image_size,
    batch_size,
    preprocess,
    shuffle_buffer=0,
    seed=None,
    min_crop_area=None,
):
    """Batches `(uint8 image, label)` examples as float32 `(images, labels)`.

    Shuffles when `shuffle_buffer > 0`; with a `min_crop_area`, augments
    with random crops of that much of the area or more, and flips.
    """
    dataset = dataset.cache()
    if shuffle_buffer:
        dataset = dataset.shuffle(
            min(shuffle_buffer, _MAX_SHUFFLE_BUFFER),
            seed=seed,
            reshuffle_each_iteration=True,
        )
    if min_crop_area is not None:
        dataset = _augmented(dataset, seed, min_crop_area)
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


def _augmented(dataset, seed, min_crop_area):
    """Randomly crops and flips each image, with stateless per-image seeds.

    The seeds come from `seed` and change every epoch, so augmentation is
    reproducible even though images are processed in parallel.
    """
    seeds = tf.data.Dataset.random(seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(dataset, seeds.batch(2)).map(
        functools.partial(_augment, min_crop_area=min_crop_area),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _augment(example, seed, min_crop_area):
    image, label = example
    crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
    image = _random_resized_crop(image, crop_seed, min_crop_area)
    return tf.image.stateless_random_flip_left_right(image, flip_seed), label


def _random_resized_crop(image, seed, min_crop_area):
    """Crops a random box of `min_crop_area`-100% of the area and aspect
    ratio 3/4-4/3."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(min_crop_area, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.image.crop_to_bounding_box(
        image, begin[0], begin[1], size[0], size[1]
    )
