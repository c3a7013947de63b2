"""keras-repnet installs beside the TensorFlow and Keras already there.

A hosted notebook ships its own supported TensorFlow/Keras pair; installing
keras-repnet must keep it (replacing TensorFlow is a large download that can
break the runtime's GPU libraries).
"""

import configparser
import json
import subprocess
import sys
from pathlib import Path

from keras_repnet import compat

ROOT = Path(__file__).resolve().parents[1]


def _install_requires():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["options"]["install_requires"].split()


def test_setup_cfg_declares_the_supported_versions():
    for name, (low, high) in compat.SUPPORTED.items():
        major, minor = high.split(".")
        expected = f"{name}>={low},<{major}.{int(minor) + 1}"
        assert expected in _install_requires(), (
            f"setup.cfg and keras_repnet.compat.SUPPORTED disagree on {name}"
        )


def test_installing_keeps_the_installed_tensorflow_and_keras(tmp_path):
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
         "--report", str(report), str(ROOT)],
        check=True,
        capture_output=True,
    )
    installs = {
        item["metadata"]["name"].lower()
        for item in json.loads(report.read_text())["install"]
    }
    # Only keras-repnet itself: every dependency is already satisfied.
    assert installs == {"keras-repnet"}


def test_makefile_tests_the_oldest_supported_versions():
    makefile = (ROOT / "Makefile").read_text()
    for name, (low, _) in compat.SUPPORTED.items():
        assert f'"{name}=={low}.*"' in makefile, (
            f"make test-oldest does not pin {name} {low} (compat.SUPPORTED)"
        )
