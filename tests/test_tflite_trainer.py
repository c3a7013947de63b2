"""tflite/repnet_trainer.py: an exported Rep-Net trained by LiteRT alone.

Every run is a subprocess in which `import tensorflow` (and `keras`) fails, as
on a device without TensorFlow.
"""

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import keras_repnet
from keras_repnet.export import export_tflite

TRAINER = Path(__file__).resolve().parents[1] / "tflite" / "repnet_trainer.py"
BATCH_SIZE = 4
SIZE = 32
CLASSES = 3
BLOCKED = ("tensorflow", "keras")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model.tflite"
    # As `tiny_model`, without dropout: LiteRT's random generator restarts
    # with every process, so only a model without it resumes bit for bit.
    model = keras_repnet.build(
        "MobileNetV2",
        CLASSES,
        input_shape=(SIZE, SIZE, 3),
        weights=None,
        dropout=0.0,
    )
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
        command = [sys.executable, str(TRAINER), f"--model={model_path}"]
        command += [f"--data={data}", f"--checkpoint={checkpoint}", *args]
        return subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=300
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
    assert (
        "Resuming from" in second.stdout and "epoch 2, step 1" in second.stdout
    )
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
    # 8 examples, no validation: two batches seen again every epoch.
    data = write_npz(tmp_path / "data.npz", num_examples=8)
    result = run(data, "--epochs=4", "--validation-split=0", "--log-every=0")
    assert result.returncode == 0, result.stderr
    losses = epoch_losses(result.stdout)
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    weights, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == 4 and len(meta["history"]) == 4
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
    assert "epoch 2, step 1" in from_phone.stdout
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


def _trainer_module():
    spec = importlib.util.spec_from_file_location("repnet_trainer", TRAINER)
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    return trainer


def test_cosine_learning_rate_is_keras_cosine_decay():
    import keras

    trainer = _trainer_module()
    schedule = keras.optimizers.schedules.CosineDecay(3e-2, decay_steps=40)
    for step in (0, 1, 13, 39, 40, 55):
        np.testing.assert_allclose(
            trainer.cosine_learning_rate(3e-2, step, 40),
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

    def evaluate(self, images, labels):
        return {"loss": 1.0, "accuracy": 0.5}


def test_fit_decays_the_rate_over_all_epochs_and_resumes_on_the_curve(
    tmp_path,
):
    module = _trainer_module()
    images, labels = np.zeros((10, 4, 4, 3), np.uint8), np.zeros(10, np.int32)
    fit = dict(validation_split=0.2, epochs=3, log=lambda line: None)
    path = tmp_path / "checkpoint.npz"
    whole = _RecordingTrainer()
    module.fit(whole, images, labels, checkpoint_path=str(tmp_path / "a.npz"), **fit)
    # 8 training examples, batches of 2: 4 steps an epoch, 12 in all.
    expected = [module.cosine_learning_rate(0.1, step, 12) for step in range(12)]
    np.testing.assert_allclose(whole.rates, expected)
    assert whole.rates[0] == 0.1 and whole.rates[-1] < 0.01

    first, second = _RecordingTrainer(), _RecordingTrainer()
    second.check_weights = second.set_weights = lambda *a, **k: None
    module.fit(first, images, labels, checkpoint_path=str(path), max_steps=5, **fit)
    module.fit(second, images, labels, checkpoint_path=str(path), **fit)
    np.testing.assert_allclose(first.rates + second.rates, expected)


def test_save_checkpoint_never_replaces_a_good_one_with_a_bad_one(tmp_path):
    trainer = _trainer_module()
    path = tmp_path / "checkpoint.npz"
    weights = {"kernel": np.ones((2, 3), np.float32), "iterations": np.int64(5)}
    trainer.save_checkpoint(path, weights, {"epoch": 1, "step": 0})
    good = path.read_bytes()

    with pytest.raises(ValueError, match="non-finite"):
        trainer.save_checkpoint(
            path, {**weights, "kernel": np.full((2, 3), np.nan, np.float32)}, {}
        )

    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]
    restored, meta = trainer.load_checkpoint(path)
    np.testing.assert_array_equal(restored["kernel"], weights["kernel"])
    assert meta["epoch"] == 1
