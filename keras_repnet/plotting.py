"""Training curves as a PNG file."""

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402


def plot_history(history: dict, path, title: str = "") -> None:
    """Plots accuracy and loss per epoch, training and validation.

    Args:
        history: dict. `keras.callbacks.History.history`: metric name to a
            list of per-epoch values (`accuracy`, `val_accuracy`, `loss`,
            `val_loss`).
        path: where to write the PNG.
        title: str. Figure title. Defaults to no title.
    """
    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4))
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
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
