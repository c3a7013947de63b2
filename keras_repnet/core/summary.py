"""`describe()`: a model's connector plan, parameters and masks, printed."""

import keras

from keras_repnet.core import flops
from keras_repnet.core import masks
from keras_repnet.core.plan import connector_plan
from keras_repnet.core.plan import parameter_counts


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
    report = masks.sparsity(model)
    cost = flops.inference_cost(model)
    bound = " (an upper bound: per weight)" if cost["granularity"] == "weight" else ""
    lines = [
        f"Mask ({cost['granularity']}): {cost['sparsity']:.1%} of "
        f"{cost['masked_weights']:,} backbone weights dropped. Inference "
        f"{cost['multiply_adds'] / 1e6:.1f} -> "
        f"{cost['masked_multiply_adds'] / 1e6:.1f} M multiply-adds{bound}."
    ]
    width = max(len(r["layer"]) for r in report["layers"])
    lines += [
        f"  {r['layer'].ljust(width)}  {r['sparsity']:6.1%} of {r['weights']:,}"
        for r in report["layers"]
        if r["dropped"]
    ]
    return lines
