"""A Rep-Net model's connector plan and parameter budget, read from its graph."""

import math

import keras

from keras_repnet.core import graph
from keras_repnet.core import masks
from keras_repnet.core.layers import ActivationConnector
from keras_repnet.core.layers import ChannelBias
from keras_repnet.core.layers import RepNetModule
from keras_repnet.core.layers import SideTop


def count_params(weights) -> int:
    """Number of scalars in a list of variables."""
    return sum(math.prod(w.shape) for w in weights)


def parameter_counts(model: keras.Model) -> dict:
    """Trainable and frozen parameter counts of a Rep-Net model.

    Returns:
        A dict with `side` (the trainable weights of the Rep-Net modules
        and `SideTop`), `shifts` (the backbone shifts, `ChannelBias`),
        `mask` (the scores of the backbone masks,
        `keras_repnet.core.masks`), `head` (the other trainable weights),
        `trainable` (their sum) and `frozen` (every non-trainable weight
        outside the side network: the backbone).
    """
    modules = [
        layer for layer in model.layers
        if isinstance(layer, (RepNetModule, SideTop))
    ]
    side_ids = {id(w) for m in modules for w in m.weights}
    shift_ids = {
        id(w)
        for layer in model.layers
        if isinstance(layer, ChannelBias)
        for w in layer.weights
    }
    side = count_params(w for w in model.trainable_weights if id(w) in side_ids)
    shifts = count_params(
        w for w in model.trainable_weights if id(w) in shift_ids
    )
    mask = count_params(
        layer.score for layer in model.layers if masks.is_masked(layer)
    )
    trainable = count_params(model.trainable_weights)
    frozen = count_params(
        w for w in model.non_trainable_weights if id(w) not in side_ids
    )
    return {
        "side": side,
        "shifts": shifts,
        "mask": mask,
        "head": trainable - side - shifts - mask,
        "trainable": trainable,
        "frozen": frozen,
    }


def connector_plan(model: keras.Model) -> list[dict]:
    """One row per Rep-Net module: the backbone layer it joins, the joined
    feature's shape, the module's parameters and its connector."""
    connectors = {}
    for layer in model.layers:
        if isinstance(layer, ActivationConnector):
            module_tensor = layer.input[1]
            backbone_tensor = layer.input[0]
            producer = graph.producer(backbone_tensor)
            if isinstance(producer, ChannelBias):  # The tap is what it shifts.
                producer = graph.producer(producer.input)
            connectors[graph.producer(module_tensor).name] = (
                producer.name,
                layer.name,
            )
    rows = []
    for layer in model.layers:
        if not isinstance(layer, RepNetModule):
            continue
        tap, connector = connectors.get(layer.name, ("(joins the head)", "-"))
        rows.append(
            {
                "module": layer.name,
                "tap": tap,
                "shape": tuple(layer.output.shape[1:]),
                "params": count_params(layer.trainable_weights),
                "connector": connector,
            }
        )
    return rows
