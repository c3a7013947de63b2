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
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        plot.suptitle(title)
    save(plot, path)
