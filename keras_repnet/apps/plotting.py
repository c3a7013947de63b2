"""Plots written to PNG files.

Figures are `matplotlib.figure.Figure`s made without pyplot: saving one
renders it with Agg, and neither pyplot's state nor the global backend
changes (a notebook that imports keras-repnet keeps its inline plots).
matplotlib itself is imported on first use.
"""


def figure(**kwargs):
    """A new figure, not tied to any GUI backend (`Figure(**kwargs)`)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def colors(name: str) -> tuple:
    """The colors of a listed matplotlib colormap, e.g. `"tab20"`."""
    import matplotlib

    return matplotlib.colormaps[name].colors


def save(figure, path) -> None:
    """Lays `figure` out and writes it as a PNG at 100 dpi."""
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# The narrowest accuracy range an axis shows, so that a point of difference
# looks like one.
MIN_ACCURACY_SPAN = 0.3


def accuracy_axis(axis, values, label="accuracy") -> None:
    """An accuracy y-axis that spans at least `MIN_ACCURACY_SPAN` in [0, 1]
    around `values`."""
    low, high = min(values), max(values)
    span = max(MIN_ACCURACY_SPAN, high - low + 0.1)
    top = min(1.0, max(high + 0.05, low - 0.05 + span))
    axis.set_ylim(max(0.0, top - span), top)
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)


def integer_ticks(axis) -> None:
    """Whole-number ticks on the x-axis (epochs)."""
    axis.xaxis.get_major_locator().set_params(integer=True)


def plot_history(history: dict, path, title: str = "") -> None:
    """Plots accuracy and loss per epoch, training and validation.

    Args:
        history: dict. `keras.callbacks.History.history`: metric name to a
            list of per-epoch values (`accuracy`, `val_accuracy`, `loss`,
            `val_loss`).
        path: where to write the PNG.
        title: str. Figure title. Defaults to no title.
    """
    plot = figure(figsize=(10, 4))
    axes = plot.subplots(1, 2)
    for axis, metric in zip(axes, ("accuracy", "loss")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                epochs = range(1, len(values) + 1)
                axis.plot(epochs, values, marker="o", label=label)
        axis.set_xlabel("epoch")
        integer_ticks(axis)
        if metric == "accuracy":
            accuracy_axis(axis, [v for k in ("accuracy", "val_accuracy")
                                 for v in history.get(k, [])] or [0.5])
        else:
            axis.set_ylabel(metric)
            axis.grid(alpha=0.3)
        axis.legend()
    if title:
        plot.suptitle(title)
    save(plot, path)
