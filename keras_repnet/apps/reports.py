"""The reports of `compare()`: a markdown table and two plots."""

from keras_repnet.apps import plotting

# Analytic memory is reported at the paper's batch size, at the run's
# resolution and at the paper's 224 px.
MEMORY_BATCH_SIZE = 8
PAPER_IMAGE_SIZE = 224


def _memory_mb(row, resolution, key):
    entry = (row.get("memory") or {}).get(str(resolution)) or {}
    return entry.get(key)


def summary(row):
    return (
        f"validation accuracy best {row['best_validation_accuracy']:.3f}, "
        f"final {row['final_validation_accuracy']:.3f}; "
        f"{row['trainable_params']:,} trainable parameters; "
        f"{row['wall_time_s']:.0f} s"
    )


def _millions(value):
    return None if value is None else value / 1e6


def _cell(value, spec):
    return "-" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    """The comparison as a markdown table with its settings."""
    settings = results["settings"]
    size = settings["image_size"]
    header = [
        "method",
        "best val acc",
        "final val acc",
        "test acc",
        "final train acc",
        "trainable params",
        f"memory MB ideal @{size}",
        f"memory MB ours @{size}",
        f"memory MB ideal @{PAPER_IMAGE_SIZE}",
        f"memory MB ours @{PAPER_IMAGE_SIZE}",
        f"measured step peak MB @{size}",
        "median step ms",
        f"inference M mult-adds @{size}",
        "mask sparsity",
    ]
    lines = [
        f"# Transfer methods on {settings['backbone']}",
        "",
        f"Data `{settings['data']}`"
        + (
            f" (test `{settings['test_data']}`)"
            if settings.get("test_data")
            else ""
        )
        + f", {size} px, {settings['epochs']} epochs, "
        f"batch {settings['batch_size']}, seed {settings['seed']}, "
        f"weights `{settings['weights']}`, label smoothing "
        f"{settings['label_smoothing']}; {settings['schedule']}. Memory: "
        f"analytic training memory at batch {MEMORY_BATCH_SIZE} "
        "(`keras_repnet.memory.profile`): ideal = the TinyTL / Rep-Net "
        "count (peak activations + trainable fp32 + frozen int8), ours = "
        "what TensorFlow holds (fp32 parameters, Adam state, step peak). "
        "Inference multiply-adds per image skip the weights a mask drops "
        "(`keras_repnet.core.flops`).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in results["methods"]:
        measured = (row.get("measured") or {}).get("step_peak_mb")
        cells = [
            row["method"],
            _cell(row["best_validation_accuracy"], ".3f"),
            _cell(row["final_validation_accuracy"], ".3f"),
            _cell(row.get("test_accuracy"), ".3f"),
            _cell(row.get("final_train_accuracy"), ".3f"),
            _cell(row["trainable_params"], ","),
            _cell(_memory_mb(row, size, "ideal_mb"), ".1f"),
            _cell(_memory_mb(row, size, "ours_mb"), ".1f"),
            _cell(_memory_mb(row, PAPER_IMAGE_SIZE, "ideal_mb"), ".1f"),
            _cell(_memory_mb(row, PAPER_IMAGE_SIZE, "ours_mb"), ".1f"),
            _cell(measured, ".1f"),
            _cell(row["median_step_ms"], ".0f"),
            _cell(_millions(row.get("multiply_adds")), ".1f"),
            _cell(row.get("mask_sparsity"), ".1%"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Methods (peak learning rates side / head):", ""]
    lines += [
        f"- `{row['method']}`: {row['description']} "
        f"({row['learning_rates'][0]:g} / {row['learning_rates'][1]:g})"
        for row in results["methods"]
    ]
    return "\n".join(lines) + "\n"


def _x_axis(rows):
    """The memory axis: the measured step peak where every row has one,
    else the analytic count of what TensorFlow keeps at 224 px, else
    trainable parameters."""
    measured = [(row.get("measured") or {}).get("step_peak_mb") for row in rows]
    if all(value is not None for value in measured):
        return measured, (
            f"measured training-step peak, MB (batch {MEMORY_BATCH_SIZE})"
        )
    counted = [_memory_mb(row, PAPER_IMAGE_SIZE, "ours_mb") for row in rows]
    if all(value is not None for value in counted):
        return counted, (
            f"training memory, MB (counted: what TensorFlow keeps, "
            f"{PAPER_IMAGE_SIZE} px, batch {MEMORY_BATCH_SIZE})"
        )
    return [row["trainable_params"] for row in rows], "trainable parameters"


def pareto_front(points: list) -> list:
    """Indices of the `(cost, accuracy)` points that no other point beats
    on both (lower or equal cost and higher or equal accuracy, one strictly),
    in order of cost."""
    front = [
        i
        for i, (cost, accuracy) in enumerate(points)
        if not any(
            c <= cost and a >= accuracy and (c, a) != (cost, accuracy)
            for c, a in points
        )
    ]
    return sorted(front, key=lambda i: points[i])


def plot_pareto(rows: list, path, settings: dict) -> None:
    """Best validation accuracy against training memory, with the Pareto
    front drawn as a line."""
    costs, label = _x_axis(rows)
    accuracy = [row["best_validation_accuracy"] for row in rows]
    figure = plotting.figure(figsize=(7, 5))
    axis = figure.subplots()
    repnet = [row["method"].startswith("repnet") for row in rows]
    for family, marker, name in ((True, "o", "Rep-Net"), (False, "s", "other")):
        chosen = [i for i, r in enumerate(repnet) if r == family]
        if chosen:
            axis.scatter(
                [costs[i] for i in chosen], [accuracy[i] for i in chosen],
                marker=marker, label=name, zorder=3,
            )
    for cost, value, row in zip(costs, accuracy, rows):
        axis.annotate(
            row["method"], (cost, value), textcoords="offset points",
            xytext=(4, 4), fontsize=8,
        )
    front = pareto_front(list(zip(costs, accuracy)))
    axis.plot(
        [costs[i] for i in front], [accuracy[i] for i in front],
        linestyle="--", color="grey", label="Pareto front", zorder=2,
    )
    axis.set_xlim(0, max(costs) * 1.15)
    axis.set_xlabel(label)
    plotting.accuracy_axis(axis, accuracy, "best validation accuracy")
    axis.set_title(_title(settings))
    axis.legend()
    plotting.save(figure, path)


def plot_curves(rows: list, path, settings: dict) -> None:
    """Validation accuracy per epoch, one line per method (Rep-Net variants
    solid, the other methods dashed)."""
    figure = plotting.figure(figsize=(7, 5))
    axis = figure.subplots()
    colors = plotting.colors("tab20")
    for index, row in enumerate(rows):
        values = row["history"]["val_accuracy"]
        axis.plot(
            range(1, len(values) + 1), values, marker="o",
            color=colors[index % len(colors)],
            linestyle="-" if row["method"].startswith("repnet") else "--",
            label=row["method"],
        )
    plotting.integer_ticks(axis)
    axis.set_xlabel("epoch")
    plotting.accuracy_axis(
        axis,
        [v for row in rows for v in row["history"]["val_accuracy"]],
        "validation accuracy",
    )
    axis.set_title(_title(settings))
    axis.legend(fontsize=8)
    plotting.save(figure, path)


def _title(settings):
    epochs = settings["epochs"]
    return (
        f"{settings['backbone']}, {settings['image_size']} px, "
        f"{epochs} epoch{'s' if epochs != 1 else ''}"
    )
