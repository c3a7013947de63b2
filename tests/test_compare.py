"""End-to-end tests of the comparison harness on tiny data."""

import ast
import json
from pathlib import Path

import keras
import pytest
from absl import flags
from absl.testing import flagsaver

from keras_repnet import commands
from keras_repnet.apps import comparison
from keras_repnet.apps import reports


SETTINGS = dict(
    backbone="MobileNetV2",
    weights=None,
    image_size=32,
    epochs=1,
    batch_size=4,
    validation_split=0.25,
    verbose=0,
)


@pytest.fixture
def images(make_image_folder):
    return make_image_folder(images_per_class=4)


def test_cli_compares_two_methods_and_a_rerun_skips_them(
    images, tmp_path, capsys
):
    output = tmp_path / "compare"
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["keras-repnet"])
    with flagsaver.flagsaver(
        data=str(images),
        weights="none",
        image_size=32,
        epochs=1,
        batch_size=4,
        validation_split=0.25,
        methods=["ft-last", "repnet-mask"],
        output_dir=str(output),
    ):
        commands.compare_command()
    printed = capsys.readouterr().out
    assert "[1/2] ft-last: validation accuracy best" in printed

    results = json.loads((output / "results.json").read_text())
    assert [row["method"] for row in results["methods"]] == [
        "ft-last", "repnet-mask"
    ]
    for row in results["methods"]:
        assert len(row["history"]["val_accuracy"]) == 1
        assert 0 <= row["final_validation_accuracy"] <= 1
        assert row["median_step_ms"] > 0
        assert (output / row["method"] / "result.json").exists()
    head_only, repnet = results["methods"]
    assert head_only["trainable_params"] == 1280 * 3 + 3
    assert repnet["trainable_params"] > head_only["trainable_params"]
    # MobileNetV2 at 32 px: 1/49 of its 300M multiply-adds at 224 px.
    assert head_only["multiply_adds"] == pytest.approx(300e6 / 49, rel=0.05)
    assert head_only["mask_sparsity"] is None
    assert 0 <= repnet["mask_sparsity"] <= 1
    assert repnet["mask_granularity"] == "kernel"
    table = (output / "results.md").read_text()
    assert "| ft-last |" in table and "| repnet-mask |" in table
    for plot in ("pareto.png", "curves.png"):
        assert (output / plot).read_bytes()[:4] == b"\x89PNG"

    rerun = comparison.compare(
        str(images), methods=["repnet-mask", "ft-last"], output_dir=str(output),
        **SETTINGS,
    )
    printed = capsys.readouterr().out
    assert printed.count("done before, skipped") == 2
    assert [row["method"] for row in rerun["methods"]] == ["repnet-mask", "ft-last"]
    with pytest.raises(ValueError, match="other settings"):
        comparison.compare(
            str(images), methods=["ft-last"], output_dir=str(output),
            **{**SETTINGS, "epochs": 2},
        )


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_an_interrupted_method_resumes_from_its_last_epoch(
    images, tmp_path, monkeypatch
):
    output = str(tmp_path / "compare")
    settings = {**SETTINGS, "epochs": 2}
    # The step timer is the last callback: the backup of epoch 1 is written
    # before it interrupts.
    monkeypatch.setattr(comparison, "_StepTimer", lambda: _Interrupt())
    with pytest.raises(KeyboardInterrupt):
        comparison.compare(
            str(images), methods=["ft-last"], output_dir=output, **settings
        )
    monkeypatch.undo()
    epochs_run = []

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)

    original = comparison._StepTimer

    class CountingTimer(original, Count):
        pass

    monkeypatch.setattr(comparison, "_StepTimer", CountingTimer)
    results = comparison.compare(
        str(images), methods=["ft-last"], output_dir=output, **settings
    )
    assert epochs_run == [1]
    assert len(results["methods"][0]["history"]["val_accuracy"]) == 2


def test_pareto_front_and_table_without_memory():
    points = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (5, 0.2)]
    assert reports.pareto_front(points) == [4, 0, 1]
    row = {
        "method": "ft-last",
        "description": "head only",
        "best_validation_accuracy": 0.5,
        "final_validation_accuracy": 0.4,
        "test_accuracy": 0.45,
        "trainable_params": 3843,
        "learning_rates": [1e-3, 1e-2],
        "memory": None,
        "measured": None,
        "median_step_ms": 12.0,
    }
    settings = {
        "backbone": "MobileNetV2", "data": "x", "image_size": 32,
        "epochs": 1, "batch_size": 4, "seed": 1, "weights": None,
        "label_smoothing": 0.1, "schedule": "cosine",
    }
    table = comparison.markdown({"settings": settings, "methods": [row]})
    assert (
        "| ft-last | 0.500 | 0.400 | 0.450 | - | 3,843 | - | - | - | - | - | 12 "
        "| - | - |" in table
    )


def test_unknown_methods_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown or no methods"):
        comparison.compare("x", methods=["repnet", "lora"], output_dir=str(tmp_path))
    # A comma-separated string is split, not read letter by letter.
    with pytest.raises(ValueError, match=r"Unknown or no methods: \['lora'\]"):
        comparison.compare("x", methods="repnet, lora", output_dir=str(tmp_path))


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_example_script_compiles():
    script = EXAMPLES / "transfer_flowers102.py"
    compile(script.read_text(), str(script), "exec")


def test_notebook_is_nbformat_4_and_its_code_compiles():
    notebook = json.loads((EXAMPLES / "repnet_colab.ipynb").read_text())
    assert notebook["nbformat"] == 4
    assert {"cells", "metadata", "nbformat_minor"} <= set(notebook)
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and all(isinstance(c["source"], list) for c in code)
    for index, cell in enumerate(code):
        # Shell (`!pip`) and magic (`%`) lines are IPython, not Python.
        source = "".join(
            line for line in cell["source"] if not line.lstrip().startswith(("!", "%"))
        )
        compile(source, f"repnet_colab.ipynb code cell {index}", "exec")
    # papermill's parameters: one tagged cell that assigns exactly these names.
    tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    names = {
        node.targets[0].id
        for node in ast.parse("".join(tagged[0]["source"])).body
        if isinstance(node, ast.Assign)
    }
    assert names == {
        "DATASET", "BACKBONE", "WEIGHTS", "IMAGE_SIZE",
        "EPOCHS", "BATCH_SIZE", "METHODS", "OUTPUT_DIR",
    }
    assert "export_tflite" in json.dumps(notebook)
