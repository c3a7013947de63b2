"""Doctest set-up: the names the docstrings' examples use."""

import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    import keras_repnet

    doctest_namespace.update(keras=keras, np=np, keras_repnet=keras_repnet)
