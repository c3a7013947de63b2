"""The package's layers hold: every import, function-level ones included,
goes to an earlier layer (or within one), and no two modules import each
other, directly or round a longer loop.

The order is read from `keras_repnet/__init__.py`'s docstring, the one
place it is written.
"""

import ast
import re
from pathlib import Path

import pytest

import keras_repnet

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_repnet"
DEVICE = ROOT / "repnet_trainer"
FEDERATED = ROOT / "repnet_flower"
# What keras_repnet may read of the TensorFlow-free packages: the device's
# contract with the exporter (the file format, the one split, atomic
# files), and the Flower deployment `keras-repnet federate` starts with
# what travels in it.
DEVICE_CONTRACT = {
    "repnet_trainer.formats", "repnet_trainer.split", "repnet_trainer.files",
    "repnet_flower.deploy", "repnet_flower.task",
}


def documented_layers():
    """`{top-level name: layer number}` from the numbered list of the
    package docstring (`1. `version`, `compat`: ...`)."""
    layers = {}
    for number, names in re.findall(
        r"^(\d+)\. ((?:`\w+`(?:, )?)+)", keras_repnet.__doc__, re.M
    ):
        for name in re.findall(r"`(\w+)`", names):
            layers[name] = int(number)
    return layers


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path):
    """Every module `path` imports, anywhere in the file, as dotted names
    (`from a import b` gives `a.b` when `b` is a module, else `a`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                names.add(candidate if _is_module(candidate) else node.module)
    return names


def _is_module(name):
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def package_modules(folder):
    return {module_name(p): p for p in sorted(folder.rglob("*.py"))}


def test_every_module_has_a_documented_layer():
    layers = documented_layers()
    assert set(layers) >= {"compat", "backward", "core", "data", "methods",
                           "memory", "export", "apps", "cli"}
    for name in package_modules(PACKAGE):
        parts = name.split(".")
        if len(parts) > 1:
            assert parts[1] in layers, f"{name} is in no documented layer"


@pytest.mark.parametrize("name, path", sorted(package_modules(PACKAGE).items()))
def test_imports_follow_the_layers(name, path):
    if name == "keras_repnet":
        return  # The public API gathers every layer.
    layers = documented_layers()
    own = layers[name.split(".")[1]]
    for target in imports(path):
        if target.startswith(("repnet_trainer", "repnet_flower")):
            assert target in DEVICE_CONTRACT, (
                f"{name} imports {target}: keras_repnet reads only the device "
                f"package's contract {sorted(DEVICE_CONTRACT)}"
            )
            continue
        if not target.startswith("keras_repnet."):
            continue
        layer = layers[target.split(".")[1]]
        assert layer <= own, (
            f"{name} (layer {own}) imports {target} (layer {layer}), a later "
            "step of the pipeline"
        )


def test_no_import_cycles():
    modules = {
        **package_modules(PACKAGE),
        **package_modules(DEVICE),
        **package_modules(FEDERATED),
    }
    graph = {
        name: {t for t in imports(path) if t in modules and t != name}
        for name, path in modules.items()
    }
    # A package's __init__ re-exports its modules: count the edges of the
    # modules themselves.
    graph = {
        name: {t for t in targets if not name.startswith(t + ".")}
        for name, targets in graph.items()
    }
    visiting, done = [], set()

    def visit(name):
        if name in visiting:
            cycle = visiting[visiting.index(name):] + [name]
            pytest.fail("Import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_device_packages_import_no_tensorflow_and_no_keras_repnet():
    for name, path in {**package_modules(DEVICE), **package_modules(FEDERATED)}.items():
        for target in imports(path):
            top = target.split(".")[0]
            assert top not in {"tensorflow", "keras", "keras_repnet"}, (
                f"{name} imports {target}: the device package runs without "
                "TensorFlow"
            )


def test_module_names_are_unique():
    stems = {}
    for name in package_modules(PACKAGE):
        stem = name.rsplit(".", 1)[-1]
        if stem not in {"__init__", "keras_repnet"} and name.count(".") > 1:
            stems.setdefault(stem, []).append(name)
    repeated = {stem: names for stem, names in stems.items() if len(names) > 1}
    assert not repeated, f"Modules named alike: {repeated}"
