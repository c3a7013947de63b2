"""Inference cost: multiply-adds of a model's convolutions and dense layers,
with the weights a learned binary mask drops skipped."""

import math

import keras

from keras_repnet.core import flat_graph
from keras_repnet.core import masks

_WEIGHTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def multiply_adds(model: keras.Model) -> dict:
    """Multiply-adds of one image's forward pass (the "MFLOPs" of the
    MobileNet papers and of Rep-Net's Table 4).

    Every kernel weight of a convolution or dense layer is used once per
    output position; other layers (norms, activations, pooling) are not
    counted. A masked layer's dropped weights are skipped. With `"kernel"`
    or `"channel"` masks that is work a dense kernel really avoids (whole
    filters or output channels); with `"weight"` masks it is the upper bound
    of what a sparse kernel could save.

    Args:
        model: keras.Model. A functional model, e.g. from `keras_repnet.build`
            (the side modules are counted too).

    Returns:
        `{"dense": int, "masked": int, "granularity": str or None}`: the
        multiply-adds without masks, with the dropped weights skipped, and
        the masks' granularity (`None` without masks).
    """
    graph = flat_graph.Graph.of(model)
    dense = masked = 0
    granularities = set()
    for node in graph.nodes:
        layer = node.layer
        if not isinstance(layer, _WEIGHTED):
            continue
        positions = math.prod(graph.shapes[node.outputs[0]][:-1])
        weights = math.prod(layer.kernel.shape)
        if masks.is_masked(layer):
            granularities.add(layer.granularity)
            kept = int(layer.kept().sum())
        else:
            kept = weights
        dense += positions * weights
        masked += positions * kept
    return {
        "dense": dense,
        "masked": masked,
        "granularity": "/".join(sorted(granularities)) or None,
    }


def inference_cost(model: keras.Model) -> dict:
    """Multiply-adds per image and what the masks drop, in one dict.

    Returns:
        `{"multiply_adds", "masked_multiply_adds", "granularity",
        "sparsity", "masked_weights", "dropped_weights"}`: `multiply_adds`
        dense and with the dropped weights skipped, and the masks' share of
        dropped backbone weights (`sparsity` is `None` without masks).
    """
    cost = multiply_adds(model)
    report = masks.sparsity(model)
    return {
        "multiply_adds": cost["dense"],
        "masked_multiply_adds": cost["masked"],
        "granularity": cost["granularity"],
        "sparsity": report["sparsity"] if report["layers"] else None,
        "masked_weights": report["masked_weights"],
        "dropped_weights": report["dropped_weights"],
    }
