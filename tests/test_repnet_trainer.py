"""repnet_trainer: an exported Rep-Net trained by LiteRT alone.

Every command line run is a subprocess (`python -m repnet_trainer`) in which
`import tensorflow` (and `keras`) fails, as on a device without TensorFlow.
"""

import errno
import io
import json
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import tiny_model

import keras_repnet
import repnet_trainer
from keras_repnet.export import export_tflite
from repnet_trainer import cli
from repnet_trainer import data
from repnet_trainer import files
from repnet_trainer import formats
from repnet_trainer import split

ROOT = Path(__file__).resolve().parents[1]
ANDROID_TRAINER = (
    ROOT
    / "tflite/android/app/src/main/java/com/example/repnet/RepNetTrainer.kt"
)
BATCH_SIZE = 4
SIZE = 32
CLASSES = 3
BLOCKED = ("tensorflow", "keras")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model.tflite"
    # As `tiny_model`, without dropout: LiteRT's random generator restarts
    # with every process, so only a model without it resumes bit for bit.
    # Seeded: the tests see the same random initialisation in every run.
    keras.utils.set_random_seed(0)
    model = tiny_model("up", size=SIZE, classes=CLASSES, dropout=0.0)
    export_tflite(model, path, batch_size=BATCH_SIZE, learning_rate=1e-2)
    return path


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
    """A PYTHONPATH entry whose `tensorflow` and `keras` raise ImportError."""
    root = tmp_path_factory.mktemp("blocked")
    for name in BLOCKED:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked in this test')\n"
        )
    return root


@pytest.fixture
def run(model_path, no_tensorflow, tmp_path):
    """Runs the trainer without TensorFlow; returns the CompletedProcess."""

    def run(data, *args, checkpoint=tmp_path / "checkpoint.npz"):
        env = {**os.environ, "PYTHONPATH": str(no_tensorflow)}
        command = [sys.executable, "-m", "repnet_trainer"]
        command += [f"--model={model_path}", f"--data={data}"]
        command += [f"--checkpoint={checkpoint}", *args]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            cwd=ROOT,
        )

    return run


def write_npz(path, num_examples=12, labels=None, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_examples, size, size, 3), dtype=np.uint8)
    if labels is None:
        labels = rng.integers(0, CLASSES, num_examples)
    np.savez(path, x=images, y=labels)
    return path


def read_checkpoint(path):
    with np.load(path) as data:
        meta = json.loads(data["meta.json"].tobytes())
        return {k: data[k] for k in data.files if k != "meta.json"}, meta


