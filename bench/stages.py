"""The accuracy protocol's stages: the `Run`s each stage makes at a
point, given the runs that finished (later stages use the rates the grids
picked), and the rates and options its option stage runs at.

`protocol.py` defines the sets, backbones, points and picks; `runs.py`
trains what `stage_runs` yields.
"""

import math

import grids
import protocol


def points(backbones=None, image_sizes=None):
    """The plan's `(backbone, image size)` points, filtered."""
    return [
        point
        for point in protocol.PLAN
        if (not backbones or point[0] in backbones)
        and (not image_sizes or point[1] in image_sizes)
    ]


def sets_at(point, sets):
    return [s for s in sets if s in protocol.POINT_SETS.get(point, sets)]


def stage_runs(stage, point, sets, results, set_size):
    """Yields the `Run`s of `stage` at `point`, given the finished
    `results` (later stages use the rates the grids picked) and
    `set_size(set_name) -> (training images, classes)`."""
    backbone, size = point
    if stage not in protocol.PLAN[point]:
        return
    first_far = next((s for s in sets if protocol.SETS[s][2]), None)
    for set_name in sets_at(point, sets):
        far = protocol.SETS[set_name][2]

        def picked(method, set_name=set_name):
            return protocol.best_rates(
                results, set_name, backbone, method, size
            )

        def run(method, rates, **kwargs):
            return protocol.Run(
                set_name, backbone, method, rates, image_size=size, **kwargs
            )

        if stage in protocol.GRID_STAGES:
            every_grid = point == ("MobileNetV2", 64)
            for method in protocol.GRID_STAGES[stage]:
                if method in protocol.COSTLY_BASELINES and not every_grid:
                    continue
                own_grid = every_grid or method not in protocol.VARIANTS_ONLY
                for rates in grids.LEARNING_RATES[method] * own_grid:
                    yield run(method, rates)
                beyond = protocol.edge_rates(results, set_name, point, method)
                if beyond:
                    yield run(method, beyond)
                for tag, (options, grid) in grids.VARIANTS.get(method, {}).items():
                    for rates in grid:
                        yield run(
                            method, rates,
                            options=protocol.with_options(options),
                            tag=tag,
                        )
        elif stage == "seeds":
            for method in protocol.SEEDED_METHODS:
                rates = picked(method)
                options, tag = protocol.picked_variant(
                    results, set_name, backbone, method, size
                )
                for seed in protocol.SEEDS[1:]:
                    if rates:
                        yield run(
                            method, rates, seed=seed, options=options, tag=tag
                        )
        elif stage == "long" and far:
            for method in protocol.LONG_METHODS:
                if picked(method):
                    yield run(
                        method, picked(method),
                        epochs=protocol.LONG_EPOCHS_FACTOR * protocol.EPOCHS,
                    )
        elif stage == "fewshot" and far:
            for shots in protocol.SHOTS:
                for method in protocol.FEW_SHOT_METHODS:
                    if picked(method):
                        epochs = few_shot_epochs(*set_size(set_name), shots)
                        yield run(
                            method, picked(method), shots=shots, epochs=epochs
                        )
        elif stage == "batch8" and far:
            recipe = (1e-2, 1e-3)  # Rep-Net's recipe, as it is.
            specs = {("repnet", recipe)} | {
                (method, picked(method)) for method in protocol.FEW_SHOT_METHODS
            }
            for method, rates in sorted(specs, key=str):
                if rates:
                    yield run(method, rates, batch_size=protocol.SMALL_BATCH)
        elif stage == "mask" and far and picked("repnet"):
            # The protocol's epochs and 3x longer, at the defaults and at
            # `grids.MASK_VARIANTS`.
            for epochs in (None, protocol.LONG_EPOCHS_FACTOR * protocol.EPOCHS):
                for tag, options in ((None, None), *grids.MASK_VARIANTS.items()):
                    yield run(
                        protocol.MASK_METHOD, picked("repnet"), epochs=epochs,
                        options=protocol.with_options(options), tag=tag,
                    )
        elif stage == "mask-options" and set_name == first_far:
            for tag, options in grids.MASK_OPTIONS.items():
                if picked("repnet"):
                    yield run(
                        protocol.MASK_METHOD, picked("repnet"),
                        options=protocol.with_options(options), tag=tag,
                    )
        elif stage == "repnet-options" and far and picked("repnet"):
            seeded_tags = seeded_options(results, set_name, point)
            for tag, options in grids.REPNET_OPTIONS.items():
                if tag not in grids.POINT_OPTIONS.get(point, grids.REPNET_OPTIONS):
                    continue
                over = None if tag in grids.OVER_DEFAULTS else point
                rates = option_stage_rates(results, set_name, point, tag)
                seeds = protocol.SEEDS
                if tag not in seeded_tags:
                    seeds = seeds[:1]
                for seed in seeds:
                    yield run(
                        "repnet", rates, tag=tag, seed=seed,
                        options=protocol.with_options(
                            option_options(over, options, rates[0])
                        ),
                    )
        elif stage == "ablations" and set_name == sets[0]:
            for method in protocol.ABLATIONS:
                if picked("repnet"):
                    yield run(method, picked("repnet"))


