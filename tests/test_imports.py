"""What `import keras_repnet` does and does not do."""

import os
import subprocess
import sys


def _run(code):
    environment = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout.split()


def test_import_needs_neither_matplotlib_nor_litert():
    # Keras itself imports matplotlib when it is installed: block it, and
    # keras_repnet must still import, and not import LiteRT either.
    assert _run(
        "import sys; sys.modules['matplotlib'] = None; import keras_repnet; "
        "print('ai_edge_litert' in sys.modules, keras_repnet.build.__name__)"
    ) == ["False", "build"]


def test_import_leaves_the_matplotlib_backend_alone():
    assert _run(
        "import keras_repnet; from matplotlib import rcParams, rcsetup; "
        "print(rcParams._get('backend') is rcsetup._auto_backend_sentinel)"
    ) == ["True"]


def test_device_package_imports_nothing_heavy():
    """`repnet_trainer` runs where TensorFlow cannot be installed: none of
    its modules imports TensorFlow or Keras, and LiteRT and Pillow load only
    when used."""
    modules = _run(
        "import importlib, pkgutil, sys\n"
        "import repnet_trainer\n"
        "for module in pkgutil.iter_modules(repnet_trainer.__path__):\n"
        "    importlib.import_module('repnet_trainer.' + module.name)\n"
        "heavy = ('tensorflow', 'keras', 'PIL', 'ai_edge_litert')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    assert modules == ["[]"]
