"""Running the accuracy protocol: one `protocol.Run` at a time.

`run()` trains a run, or reads its result if it finished before; an
interrupted run resumes from its last finished epoch. Each writes
`OUTPUT_DIR/runs/<run name>/result.json`. `run_stage()` runs a stage's
unfinished runs, listing them again after each.
"""

import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import grids
import protocol
import stages


@functools.lru_cache(maxsize=2)
def dataset(name, image_size):
    """`(train, test)` arrays of a set: its own test split, or a 20% split
    drawn with a fixed seed (the same for every run)."""
    import keras_repnet

    train, test, _ = protocol.SETS[name]
    if train == test:  # an idx folder with its t10k files
        return keras_repnet.data.load_idx_folder(protocol.DATASETS / train)
    if test is not None:
        return (
            _read_folder(protocol.DATASETS / train, image_size),
            _read_folder(protocol.DATASETS / test, image_size),
        )
    x, y = _read_folder(protocol.DATASETS / train, image_size)
    order = np.random.default_rng(0).permutation(len(x))
    cut = len(x) // 5
    test_index, rest = order[:cut], order[cut:]
    return (x[rest], y[rest]), (x[test_index], y[test_index])


@functools.cache
def set_size(name):
    """`(training images, classes)` of a set, before the protocol's cap."""
    (_, labels), _ = dataset(name, protocol.BASE_IMAGE_SIZE)
    return len(labels), len(np.unique(labels))


def _read_folder(folder, image_size):
    """uint8 images and labels of an image folder, read as
    `keras_repnet.data` reads one (unreadable files skipped and reported),
    in the listing's order."""
    from repnet_trainer import split

    from keras_repnet.data import images

    paths, labels, _ = split.list_image_files(folder)
    kept = images.readable(folder, paths)
    examples = images.read_files(
        folder,
        [path for path, keep in zip(paths, kept) if keep],
        np.asarray(labels, np.int32)[kept],
        image_size=(image_size, image_size),
    )
    pixels, labels = zip(*examples.dataset.batch(256).as_numpy_iterator())
    return np.concatenate(pixels), np.concatenate(labels)


def _few_shot(source, shots, seed):
    """The first `shots` examples of each class, in a seeded order."""
    x, y = source
    order = np.random.default_rng(seed).permutation(len(x))
    keep = np.concatenate(
        [order[y[order] == label][:shots] for label in np.unique(y)]
    )
    return x[keep], y[keep]


def backbone_model(backbone, image_size):
    """`(backbone, weights)` arguments of `build_method` for a protocol
    backbone: a name and its weights file, or a built model."""
    import keras

    name, alpha, weights = protocol.BACKBONES[backbone]
    if alpha == 1.0:
        return name, str(weights)
    model = getattr(keras.applications, name)(
        alpha=alpha,
        include_top=False,
        weights=None,
        input_shape=(image_size, image_size, 3),
    )
    model.load_weights(str(weights))
    return model, None


def result_path(spec: protocol.Run, output_dir):
    """Where `spec`'s result is written once it finishes."""
    return Path(output_dir) / "runs" / spec.name / "result.json"


def run(spec: protocol.Run, output_dir) -> dict:
    """Trains `spec`, or reads its result if it finished before."""
    import keras

    import keras_repnet
    from keras_repnet.apps import resumable

    path = result_path(spec, output_dir)
    folder = path.parent
    if path.exists():
        return json.loads(path.read_text())
    print(f"== {spec.name}", flush=True)
    started = time.time()
    size = spec.image_size
    keras.backend.clear_session()
    source, test = dataset(spec.set, size)
    validation_split = None
    if spec.shots:
        source, validation_split = _few_shot(source, spec.shots, spec.seed), 0.0
    build_options, recipe_fields = protocol.split_options(spec.option_dict)
    pinned = protocol.pinned_options(spec.backbone, size, spec.method)
    build_options = {**pinned, **build_options}
    recipe = keras_repnet.recipe_for(spec.method).replace(
        side_learning_rate=spec.rates[0],
        head_learning_rate=spec.rates[1],
        image_size=size,
        epochs=spec.epochs or protocol.EPOCHS,
        batch_size=spec.batch_size or protocol.BATCH_SIZE,
        seed=spec.seed,
        validation_split=validation_split,
    ).replace(**recipe_fields)
    keras.utils.set_random_seed(spec.seed)
    name, _, _ = protocol.BACKBONES[spec.backbone]
    splits = keras_repnet.data.load(
        source,
        test=test,
        recipe=recipe,
        preprocess=keras_repnet.data.preprocessing_for(name),
        max_examples=None if spec.shots else protocol.TRAIN_EXAMPLES,
    )
    backbone, weights = backbone_model(spec.backbone, size)
    model = keras_repnet.build_method(
        spec.method,
        backbone,
        splits.num_classes,
        input_shape=(size, size, 3),
        weights=weights,
        recipe=recipe,
        **build_options,
    )
    steps = recipe.epochs * math.ceil(splits.num_train / recipe.batch_size)
    model.recipe.compile(model, steps)
    history = resumable.fit_resumable(
        model,
        splits.train,
        splits.validation if splits.num_validation else None,
        epochs=recipe.epochs,
        output_dir=str(folder),
        verbose=2,
        keep_backup=False,  # A finished run is read from its result.json.
    )
    _, test_accuracy = model.evaluate(splits.test, verbose=0)
    result = {
        "set": spec.set,
        "backbone": spec.backbone,
        "method": spec.method,
        "learning_rates": list(spec.rates),
        "seed": spec.seed,
        "image_size": size,
        "shots": spec.shots,
        "batch_size": spec.batch_size,
        "epochs": spec.epochs,
        "steps": steps,
        "num_train": splits.num_train,
        "num_validation": splits.num_validation,
        "num_test": splits.num_test,
        "final_train_accuracy": history["accuracy"][-1],
        "validation_accuracy": history.get("val_accuracy", []),
        "test_accuracy": float(test_accuracy),
        "trainable_params": keras_repnet.parameter_counts(model)["trainable"],
        "wall_time_s": round(time.time() - started, 1),
    }
    if spec.options:
        result["options"] = spec.option_dict
    if spec.tag:
        result["tag"] = spec.tag
    if spec.method == protocol.MASK_METHOD:
        result["mask"] = _mask_report(
            model, spec.backbone, splits.num_classes, build_options
        )
    write_json(result, path)
    return result


