import gzip
import importlib.util
import re
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import FASHION_MNIST
from helpers import FLOWERS
from helpers import requires

from keras_repnet import data


def as_arrays(dataset):
    """Concatenates every batch of a dataset into `(images, labels)`."""
    batches = list(dataset.as_numpy_iterator())
    return tuple(np.concatenate(parts) for parts in zip(*batches))


def greyscale_arrays(num_examples=40, num_classes=4, size=28):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (num_examples, size, size), dtype=np.uint8)
    return x, np.arange(num_examples) % num_classes


def write_idx(path, array):
    """Writes a uint8 array as a gzipped idx file (big-endian header)."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += np.array(array.shape, dtype=">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_idx_folder(folder, train, test=None):
    folder.mkdir()
    splits = {"train": train, "t10k": test} if test else {"train": train}
    for prefix, (x, y) in splits.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


def contains_image(images, image):
    return any(np.array_equal(candidate, image) for candidate in images)


# === Image folders ===


def test_image_folder_batches(make_image_folder):
    splits = data.load(make_image_folder(), image_size=16, batch_size=4)

    assert splits.class_names == ["cat", "dog", "fox"]
    assert splits.num_classes == 3
    assert (splits.num_train, splits.num_validation) == (15, 3)
    images, labels = next(iter(splits.train))
    assert images.shape == (4, 16, 16, 3)
    assert images.dtype == "float32"
    assert labels.dtype == "int32"
    assert 0 <= np.min(images) and np.max(images) <= 255
    val_images, val_labels = as_arrays(splits.validation)
    assert val_images.shape == (3, 16, 16, 3)
    assert set(val_labels) <= {0, 1, 2}


def test_image_folder_split_is_seeded(make_image_folder):
    folder = make_image_folder()

    def validation(seed):
        splits = data.load(folder, image_size=16, seed=seed)
        return as_arrays(splits.validation)[0]

    np.testing.assert_array_equal(validation(1), validation(1))
    assert not np.array_equal(validation(1), validation(2))


def test_image_folder_applies_preprocess(make_image_folder):
    splits = data.load(
        make_image_folder(),
        image_size=16,
        preprocess=keras.applications.mobilenet_v2.preprocess_input,
    )

    for dataset in (splits.train, splits.validation):
        images, _ = as_arrays(dataset)
        assert -1 <= images.min() < 0 and images.max() <= 1


def test_image_folder_without_validation_split(make_image_folder):
    splits = data.load(make_image_folder(), image_size=16, validation_split=0)

    assert (splits.num_train, splits.num_validation) == (18, 0)
    assert len(list(splits.validation)) == 0


def test_separate_test_folder(make_image_folder):
    train = make_image_folder(["a", "b"], 10, (12, 12), folder="train")
    test = make_image_folder(["a", "b"], 3, (12, 12), folder="test")

    splits = data.load(train, test=test, image_size=8, validation_split=0.2)

    assert (splits.num_train, splits.num_validation, splits.num_test) == (
        16, 4, 6
    )
    images, labels = as_arrays(splits.test)
    assert images.shape == (6, 8, 8, 3)
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    # The test split is the same every time it is read: never augmented.
    np.testing.assert_array_equal(images, as_arrays(splits.test)[0])


def test_train_and_test_folders_of_one_dataset(make_image_folder, tmp_path):
    make_image_folder(["a", "b"], 10, (12, 12), folder="set/train")
    make_image_folder(["a", "b"], 3, (12, 12), folder="set/test")

    splits = data.load(tmp_path / "set", image_size=8, validation_split=0.2)

    assert splits.class_names == ["a", "b"]
    assert (splits.num_train, splits.num_validation, splits.num_test) == (
        16, 4, 6
    )


def test_test_folder_with_other_classes(make_image_folder):
    train = make_image_folder(["a", "b"], 4, (12, 12), folder="train")
    test = make_image_folder(["a", "c"], 2, (12, 12), folder="test")

    with pytest.raises(ValueError, match=r"classes \['a', 'c'\]"):
        data.load(train, test=test, image_size=8)


def test_no_test_split(make_image_folder):
    splits = data.load(make_image_folder(), image_size=16)

    assert splits.test is None and splits.num_test == 0


@requires(FLOWERS)
def test_flowers_folder():
    splits = data.load(FLOWERS, image_size=32, batch_size=8)

    assert splits.class_names == [
        "daisy",
        "dandelion",
        "rose",
        "sunflower",
        "tulip",
    ]
    assert splits.num_train + splits.num_validation == 4317
    images, labels = next(iter(splits.validation))
    assert images.shape == (8, 32, 32, 3)
    assert np.all((labels.numpy() >= 0) & (labels.numpy() < 5))


# === Numpy arrays ===


def test_greyscale_arrays_become_resized_rgb():
    splits = data.load(greyscale_arrays(), image_size=(16, 12), batch_size=8)

    images, labels = next(iter(splits.train))
    assert images.shape == (8, 16, 12, 3)
    assert labels.dtype == "int32"
    val_images, _ = as_arrays(splits.validation)
    np.testing.assert_array_equal(val_images[..., 0], val_images[..., 2])
    assert splits.class_names == ["0", "1", "2", "3"]
    assert (splits.num_train, splits.num_validation) == (32, 8)


def test_validation_is_deterministic_and_not_augmented():
    x, y = greyscale_arrays()
    splits = data.load((x, y), image_size=28, batch_size=8, augment=True)
    source = np.repeat(x[..., np.newaxis], 3, axis=-1)

    first, second = as_arrays(splits.validation), as_arrays(splits.validation)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert all(contains_image(source, image) for image in first[0])
    train_images, _ = as_arrays(splits.train)
    assert not all(contains_image(source, image) for image in train_images)


def test_train_reshuffles_each_epoch_without_augmentation():
    x, y = greyscale_arrays()
    splits = data.load((x, y), image_size=28, augment=False)
    source = np.repeat(x[..., np.newaxis], 3, axis=-1)

    first, second = as_arrays(splits.train), as_arrays(splits.train)
    assert not np.array_equal(first[1], second[1])
    np.testing.assert_array_equal(np.sort(first[1]), np.sort(second[1]))
    assert all(contains_image(source, image) for image in first[0])


def test_augmentation_is_seeded_and_changes_every_epoch():
    x, y = greyscale_arrays()

    def two_epochs(seed):
        splits = data.load((x, y), image_size=28, seed=seed)
        return as_arrays(splits.train)[0], as_arrays(splits.train)[0]

    first, second = two_epochs(seed=1)
    np.testing.assert_array_equal(first, two_epochs(seed=1)[0])
    assert not np.array_equal(first, second)


def test_max_examples_caps_each_split():
    x, y = greyscale_arrays(num_examples=100)
    splits = data.load((x, y), image_size=8, max_examples=10)

    assert (splits.num_train, splits.num_validation) == (10, 10)
    assert len(as_arrays(splits.train)[1]) == 10
    assert len(as_arrays(splits.validation)[1]) == 10


def test_float_rgb_arrays_and_column_labels():
    x = np.full((10, 8, 8, 3), 127.6, dtype="float32")
    y = np.arange(10)[:, np.newaxis] % 2
    splits = data.load((x, y), image_size=8, augment=False)

    images, labels = as_arrays(splits.train)
    assert np.all(images == 128)
    assert labels.shape == (8,)


# === idx and npz files ===


def test_read_idx_round_trip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "labels.gz", np.array([7, 3], dtype=np.uint8))

    np.testing.assert_array_equal(data.read_idx(tmp_path / "images.gz"), images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "labels.gz"), [7, 3])


def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "labels").write_bytes(b"\x00\x00\x0d\x01\x00")
    with pytest.raises(ValueError, match="magic number 3329"):
        data.read_idx(tmp_path / "labels")


def test_idx_folder_uses_test_files_as_test_split(tmp_path):
    train = greyscale_arrays(num_examples=20)
    test = greyscale_arrays(num_examples=6)
    folder = write_idx_folder(tmp_path / "idx", train, test)

    (x_train, y_train), (x_test, _) = data.load_idx_folder(folder)
    np.testing.assert_array_equal(x_train, train[0])
    np.testing.assert_array_equal(y_train, train[1])
    assert x_test.shape == (6, 28, 28)
    splits = data.load(folder, image_size=14, validation_split=0.25)
    assert (splits.num_train, splits.num_validation, splits.num_test) == (
        15, 5, 6
    )
    np.testing.assert_array_equal(as_arrays(splits.test)[1], test[1])
    # Validation comes from the training files, never from the test files.
    train_labels = np.concatenate(
        [as_arrays(splits.train)[1], as_arrays(splits.validation)[1]]
    )
    np.testing.assert_array_equal(np.sort(train_labels), np.sort(train[1]))


def test_idx_folder_without_test_files_is_split(tmp_path):
    folder = write_idx_folder(tmp_path / "idx", greyscale_arrays(20))

    assert data.load_idx_folder(folder)[1] is None
    splits = data.load(folder, image_size=14, validation_split=0.25)
    assert (splits.num_train, splits.num_validation) == (15, 5)


@requires(FASHION_MNIST)
def test_fashion_mnist_folder():
    splits = data.load(
        FASHION_MNIST, image_size=32, batch_size=16, max_examples=64
    )

    assert splits.class_names == [str(label) for label in range(10)]
    assert (splits.num_train, splits.num_validation) == (64, 64)
    assert splits.num_test == 10000
    images, labels = next(iter(splits.train))
    assert images.shape == (16, 32, 32, 3)
    assert np.all(labels.numpy() < 10)


def test_npz_with_x_and_y(tmp_path):
    x, _ = greyscale_arrays()
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(40) % 2)
    splits = data.load(tmp_path / "data.npz", image_size=8)

    assert (splits.num_train, splits.num_validation) == (32, 8)
    assert splits.class_names == ["0", "1"]


def test_npz_with_test_arrays(tmp_path):
    x, y = greyscale_arrays()
    np.savez(
        tmp_path / "data.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5]
    )
    splits = data.load(str(tmp_path / "data.npz"), image_size=8)

    assert (splits.num_train, splits.num_validation, splits.num_test) == (
        32, 8, 5
    )


# === preprocessing_for ===


@pytest.mark.parametrize(
    "backbone, expected",
    [
        (
            keras.applications.MobileNetV2,
            keras.applications.mobilenet_v2.preprocess_input,
        ),
        ("MobileNetV3Small", keras.applications.mobilenet_v3.preprocess_input),
        (
            keras.applications.ResNet50,
            keras.applications.resnet50.preprocess_input,
        ),
        ("EfficientNetB0", keras.applications.efficientnet.preprocess_input),
        ("ConvNeXtTiny", keras.applications.convnext.preprocess_input),
    ],
)
def test_preprocessing_for(backbone, expected):
    assert data.preprocessing_for(backbone) is expected


def test_preprocessing_for_built_model_is_none():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))

    assert data.preprocessing_for(model) is None


def test_preprocessing_for_unknown_name():
    with pytest.raises(ValueError, match="Unknown backbone 'MobileNetV9'.*MobileNetV2"):
        data.preprocessing_for("MobileNetV9")


# === Invalid inputs ===

X, Y = greyscale_arrays(num_examples=5, num_classes=2, size=8)


@pytest.mark.parametrize(
    "source, kwargs, match",
    [
        ((X, Y[:4]), {}, "y.shape=(4,)"),
        ((X[:, :, 0], Y), {}, "x.shape=(5, 8)"),
        ((np.zeros((5, 8, 8, 2)), Y), {}, "x.shape=(5, 8, 8, 2)"),
        ((X, Y - 1), {}, "minimum -1"),
        ((X, Y.astype("float32")), {}, "y.dtype=float32"),
        ((X, np.zeros(5, dtype=int)), {}, "at least 2 classes"),
        ((X, Y, Y), {}, "tuple of length 3"),
        (42, {}, "source of type int"),
        ((X, Y), {"validation_split": 1.0}, "validation_split=1.0"),
        ((X, Y), {"validation_split": -0.1}, "validation_split=-0.1"),
        ((X, Y), {"image_size": 0}, "image_size=0"),
        ((X, Y), {"image_size": (16,)}, "image_size=(16,)"),
        ((X, Y), {"batch_size": 0}, "batch_size=0"),
        ((X, Y), {"max_examples": 0}, "max_examples=0"),
    ],
)
def test_invalid_arguments(source, kwargs, match):
    kwargs = {"image_size": 8, **kwargs}
    with pytest.raises(ValueError, match=re.escape(match)):
        data.load(source, **kwargs)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        data.load(tmp_path / "does-not-exist", image_size=8)


def test_file_that_is_not_npz(tmp_path):
    (tmp_path / "data.txt").write_text("not images")
    with pytest.raises(ValueError, match=r"\.npz.*data\.txt"):
        data.load(tmp_path / "data.txt", image_size=8)


def test_npz_without_expected_keys(tmp_path):
    np.savez(tmp_path / "data.npz", a=X, b=Y)
    with pytest.raises(ValueError, match=re.escape("arrays ['a', 'b']")):
        data.load(tmp_path / "data.npz", image_size=8)


def test_folder_without_class_folders(tmp_path):
    keras.utils.save_img(tmp_path / "image.png", np.zeros((8, 8, 3)))
    match = f"{re.escape(str(tmp_path))}.*0 class folders.*at least 2 classes"
    with pytest.raises(ValueError, match=match):
        data.load(tmp_path, image_size=8)


def test_folder_with_one_class(make_image_folder):
    folder = make_image_folder(class_names=["cat"])
    with pytest.raises(ValueError, match=r"1 class folder: \['cat'\]"):
        data.load(folder, image_size=8)


def test_folder_without_images(tmp_path):
    for class_name in ("cat", "dog"):
        (tmp_path / class_name).mkdir()
    match = f"{re.escape(str(tmp_path))}.*hold no images"
    with pytest.raises(ValueError, match=match):
        data.load(tmp_path, image_size=8)


def fake_tfds(split_sizes):
    """A stand-in `tensorflow_datasets` module with 12x10 RGB images."""

    def as_dataset(split, as_supervised):
        assert as_supervised
        size = split_sizes[split]
        images = np.zeros((size, 12, 10, 3), np.uint8)
        return tf.data.Dataset.from_tensor_slices(
            (images, np.arange(size, dtype=np.int64) % 2)
        )

    info = types.SimpleNamespace(
        splits={
            name: types.SimpleNamespace(num_examples=size)
            for name, size in split_sizes.items()
        },
        features={"label": types.SimpleNamespace(names=["no", "yes"])},
    )
    builder = types.SimpleNamespace(
        download_and_prepare=lambda: None, as_dataset=as_dataset, info=info
    )
    return types.SimpleNamespace(builder=lambda name: builder)


@pytest.mark.parametrize(
    "split_sizes, validation_split, expected",
    [
        ({"train": 10, "test": 4, "train[:80%]": 8, "train[80%:]": 2}, 0.2,
         (8, 2, 4)),
        ({"train": 10, "validation": 3, "test": 4}, 0.2, (10, 3, 4)),
        ({"train": 10, "train[:70%]": 7, "train[70%:]": 3}, 0.3, (7, 3, 0)),
        ({"train": 10}, 0.0, (10, 0, 0)),
    ],
)
def test_tfds_splits(monkeypatch, split_sizes, validation_split, expected):
    monkeypatch.setitem(
        sys.modules, "tensorflow_datasets", fake_tfds(split_sizes)
    )
    splits = data.load(
        "tfds:fake", image_size=8, validation_split=validation_split
    )

    assert splits.class_names == ["no", "yes"]
    assert (
        splits.num_train, splits.num_validation, splits.num_test
    ) == expected
    assert as_arrays(splits.train)[0].shape == (expected[0], 8, 8, 3)
    assert len(list(splits.validation.unbatch())) == expected[1]
    if expected[2]:
        assert len(list(splits.test.unbatch())) == expected[2]
    else:
        assert splits.test is None


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_datasets") is not None,
    reason="tensorflow_datasets is installed",
)
def test_tfds_without_tensorflow_datasets():
    with pytest.raises(ImportError, match=re.escape("keras-repnet[tfds]")):
        data.load("tfds:tf_flowers", image_size=8)


def test_keras_and_the_device_split_a_folder_alike(make_image_folder):
    """`keras_repnet.data.load` and the device trainer (`repnet_trainer`)
    hold out the same validation files of the same folder, seed and share,
    unreadable files included. Nothing trains."""
    from repnet_trainer import data as device_data
    from repnet_trainer import split

    folder = make_image_folder(images_per_class=12, size=(16, 16))
    (folder / "cat" / "empty.jpg").write_bytes(b"")
    (folder / "dog" / "notes.png").write_text("not an image")
    good = (folder / "fox" / "0.png").read_bytes()
    (folder / "fox" / "half.png").write_bytes(good[: len(good) // 2])

    keras_side = data.load(folder, image_size=8, validation_split=0.25, seed=5)
    _, _, _, kept = device_data.load_image_folder(folder, (8, 8), log=lambda s: None)
    train, validation = split.split_kept(kept, 0.25, 5)
    names = [n for n, k in zip(split.list_image_files(folder)[0], kept) if k]
    device_train = {names[i] for i in train}
    device_validation = {names[i] for i in validation}

    assert set(keras_side.validation_files) == device_validation
    assert set(keras_side.train_files) == device_train
    assert not device_validation & device_train
    assert len(device_train | device_validation) == 36  # The readable ones.
    assert {"cat/empty.jpg", "dog/notes.png", "fox/half.png"}.isdisjoint(
        device_train | device_validation
    )


def test_unreadable_images_are_reported_and_skipped_or_refused(
    make_image_folder, capsys
):
    """A zero-byte file, a text file named .jpg and a truncated JPEG: `load`
    names each one, then every batch of both splits reads (TensorFlow's
    decoder never sees them); with `strict_images` the first one stops it
    with a `ValueError` that names the file and the way out."""
    folder = make_image_folder(images_per_class=4, size=(16, 16))
    (folder / "cat" / "zero.jpg").write_bytes(b"")
    (folder / "dog" / "notes.jpg").write_text("not an image")
    jpeg = tf.io.encode_jpeg(np.full((16, 16, 3), 128, np.uint8)).numpy()
    (folder / "fox" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])

    splits = data.load(
        folder, image_size=8, batch_size=4, validation_split=0.25, seed=1
    )
    printed = capsys.readouterr().out
    for name in ("zero.jpg", "notes.jpg", "cut.jpg"):
        assert name in printed
    assert "Skipped 3 of 15 files" in printed
    seen = sum(int(y.shape[0]) for _, y in splits.train) + sum(
        int(y.shape[0]) for _, y in splits.validation
    )
    assert seen == 12

    with pytest.raises(ValueError, match=r"cat/zero\.jpg.*strict_images"):
        data.load(folder, image_size=8, validation_split=0.25, strict_images=True)
