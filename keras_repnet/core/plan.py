"""A Rep-Net model's connector plan and parameter budget, read from its graph."""

import math

import keras

from keras_repnet.core import masks
from keras_repnet.core.layers import ActivationConnector
from keras_repnet.core.layers import ChannelBias
from keras_repnet.core.layers import RepNetModule


def count_params(weights) -> int:
    """Number of scalars in a list of variables."""
    return sum(math.prod(w.shape) for w in weights)


def parameter_counts(model: keras.Model) -> dict:
    """Trainable and frozen parameter counts of a Rep-Net model.

    Returns:
        A dict with `side` (Rep-Net modules' trainable weights), `shifts`
        (the backbone shifts, `ChannelBias`), `mask` (the scores of the
        backbone masks, `keras_repnet.core.masks`), `head` (the other
        trainable weights), `trainable` (their sum) and `frozen` (every
        non-trainable weight outside the side modules: the backbone).
    """
    modules = [layer for layer in model.layers if isinstance(layer, RepNetModule)]
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
            producer = backbone_tensor._keras_history.operation
            if isinstance(producer, ChannelBias):  # The tap is what it shifts.
                producer = producer.input._keras_history.operation
            connectors[module_tensor._keras_history.operation.name] = (
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


def describe(model: keras.Model, print_fn=None) -> str:
    """Prints (and returns) the connector plan and parameter counts.

    Args:
        model: keras.Model. A model made by `keras_repnet.build`, or loaded
            from a `.keras` file saved from one.
        print_fn: callable. Where to print. Defaults to `print`; pass
            `lambda s: None` to only get the text.
    """
    rows = connector_plan(model)
    header = ("module", "backbone tap", "shape (HxWxC)", "params", "connector")
    table = [header] + [
        (
            r["module"],
            r["tap"],
            "x".join(str(d) for d in r["shape"]),
            f"{r['params']:,}",
            r["connector"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"Rep-Net plan of {model.name!r}: {len(rows)} modules"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    counts = parameter_counts(model)
    lines.append(
        f"Trainable: {counts['trainable']:,} (side {counts['side']:,}, "
        f"backbone shifts {counts['shifts']:,}, "
        + (f"mask scores {counts['mask']:,}, " if counts["mask"] else "")
        + f"head {counts['head']:,}). Frozen: {counts['frozen']:,}."
    )
    if counts["mask"]:
        lines += _mask_lines(model)
    text = "\n".join(lines)
    (print_fn or print)(text)
    return text


def _mask_lines(model):
    """The masks' sparsity (total and per layer) and the multiply-adds."""
    from keras_repnet.core import flops

    report = masks.sparsity(model)
    cost = flops.multiply_adds(model)
    bound = " (an upper bound: per weight)" if cost["granularity"] == "weight" else ""
    lines = [
        f"Mask ({cost['granularity']}): {report['sparsity']:.1%} of "
        f"{report['masked_weights']:,} backbone weights dropped. Inference "
        f"{cost['dense'] / 1e6:.1f} -> {cost['masked'] / 1e6:.1f} "
        f"M multiply-adds{bound}."
    ]
    width = max(len(r["layer"]) for r in report["layers"])
    lines += [
        f"  {r['layer'].ljust(width)}  {r['sparsity']:6.1%} of {r['weights']:,}"
        for r in report["layers"]
        if r["dropped"]
    ]
    return lines
