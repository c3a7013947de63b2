"""The protocol's plots, drawn with `keras_repnet.apps.plotting`.

Axes are linear with round ticks, and accuracy axes span at least
`plotting.MIN_ACCURACY_SPAN`, so that a point of difference looks like one.
"""

from keras_repnet.apps import plotting


def _panels(rows, width=4.2, margin=0.0):
    """A figure with a panel per set, `margin` inches wider on the right."""
    sets = sorted({r["set"] for r in rows})
    figure = plotting.figure(figsize=(width * len(sets) + margin, 3.6))
    axes = figure.subplots(1, len(sets), squeeze=False)[0]
    return figure, dict(zip(sets, axes))


def accuracy_against(rows, *, x, label, xlabel, path):
    """Mean test accuracy (error bars: std over seeds) against `x(row)`."""
    if not rows:
        return
    figure, panels = _panels(rows)
    for set_name, axis in panels.items():
        chosen = [r for r in rows if r["set"] == set_name]
        for row in chosen:
            mean, std, _ = row["test"]
            axis.errorbar(x(row), mean, yerr=std, fmt="o")
            axis.annotate(label(row), (x(row), mean), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
        axis.set_xlim(0, max(x(r) for r in chosen) * 1.15)
        plotting.accuracy_axis(axis, [r["test"][0] for r in chosen])
        axis.set_title(set_name)
        axis.set_xlabel(xlabel)
    plotting.save(figure, path)


def lines_against_size(rows, path, methods, backbones):
    """Mean test accuracy against image size for `methods` on `backbones`:
    a colour per method, a line style per backbone (a lone marker where a
    backbone has one size so far)."""
    rows = [
        r for r in rows if r["method"] in methods and r["backbone"] in backbones
    ]
    if not rows:
        return
    figure, panels = _panels(rows, margin=2.4)
    colors = dict(zip(methods, plotting.colors("tab10")))
    styles = dict(zip(backbones, ("-", "--", ":", "-.")))
    markers = dict(zip(backbones, ("o", "s", "^", "D")))
    for set_name, axis in panels.items():
        chosen = [r for r in rows if r["set"] == set_name]
        for backbone in backbones:
            for method in methods:
                line = sorted(
                    (r["image_size"], r["test"][0])
                    for r in chosen
                    if (r["backbone"], r["method"]) == (backbone, method)
                )
                if line:
                    axis.plot(
                        *zip(*line), styles[backbone], marker=markers[backbone],
                        color=colors[method], label=f"{method} ({backbone})",
                    )
        sizes = sorted({r["image_size"] for r in chosen})
        axis.set_xticks(sizes)
        plotting.accuracy_axis(axis, [r["test"][0] for r in chosen])
        axis.set_title(set_name)
        axis.set_xlabel("image size, px")
    # One legend for all panels, beside the last, so that none hides a line.
    legend = {}
    for axis in panels.values():
        for handle, name in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    last = list(panels.values())[-1]
    last.legend(
        legend.values(), legend.keys(), fontsize=7, loc="center left",
        bbox_to_anchor=(1.02, 0.5),
    )
    plotting.save(figure, path)


def accuracy_against_memory(rows, path):
    """Test accuracy against measured training memory (the rows'
    `memory_mb`), one panel a set, at the protocol's first point
    (MobileNetV2, 64 px)."""
    point_rows = [
        r for r in rows
        if (r["backbone"], r["image_size"]) == ("MobileNetV2", 64)
        and r.get("memory_mb") is not None
    ]
    accuracy_against(
        point_rows,
        x=lambda r: r["memory_mb"],
        label=lambda r: r["method"],
        xlabel="measured training memory, MB (224 px, batch 8)",
        path=path,
    )