def run_stage(
    stage, point, sets, output_dir, results, variants=None, methods=None
):
    """Runs `stage`'s unfinished runs at `point` one at a time, rewriting
    the report and listing the runs again from it after each (a rate beyond
    a grid's edge, and the picks later runs use, follow the runs just
    finished); `variants` keeps the tagged stages' runs of those tags, and
    `methods` the runs of those methods. Returns the finished results."""
    import report

    def unfinished(results):
        for spec in stages.stage_runs(stage, point, sets, results, set_size):
            if _selected(spec, stage, variants, methods) and not (
                result_path(spec, output_dir).exists()
            ):
                yield spec

    while (spec := next(unfinished(results), None)) is not None:
        run(spec, output_dir)
        results = report.write(output_dir, list(protocol.SETS))
    return results


def _selected(spec, stage, variants, methods):
    """Whether `spec`'s tag is among `variants` (in the tagged stages) and
    its method among `methods`, where they are given."""
    if variants and stage in protocol.TAGGED_STAGES and spec.tag not in variants:
        return False
    return not methods or spec.method in methods


def _mask_report(model, backbone, num_classes, options):
    """A masked model's sparsity and multiply-adds, at `MASK_COST_SIZE` px:
    the learned scores copied into the same model built at that size
    (scores do not depend on the input size)."""
    import keras_repnet
    from keras_repnet.core import flops
    from keras_repnet.core import masks

    from keras_repnet.core import backbones

    size = protocol.MASK_COST_SIZE
    large_backbone, _ = backbone_model(backbone, size)
    with backbones.random_weights_on_purpose():  # Its scores are copied.
        large = keras_repnet.build_method(
            protocol.MASK_METHOD,
            large_backbone,
            num_classes,
            input_shape=(size, size, 3),
            weights=None,
            **options,
        )
    scores = {l.name: l.score for l in model.layers if masks.is_masked(l)}
    for layer in large.layers:
        if masks.is_masked(layer):
            layer.score.assign(scores[layer.name])
    return {**flops.inference_cost(large), "image_size_of_cost": size}


# Measured at the paper's size and batch.
MEMORY_IMAGE_SIZE = 224
MEMORY_BATCH_SIZE = 8


def measure_memory(output_dir, backbones):
    """Measured step peaks (MB, batch 8, 224 px), per backbone, of the
    frozen backbone's inference and of the model of each method and each
    Rep-Net option a point of the plan runs, as it runs there
    (`protocol.pinned_options`; keys: `protocol.memory_key`)."""
    from keras_repnet import memory

    path = Path(output_dir) / "memory.json"
    measured = json.loads(path.read_text()) if path.exists() else {}

    def methods_at(point):
        methods = [
            memory.INFERENCE, "repnet", "ft-last", "ft-full", "bn-only",
            "tinytl", "mobiletl",
        ]
        if "ablations" in protocol.PLAN[point]:
            methods.append("repnet-no-shifts")
        if "mask" in protocol.PLAN[point]:
            methods.append(protocol.MASK_METHOD)
        return methods

    for backbone in backbones:
        name, alpha, _ = protocol.BACKBONES[backbone]
        if alpha != 1.0:
            continue
        points = [point for point in protocol.PLAN if point[0] == backbone]
        configurations = [
            (point, method, {}) for point in points for method in methods_at(point)
        ] + [
            (point, "repnet", protocol.split_options(
                stages.option_options(
                    None if tag in grids.OVER_DEFAULTS else point, options
                )
            )[0])
            for tag, options in grids.REPNET_OPTIONS.items()
            for point in points
            if tag in grids.POINT_OPTIONS.get(point, ())
        ]
        for (_, size), method, options in configurations:
            options = {
                **protocol.pinned_options(backbone, size, method), **options
            }
            key = protocol.memory_key(backbone, method, options)
            if key not in measured:
                print(f"== memory {key}", flush=True)
                peak = memory.measure(
                    method, name, image_size=MEMORY_IMAGE_SIZE,
                    batch_size=MEMORY_BATCH_SIZE, options=options,
                )
                measured[key] = round(peak.peak_bytes / 1e6, 1)
                write_json(measured, path)
    return measured


def write_json(value, path):
    from keras_repnet.apps import files

    files.write_json(value, str(path))