class _Unseekable:
    """A write-only stream, as the `ZipOutputStream` of Npz.kt writes to."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        return self._f.write(data)

    def flush(self):
        self._f.flush()


def write_android_checkpoint(path, weights, **meta):
    """Writes a checkpoint byte for byte as the Android sample does.

    Mirrors `tflite/android/app/src/main/java/com/example/repnet/`:
    `RepNetTrainer.save` (the weights of "get_weights" in their order, then
    `meta.json`, an `|u1` array of `JSONObject().put("format", ...)
    .put("epoch", ...).put("step", ...).toString()`: org.json writes no spaces
    and escapes "/" as "\\/"), `Npz.writeAtomically` (a `ZipOutputStream`:
    DEFLATED entries `NAME.npy` streamed with data descriptors) and
    `Npz.header` (an `.npy` 1.0 header, no spaces before the commas of the
    shape, padded to 64 bytes). Keyword arguments go into `meta.json` after
    `format`; a fresh phone run writes `epoch` and `step` only.
    """
    text = json.dumps(
        {"format": "keras-repnet-checkpoint/1", **meta}, separators=(",", ":")
    ).replace("/", "\\/")
    arrays = {**weights, "meta.json": np.frombuffer(text.encode(), np.uint8)}
    with open(path, "wb") as f, zipfile.ZipFile(
        _Unseekable(f), "w", zipfile.ZIP_DEFLATED
    ) as archive:
        for name, value in arrays.items():
            value = np.asarray(value)  # tobytes() is C order, as Npz.kt.
            shape = value.shape
            dims = f"({shape[0]},)" if len(shape) == 1 else (
                "(" + ", ".join(str(d) for d in shape) + ")"
            )
            header = (
                f"{{'descr': '{value.dtype.str}', 'fortran_order': False, "
                f"'shape': {dims}, }}"
            )
            header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
            length = len(header).to_bytes(2, "little")
            npy = b"\x93NUMPY\x01\x00" + length + header.encode("ascii")
            archive.writestr(f"{name}.npy", npy + value.tobytes())
    return path


def epoch_losses(stdout):
    return [
        float(line.split(" loss ")[1].split()[0])
        for line in stdout.splitlines()
        if line.startswith("epoch") and " step " not in line
    ]


def test_tensorflow_is_blocked_in_the_subprocess(no_tensorflow):
    env = {**os.environ, "PYTHONPATH": str(no_tensorflow)}
    for name in BLOCKED:
        result = subprocess.run(
            [sys.executable, "-c", f"import {name}"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode != 0
        assert f"{name} is blocked" in result.stderr


def test_trains_on_image_folder_and_resumes_where_it_stopped(
    run, make_image_folder, tmp_path
):
    # 18 images: 3 for validation, 15 for training, 3 batches of 4 per epoch
    # (the last 3 images of each epoch's order are dropped).
    folder = make_image_folder(images_per_class=6, size=(20, 24))
    full = run(
        folder, "--epochs=2", "--log-every=1", checkpoint=tmp_path / "full.npz"
    )
    assert full.returncode == 0, full.stderr
    assert "18 examples, 3 classes, 32x32 px, batches of 4" in full.stdout
    assert "epoch 1/2 step 3/3 loss" in full.stdout
    losses = epoch_losses(full.stdout)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert "val_accuracy" in full.stdout

    first = run(folder, "--epochs=2", "--max-steps=4")
    assert first.returncode == 0, first.stderr
    assert "Stopped after 4 steps" in first.stdout
    weights, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert (meta["epoch"], meta["step"]) == (1, 1)

    second = run(folder, "--epochs=2")
    assert second.returncode == 0, second.stderr
    assert "Resuming from" in second.stdout
    assert "at epoch 2 of 2, step 1 of 3." in second.stdout
    resumed, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert (meta["epoch"], meta["step"]) == (2, 0)
    assert epoch_losses(second.stdout) == pytest.approx(losses[1:], rel=1e-4)
    # Same data order and state: the interrupted run ends where the other does.
    uninterrupted, _ = read_checkpoint(tmp_path / "full.npz")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        np.testing.assert_allclose(
            resumed[name], uninterrupted[name], rtol=1e-5, atol=1e-6
        )


def test_trains_on_npz_and_loss_falls(run, tmp_path):
    # 8 examples, no validation: two batches seen again every epoch. After 4
    # epochs (8 steps) the loss of 7 random initialisations had moved
    # either way (from 1.13 to 0.87-1.21); after 8 it fell in all 7
    # (to 0.59-0.91).
    data = write_npz(tmp_path / "data.npz", num_examples=8)
    result = run(data, "--epochs=8", "--validation-split=0", "--log-every=0")
    assert result.returncode == 0, result.stderr
    losses = epoch_losses(result.stdout)
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    weights, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == 8 and len(meta["history"]) == 8
    assert any(name.startswith("optimizer") for name in weights)


def test_android_checkpoint_layout_reads_as_numpy_writes_it(tmp_path):
    weights = {
        "kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "bias": np.ones(5, np.float32),
        "optimizer_iterations": np.int64(7),
    }
    path = write_android_checkpoint(
        tmp_path / "c.npz", weights, epoch=1, step=2
    )
    restored, meta = read_checkpoint(path)
    assert meta == {
        "format": "keras-repnet-checkpoint/1",
        "epoch": 1,
        "step": 2,
    }
    for name, value in weights.items():
        assert restored[name].dtype == value.dtype
        np.testing.assert_array_equal(restored[name], value)
    with zipfile.ZipFile(path) as archive:
        assert all(info.flag_bits & 0x08 for info in archive.infolist())
        for name, value in weights.items():
            # Npz.header writes what numpy itself does, byte for byte.
            saved = io.BytesIO()
            np.save(saved, value)
            assert archive.read(f"{name}.npy") == saved.getvalue()


def test_resumes_a_checkpoint_written_by_the_android_sample(run, tmp_path):
    # 12 examples: 2 for validation, 10 for training, 2 batches of 4 per epoch.
    data = write_npz(tmp_path / "data.npz")
    stopped = run(data, "--epochs=2", "--max-steps=3")
    assert stopped.returncode == 0, stopped.stderr
    weights, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert (meta["epoch"], meta["step"]) == (1, 1)
    # The same weights, as the phone would save them after the same steps,
    # with a field that only some app knows.
    phone = write_android_checkpoint(
        tmp_path / "phone.npz", weights, epoch=1, step=1, app="gallery/2"
    )

    from_python = run(data, "--epochs=2")
    from_phone = run(data, "--epochs=2", checkpoint=phone)

    assert from_python.returncode == 0, from_python.stderr
    assert from_phone.returncode == 0, from_phone.stderr
    assert "at epoch 2 of 2, step 1 of 2." in from_phone.stdout
    assert "does not record seed, validation_split, num_examples" in (
        from_phone.stdout
    )
    assert "seed=1337, validation_split=0.2, num_examples=12" in (
        from_phone.stdout
    )
    resumed, meta = read_checkpoint(phone)
    assert (meta["epoch"], meta["step"]) == (2, 0)
    assert meta["app"] == "gallery/2"  # Unknown fields are carried through.
    assert (meta["seed"], meta["validation_split"], meta["num_examples"]) == (
        1337,
        0.2,
        12,
    )
    # The phone kept no running loss: epoch 2's is that of its last step.
    [record] = meta["history"]
    assert record["epoch"] == 2 and np.isfinite(record["loss"])
    assert "val_accuracy" in record
    expected, _ = read_checkpoint(tmp_path / "checkpoint.npz")
    for name in expected:
        np.testing.assert_allclose(
            resumed[name], expected[name], rtol=1e-5, atol=1e-6
        )
    # And the checkpoint the trainer wrote back resumes in it as well.
    again = run(data, "--epochs=3", checkpoint=phone)
    assert again.returncode == 0, again.stderr
    assert "does not record" not in again.stdout
    assert len(read_checkpoint(phone)[1]["history"]) == 2


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"step": 0}, "needs `epoch` as an integer >= 0"),
        ({"epoch": 1, "step": "3"}, "Received: step='3'"),
        ({"epoch": 1, "step": 9}, "at most 2"),
        ({"epoch": 1, "step": 0, "seed": 7}, "'seed': (7, 1337)"),
    ],
)
def test_checkpoint_meta_that_cannot_resume_gets_a_clear_error(
    run, tmp_path, meta, message
):
    data = write_npz(tmp_path / "data.npz")
    weights = {"kernel": np.ones(3, np.float32)}
    path = write_android_checkpoint(
        tmp_path / "checkpoint.npz", weights, **meta
    )
    content = path.read_bytes()
    result = run(data, "--epochs=2")
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert path.read_bytes() == content


def test_corrupt_checkpoint_is_refused_and_kept(run, tmp_path):
    data = write_npz(tmp_path / "data.npz")
    assert run(data, "--epochs=1").returncode == 0
    checkpoint = tmp_path / "checkpoint.npz"
    content = checkpoint.read_bytes()
    checkpoint.write_bytes(content[: len(content) // 2])  # A crash mid-copy.

    result = run(data, "--epochs=2")

    assert result.returncode == 2
    assert "truncated or corrupt" in result.stderr
    assert "left untouched" in result.stderr
    assert checkpoint.read_bytes() == content[: len(content) // 2]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_weights_of_another_model_are_refused(run, tmp_path):
    data = write_npz(tmp_path / "data.npz")
    assert run(data, "--epochs=1").returncode == 0
    checkpoint = tmp_path / "checkpoint.npz"
    with np.load(checkpoint) as saved:
        arrays = {k: saved[k] for k in saved.files}
    name = max(
        (k for k in arrays if k != "meta.json"), key=lambda k: arrays[k].ndim
    )
    arrays[name] = np.zeros((*arrays[name].shape[:-1], 7), arrays[name].dtype)
    arrays["other_model_kernel"] = np.zeros(3, np.float32)
    np.savez(checkpoint, **arrays)

    result = run(data, "--epochs=2")

    assert result.returncode == 2
    assert "belong to another model" in result.stderr
    assert "other_model_kernel" in result.stderr and name in result.stderr


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"labels": [0, 1, 2, 3] * 3},
            "Labels must be class indices in [0, 3)",
        ),
        ({"size": 28}, "Expected images of shape (N, 32, 32, 3)"),
    ],
)
def test_bad_data_gets_a_clear_error(run, tmp_path, kwargs, message):
    data = write_npz(tmp_path / "data.npz", **kwargs)
    result = run(data, "--epochs=1")
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "checkpoint.npz").exists()


def test_cosine_learning_rate_is_keras_cosine_decay():
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(3e-2, decay_steps=40)
    for step in (0, 1, 13, 39, 40, 55):
        np.testing.assert_allclose(
            repnet_trainer.cosine_learning_rate(3e-2, step, 40),
            float(schedule(step)),
            rtol=1e-6,
            atol=1e-9,
        )


class _RecordingTrainer:
    """Stands in for `RepNetTrainer` in `fit`: records the rates it gets."""

    batch_size, learning_rate = 2, 0.1

    def __init__(self):
        self.rates = []

    def train_step(self, images, labels, learning_rate):
        self.rates.append(learning_rate)
        return 1.0

    def get_weights(self):
        return {"kernel": np.zeros(2, np.float32)}

    def check_weights(self, weights, source=None):
        pass

    def set_weights(self, weights):
        pass

    def evaluate(self, images, labels):
        return {"loss": 1.0, "accuracy": 0.5}


def test_fit_decays_the_rate_over_all_epochs_and_resumes_on_the_curve(
    tmp_path,
):
    images, labels = np.zeros((10, 4, 4, 3), np.uint8), np.zeros(10, np.int32)
    lines = []
    options = dict(validation_split=0.2, epochs=3, log=lines.append)
    path = tmp_path / "checkpoint.npz"
    whole = _RecordingTrainer()
    repnet_trainer.fit(
        whole, images, labels, checkpoint_path=tmp_path / "a.npz", **options
    )
    # 8 training examples, batches of 2: 4 steps an epoch, 12 in all.
    expected = [
        repnet_trainer.cosine_learning_rate(0.1, step, 12) for step in range(12)
    ]
    np.testing.assert_allclose(whole.rates, expected)
    assert whole.rates[0] == 0.1 and whole.rates[-1] < 0.01

    first, second = _RecordingTrainer(), _RecordingTrainer()
    repnet_trainer.fit(
        first, images, labels, checkpoint_path=path, max_steps=5, **options
    )
    lines.clear()
    repnet_trainer.fit(second, images, labels, checkpoint_path=path, **options)
    np.testing.assert_allclose(first.rates + second.rates, expected)
    assert lines[0] == f"Resuming from {path} at epoch 2 of 3, step 1 of 4."
    assert lines[-1] == f"Done: 3 epochs. Weights in {path}."


def test_fit_does_not_train_a_finished_run_again(tmp_path):
    images, labels = np.zeros((10, 4, 4, 3), np.uint8), np.zeros(10, np.int32)
    path = tmp_path / "checkpoint.npz"
    options = dict(checkpoint_path=path, epochs=2)
    repnet_trainer.fit(
        _RecordingTrainer(), images, labels, log=lambda line: None, **options
    )
    content, lines, again = path.read_bytes(), [], _RecordingTrainer()

    state = repnet_trainer.fit(
        again, images, labels, log=lines.append, **options
    )

    assert again.rates == [] and state["epoch"] == 2
    assert path.read_bytes() == content
    assert lines == [
        f"Already trained 2 of 2 epochs; the weights are in {path}. Pass "
        "more --epochs to continue, or another --checkpoint to start over."
    ]


def test_fit_splits_the_listing_before_dropping_unread_files(tmp_path):
    # Examples 0-9 were listed, 3 and 7 could not be read: the 8 loaded ones
    # fall on the side their listing position falls on.
    kept = np.ones(10, bool)
    kept[[3, 7]] = False
    labels = np.flatnonzero(kept).astype(np.int32)  # Label = position.
    train, validation = split.split_indices(10, 0.3, 1337)
    seen = {}

    class Trainer(_RecordingTrainer):
        batch_size = 1

        def train_step(self, images, labels, learning_rate):
            seen.setdefault("train", set()).update(labels.tolist())
            return 1.0

        def evaluate(self, images, labels):
            seen["validation"] = set(labels.tolist())
            return {"loss": 1.0, "accuracy": 0.5}

    state = repnet_trainer.fit(
        Trainer(),
        np.zeros((8, 4, 4, 3), np.uint8),
        labels,
        kept=kept,
        checkpoint_path=tmp_path / "c.npz",
        epochs=1,
        validation_split=0.3,
        log=lambda line: None,
    )

    assert seen["train"] == set(train) - {3, 7}
    assert seen["validation"] == set(validation) - {3, 7}
    assert state["num_examples"] == 10


def test_save_checkpoint_never_replaces_a_good_one_with_a_bad_one(tmp_path):
    path = tmp_path / "checkpoint.npz"
    weights = {"kernel": np.ones((2, 3), np.float32), "iterations": np.int64(5)}
    repnet_trainer.save_checkpoint(path, weights, {"epoch": 1, "step": 0})
    good = path.read_bytes()

    with pytest.raises(ValueError, match="non-finite"):
        repnet_trainer.save_checkpoint(
            path, {**weights, "kernel": np.full((2, 3), np.nan, np.float32)}, {}
        )

    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]
    restored, meta = repnet_trainer.load_checkpoint(path)
    np.testing.assert_array_equal(restored["kernel"], weights["kernel"])
    assert meta["epoch"] == 1


# === Unreadable images ===


def _jpeg_bytes(size=48, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _corrupt_png_bytes(size=48, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    content = bytearray(buffer.getvalue())
    start = content.index(b"IDAT") + 20
    for index in range(start, start + 200):
        content[index] ^= 0x55
    return bytes(content)


def _truncated_jpeg_bytes():
    content = _jpeg_bytes()
    return content[: len(content) // 2]


BAD_FILES = {
    "cat/corrupt.png": ("data stream", _corrupt_png_bytes),
    "dog/empty.jpg": ("empty file", lambda: b""),
    "dog/notes.jpg": ("cannot identify image file", lambda: b"a note\n"),
    "fox/truncated.jpg": ("image file is truncated", _truncated_jpeg_bytes),
}


@pytest.fixture
def folder_with_bad_files(make_image_folder):
    """18 good PNG files, 6 a class, and the 4 unreadable `BAD_FILES`."""
    folder = make_image_folder(images_per_class=6)
    for name, (_, content) in BAD_FILES.items():
        (folder / name).write_bytes(content())
    return folder


def test_unreadable_images_are_skipped_and_reported(folder_with_bad_files):
    lines = []

    images, labels, class_names, kept = data.load_image_folder(
        folder_with_bad_files, (16, 16), log=lines.append
    )

    listed, _, _ = split.list_image_files(folder_with_bad_files)
    assert len(listed) == 22 and kept.sum() == 18 == len(images) == len(labels)
    assert sorted(np.array(listed)[~kept]) == sorted(BAD_FILES)
    assert images.shape == (18, 16, 16, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6, 6, 6]
    *reports, summary = lines
    assert len(reports) == 4
    for name, (reason, _) in BAD_FILES.items():
        [line] = [line for line in reports if name in line]
        assert line.startswith("Skipping ") and reason in line
        assert re.search(rf"{re.escape(name)} \([^,]*{reason}", summary)
    assert summary.startswith(
        "Skipped 4 of 22 files that could not be read as images: "
    )


def test_truncated_images_are_not_loaded_leniently(tmp_path):
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for name in ("a/whole.jpg", "a/truncated.jpg", "b/whole.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        content = _jpeg_bytes()
        if "truncated" in name:
            content = content[: len(content) - 200]
        (tmp_path / name).write_bytes(content)

    with pytest.raises(ValueError, match="a/truncated.jpg.*--strict-images"):
        data.load_image_folder(tmp_path, (8, 8), strict=True)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_command_line_skips_unreadable_images_or_stops_when_strict(
    run, folder_with_bad_files, tmp_path
):
    lenient = run(folder_with_bad_files, "--epochs=1", "--max-steps=1")
    assert lenient.returncode == 0, lenient.stderr
    assert lenient.stdout.count("Skipping ") == 4
    assert "Skipped 4 of 22 files" in lenient.stdout
    assert "18 examples, 3 classes" in lenient.stdout
    _, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["num_examples"] == 22  # The split is that of the listing.

    strict = run(
        folder_with_bad_files,
        "--strict-images",
        checkpoint=tmp_path / "strict.npz",
    )
    assert strict.returncode == 2
    [line] = strict.stderr.splitlines()
    assert line.startswith("repnet_trainer: error: Cannot read ")
    assert "cat/corrupt.png" in line and "Traceback" not in strict.stderr
    assert not (tmp_path / "strict.npz").exists()


# === split ===


def _touch(root, name):
    """Creates the empty file `root/name`, or the folder when it ends in /."""
    if name.endswith("/"):
        (root / name).mkdir(parents=True)
    else:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_list_image_files_sorts_and_filters(tmp_path):
    for name in (
        "dog/b.PNG",
        "dog/a.jpeg",
        "dog/.hidden.jpg",
        "dog/notes.txt",
        "dog/nested.jpg/c.jpg",
        "cat/10.jpg",
        "cat/2.GIF",
        "cat/1.bmp",
        ".thumbnails/x.jpg",
        "empty/",
    ):
        _touch(tmp_path, name)

    paths, labels, class_names = split.list_image_files(tmp_path)

    assert class_names == ["cat", "dog", "empty"]
    assert paths == ["cat/1.bmp", "cat/10.jpg", "cat/2.GIF", "dog/a.jpeg"] + [
        "dog/b.PNG"
    ]
    assert labels == [0, 0, 0, 1, 1]


@pytest.mark.parametrize(
    "layout, message",
    [
        (["photos/cat/1.jpg"], "with 1 class folder: ['cat']"),
        (["photos/1.jpg", "photos/2.jpg"], "with 0 class folders: []"),
        (["photos/cat/a.txt", "photos/dog/"], "hold no images"),
    ],
)
def test_list_image_files_explains_the_expected_layout(
    tmp_path, layout, message
):
    for name in layout:
        _touch(tmp_path, name)
    with pytest.raises(ValueError) as error:
        split.list_image_files(tmp_path / "photos")
    assert message in str(error.value)
    assert "photos/cat/001.jpg" in str(error.value)


@pytest.mark.parametrize("num_examples", [0, 1, 7, 100])
@pytest.mark.parametrize("validation_split", [0, 0.2, 0.5, 0.99])
def test_split_indices_are_disjoint_and_cover_all(
    num_examples, validation_split
):
    train, validation = split.split_indices(num_examples, validation_split, 3)

    assert len(validation) == int(validation_split * num_examples)
    assert not set(train) & set(validation)
    assert sorted([*train, *validation]) == list(range(num_examples))
    # The Keras side's rule: validation is the start of the permutation.
    order = np.random.default_rng(3).permutation(num_examples)
    np.testing.assert_array_equal(validation, order[: len(validation)])
    np.testing.assert_array_equal(train, order[len(validation) :])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((10, 1.0, 0), "validation_split=1.0"),
        ((10, -0.1, 0), "validation_split=-0.1"),
        ((-1, 0.2, 0), "num_examples=-1"),
        ((10, 0.2, None), "seed=None"),
    ],
)
def test_split_indices_refuses_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        split.split_indices(*arguments)


# === files ===


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_writes_get_the_permissions_of_open(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        files.write_text(tmp_path / "new.txt", "new")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("plain")
        (tmp_path / "kept.txt").write_text("old")
        os.chmod(tmp_path / "kept.txt", 0o640)
        files.write_json(tmp_path / "kept.txt", {"a": 1})
    finally:
        os.umask(previous)

    assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "kept.txt").st_mode) == 0o640
    assert json.loads((tmp_path / "kept.txt").read_text()) == {"a": 1}


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    files.write_bytes(path, b"old")

    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(path) as temporary:
            with open(temporary, "wb") as f:
                f.write(b"half of the new")
            raise KeyboardInterrupt

    assert path.read_bytes() == b"old"
    assert os.listdir(path.parent) == ["file.bin"]


def test_check_writable(tmp_path):
    files.check_writable(tmp_path / "new" / "deeper" / "c.npz", "--checkpoint")
    assert (tmp_path / "new" / "deeper").is_dir()

    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder. Pass a "):
        files.check_writable(tmp_path / "file" / "sub" / "c.npz", "--out")
    with pytest.raises(ValueError, match="is a folder"):
        files.check_writable(tmp_path / "new", "--out")


def test_check_writable_says_why_a_folder_cannot_be_written(
    tmp_path, monkeypatch
):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(ValueError) as error:
        files.check_writable(tmp_path / "c.npz", "--checkpoint")
    assert str(error.value) == (
        f"--checkpoint={tmp_path / 'c.npz'}: cannot write in {tmp_path} "
        "(read-only file system). Pass a path in a writable folder."
    )


@pytest.mark.skipif(
    os.geteuid() == 0, reason="As root, a read-only folder is still writable."
)
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    try:
        with pytest.raises(ValueError) as error:
            files.check_writable(read_only / "c.npz", "--checkpoint")
    finally:
        read_only.chmod(0o755)
    assert str(error.value) == (
        f"--checkpoint={read_only / 'c.npz'}: cannot write in {read_only} "
        "(permission denied). Pass a path in a writable folder."
    )


# === Command line ===


@pytest.fixture
def refuse_model_and_data(monkeypatch):
    """Makes `cli.main` fail the test if it loads a model or data."""

    def refuse(*args, **kwargs):
        raise AssertionError("loaded a model or data")

    monkeypatch.setattr(cli, "RepNetTrainer", refuse)
    monkeypatch.setattr(cli, "load_examples", refuse)


def test_command_line_refuses_an_unwritable_checkpoint_first(
    refuse_model_and_data, tmp_path, capsys
):
    (tmp_path / "file").write_text("")
    checkpoint = tmp_path / "file" / "c.npz"
    arguments = [f"--model={tmp_path}/m.tflite", f"--data={tmp_path}"]

    assert cli.main([*arguments, f"--checkpoint={checkpoint}"]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"repnet_trainer: error: --checkpoint={checkpoint}: cannot write "
        f"there, as {checkpoint.parent} is a file, not a folder. Pass a path "
        "in a writable folder."
    ]


@pytest.mark.parametrize("saved", [False, True])
def test_ctrl_c_ends_with_one_line(monkeypatch, tmp_path, capsys, saved):
    checkpoint = tmp_path / "c.npz"
    if saved:
        weights = {"kernel": np.ones(2, np.float32)}
        state = {"epoch": 2, "step": 7}
        repnet_trainer.save_checkpoint(checkpoint, weights, state)

    class Trainer:
        num_classes, image_size, batch_size = 3, (4, 4), 2
        recipe = keras_repnet.Recipe().to_dict()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "RepNetTrainer", lambda *args: Trainer())
    monkeypatch.setattr(
        cli, "load_examples", lambda *a, **k: (np.zeros(1), np.zeros(1), None)
    )
    monkeypatch.setattr(cli, "fit", interrupt)

    code = cli.main(
        ["--model=m.tflite", f"--data={tmp_path}", f"--checkpoint={checkpoint}"]
    )

    assert code == 130
    [line] = capsys.readouterr().err.splitlines()
    if saved:
        assert line == (
            f"Interrupted. {checkpoint} holds the weights after 2 epochs and "
            "7 steps (its last save): run the same command to resume from "
            "there."
        )
    else:
        assert line.startswith("Interrupted before the first checkpoint")


@pytest.mark.parametrize(
    "option, message",
    [
        ("--epochs=0", "`epochs` must be an integer >= 1. Received: epochs=0"),
        ("--validation-split=1", "validation_split=1.0"),
        ("--num-threads=0", "num_threads=0"),
    ],
)
def test_bad_options_exit_2_with_one_line(run, tmp_path, option, message):
    result = run(write_npz(tmp_path / "data.npz"), option)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("repnet_trainer: error: ") and message in line


# === The package ===


def test_formats_match_the_android_sample():
    source = ANDROID_TRAINER.read_text()
    constants = dict(
        re.findall(r'private const val (\w+) = "([^"]*)"', source)
    )
    assert constants["MODEL_FORMAT"] == formats.MODEL_FORMAT
    assert constants["CHECKPOINT_FORMAT"] == formats.CHECKPOINT_FORMAT
    assert constants["META_KEY"] == formats.META_KEY


def test_sidecar_path():
    assert formats.sidecar_path("dir/m.tflite") == "dir/m.json"
    assert formats.sidecar_path(Path("dir/m.tflite")) == "dir/m.json"


def test_the_device_trains_with_the_models_recipe(model_path, monkeypatch, tmp_path):
    """Settings left out on the command line come from the recipe in the
    sidecar, which is the one the model was built with in Keras."""
    received = {}
    monkeypatch.setattr(
        cli, "load_examples", lambda *a, **k: (np.zeros(1), np.zeros(1), None)
    )
    monkeypatch.setattr(cli, "fit", lambda *a, **kwargs: received.update(kwargs))

    code = cli.main(
        [f"--model={model_path}", f"--data={tmp_path}", "--epochs=3"]
    )

    assert code == 0
    recipe = keras_repnet.Recipe()  # What `tiny_model` builds with.
    assert received["epochs"] == 3  # Given.
    assert received["validation_split"] == recipe.validation_split
    assert received["seed"] == recipe.seed
    assert received["learning_rate"] is None  # The trainer's own: the recipe's.