def option_stage_rates(results, set_name, point, tag):
    """The rates the `repnet-options` stage runs option `tag` at: its own
    (`grids.REPNET_OPTION_RATES`), its point's former defaults' pick, or
    repnet's pick (`None` until repnet's grid has finished)."""
    backbone, size = point
    picked = protocol.best_rates(results, set_name, backbone, "repnet", size)
    if tag in grids.REPNET_OPTION_RATES:
        return grids.REPNET_OPTION_RATES[tag]
    over = None if tag in grids.OVER_DEFAULTS else point
    return option_rates(over, set_name, picked)


def option_rates(point, set_name, picked):
    """The rates of the `repnet-options` stage: repnet's `picked` ones, or
    at a point of `grids.FORMER_DEFAULTS` the ones its former defaults
    picked on `set_name`."""
    rates = grids.FORMER_DEFAULTS.get(point, (None, picked))[1]
    return rates.get(set_name) if isinstance(rates, dict) else rates


def option_options(point, options, side_rate=None):
    """A `repnet-options` option as it runs at `point`: at a point of
    `grids.FORMER_DEFAULTS`, over the defaults it was chosen against, the
    shifts it turns on at `side_rate` unless it sets their rate.

    >>> point = ("MobileNetV3Small", 128)
    >>> option_options(point, {"side_width": 2.0})["num_modules"]
    4
    """
    if point not in grids.FORMER_DEFAULTS:
        return dict(options)
    merged = {**grids.FORMER_DEFAULTS[point][0], **options}
    if merged.get("backbone_shifts") and "shift_learning_rate" not in merged:
        merged["shift_learning_rate"] = side_rate
    return {k: v for k, v in merged.items() if v is not None}


def picked_option(results, set_name, point, grid):
    """The member of `grids.OPTION_GRIDS[grid]` with the best validation
    accuracy at seed 0 at `point`, or `None` until every member has run."""
    backbone, size = point
    finished = {
        r.get("tag"): protocol.final_validation(r)
        for r in results
        if r["set"] == set_name and r["backbone"] == backbone
        and protocol.image_size_of(r) == size and r["method"] == "repnet"
        and r["seed"] == 0 and r.get("tag") in grids.OPTION_GRIDS[grid]
    }
    if len(finished) < len(grids.OPTION_GRIDS[grid]):
        return None
    return max(grids.OPTION_GRIDS[grid], key=finished.get)


def seeded_options(results, set_name, point):
    """The option tags run with every seed at `point` on `set_name`: those
    of `grids.SEEDED_OPTIONS`, an option grid's by its pick."""
    tags = set()
    for tag in grids.SEEDED_OPTIONS.get(point, ()):
        if tag in grids.OPTION_GRIDS:
            tag = picked_option(results, set_name, point, tag)
        tags.add(tag)
    return tags - {None}


def few_shot_epochs(num_train, num_classes, shots):
    """Epochs that give a few-shot run the optimizer steps of the protocol's
    run on the whole set: a phone that holds 10 images per class trains them
    for many epochs, and a side network that starts from zero needs steps."""
    whole = min(protocol.TRAIN_EXAMPLES, int(0.8 * num_train))
    steps = protocol.EPOCHS * math.ceil(whole / protocol.BATCH_SIZE)
    batches = math.ceil(shots * num_classes / protocol.BATCH_SIZE)
    return math.ceil(steps / batches)
