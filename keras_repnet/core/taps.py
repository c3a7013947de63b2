"""Structural discovery of the places where Rep-Net joins a backbone.

The backbone's *main path* is the chain of tensors that every path from the
input to the output goes through (cut points of the functional graph). Side
branches such as squeeze-excite pooling or residual convolutions are, by that
definition, off the main path. Taps are chosen on the main path, or, at a
resolution it skips, as near to it as the graph allows, from shapes and
topology; layer names are never consulted for the decision.
"""

import dataclasses

import keras

from keras_repnet.core import graph as graph_lib

# A new resolution level starts where the main path becomes at least this much
# smaller than the current level (a stride-2 block or a pooling layer), so
# that padding and the 2-pixel shrink of "valid" convolutions are ignored.
_LEVEL_RATIO = 0.75

# Layers that end the spatial part of a network (the start of a top).
_GLOBAL_LAYERS = (
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
)


@dataclasses.dataclass(frozen=True)
class Tap:
    """A backbone tensor that receives an activation connector.

    Attributes:
        layer_name: str. Name of the backbone layer that produces the tensor.
        shape: tuple. The tensor's shape without the batch axis, `(H, W, C)`.
        reason: str. Why the walker chose it: `"downsampling"` for the output
            of a block that reaches a lower resolution, `"block"` for other
            block boundaries (used by `connect="all"`).
    """

    layer_name: str
    shape: tuple
    reason: str

    @property
    def channels(self) -> int:
        return self.shape[-1]


@dataclasses.dataclass
class _Graph:
    producer: dict  # id(tensor) -> Node that outputs it.
    main_path: list  # Cut-point tensors in topological order.
    order: dict  # id(tensor) -> position in topological order.
    # id(tensor) -> how many input-output paths go through it (the main
    # path's tensors carry all of them).
    paths_through: dict


def _analyse(model) -> _Graph:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Rep-Net needs a backbone with one image input and one output. "
            f"Received: a model with {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs."
        )
    order, producer, consumers = graph_lib.walk(model)
    # Count paths from the input and to the output: a tensor is on every
    # input-output path exactly when the product of its counts equals the
    # total. Python integers keep the counts exact on densely wired graphs.
    paths_from_input = {}
    for tensor in order:
        parents = producer[id(tensor)].input_tensors
        if not parents:
            paths_from_input[id(tensor)] = 1
        else:
            paths_from_input[id(tensor)] = sum(
                paths_from_input[id(p)] for p in parents
            )
    paths_to_output = {id(model.outputs[0]): 1}
    for tensor in reversed(order):
        if id(tensor) == id(model.outputs[0]):
            continue
        paths_to_output[id(tensor)] = sum(
            paths_to_output.get(id(out), 0)
            for node in consumers.get(id(tensor), [])
            for out in node.outputs
        )
    total = paths_from_input[id(model.outputs[0])]
    paths_through = {
        id(t): paths_from_input[id(t)] * paths_to_output[id(t)] for t in order
    }
    main_path = [t for t in order if paths_through[id(t)] == total]
    return _Graph(
        producer,
        main_path,
        {id(t): position for position, t in enumerate(order)},
        paths_through,
    )


def _spatial(tensor):
    if len(tensor.shape) != 4:
        return None
    return tensor.shape[1], tensor.shape[2]


def _known_spatial(tensor):
    size = _spatial(tensor)
    return size is not None and None not in size


def _region(graph, start, end):
    """Tensors strictly between two consecutive main-path tensors. `start`
    is a cut point, so walking back from `end` always stops there."""
    region, stack = {}, list(graph.producer[id(end)].input_tensors)
    while stack:
        tensor = stack.pop()
        if tensor is start or id(tensor) in region:
            continue
        region[id(tensor)] = tensor
        stack.extend(graph.producer[id(tensor)].input_tensors)
    return list(region.values())


def _opens_block(graph, start, end):
    """Whether `start` is the input of a residual or multi-branch block.

    That is: the main path splits after `start` into branches of the same
    resolution, at least one of them with weights, and they merge elementwise
    or by concatenation into `end`. Squeeze-excite gates are excluded because
    their gate has a lower resolution than the tensor it multiplies.
    """
    merge = graph.producer[id(end)]
    if len(merge.input_tensors) < 2:
        return False
    size = _spatial(end)
    if any(_spatial(t) != size for t in merge.input_tensors):
        return False
    region = _region(graph, start, end)
    return any(
        getattr(graph.producer[id(t)].operation, "weights", None)
        for t in region
    )


def _follow_passthrough(graph, position):
    """Moves past weightless, shape-keeping layers (e.g. the ReLU after an
    Add) so that a block's output is taken where the block really ends."""
    path = graph.main_path
    while position + 1 < len(path):
        node = graph.producer[id(path[position + 1])]
        if (
            len(node.input_tensors) == 1
            and node.input_tensors[0] is path[position]
            and not getattr(node.operation, "weights", None)
            and path[position + 1].shape == path[position].shape
        ):
            position += 1
        else:
            break
    return position


def _levels(main_path):
    """Splits the main path into runs of one resolution level each.

    Returns a list of `(first, last)` positions into `main_path`. The first
    level (at the input's resolution) is not a downsampling and is skipped.
    """
    starts, current = [], None
    for position, tensor in enumerate(main_path):
        size = _spatial(tensor)
        if size is None or None in size:
            continue
        if current is None:
            current = size
        elif _smaller_level(size, current):
            starts.append(position)
            current = size
    ends = [s - 1 for s in starts[1:]] + [len(main_path) - 1]
    return list(zip(starts, ends))


def _smaller_level(size, current):
    """Whether `size` starts a new resolution level below `current`."""
    return (
        size[0] < current[0] * _LEVEL_RATIO or size[1] < current[1] * _LEVEL_RATIO
    )


def _same_level(size, level):
    return not _smaller_level(size, level) and not _smaller_level(level, size)


def _skipped_levels(graph):
    """Taps for the levels the main path jumps over.

    Where blocks read the two blocks before them (NASNet's cells), no tensor
    at a middle resolution is on every input-output path, so the main path
    goes from a fine level straight to a much coarser one. Between two such
    main-path tensors, each skipped level gets the tensor that the most
    input-output paths go through (a cell's output), the nearest thing to a
    cut point. Returns the tensors in the order of their levels.
    """
    found = []
    spatial_path = [t for t in graph.main_path if _known_spatial(t)]
    for start, end in zip(spatial_path, spatial_path[1:]):
        current, last = _spatial(start), _spatial(end)
        if not _smaller_level(last, current):
            continue
        region = sorted(
            (t for t in _region(graph, start, end) if _known_spatial(t)),
            key=lambda t: graph.order[id(t)],
        )
        # In computing order, a level starts at the first tensor well below
        # the one before (padding and a cell's lagging second input are
        # larger, so they never start one); `end`'s own level is the main
        # path's.
        levels = []
        for tensor in region:
            size = _spatial(tensor)
            if _smaller_level(size, current) and _smaller_level(last, size):
                levels.append(size)
                current = size
        for size in levels:
            best = max(
                (t for t in region if _same_level(_spatial(t), size)),
                key=lambda t: (graph.paths_through[id(t)], -graph.order[id(t)]),
            )
            found.append(best)
    return found


def _tap_of_level(graph, first, last):
    path = graph.main_path
    size = _spatial(path[first])
    candidates = [
        p
        for p in range(first, last + 1)
        if _spatial(path[p]) is not None
        and _spatial(path[p])[0] <= size[0]
        and _spatial(path[p])[1] <= size[1]
    ]
    for p in candidates:
        if p + 1 < len(path) and _opens_block(graph, path[p], path[p + 1]):
            return p
    fewest = min(path[p].shape[-1] for p in candidates)
    return max(p for p in candidates if path[p].shape[-1] == fewest)


def _block_boundaries(graph):
    """Main-path positions at the input or output of every multi-branch
    block, for `connect="all"`."""
    path, found = graph.main_path, set()
    for p in range(len(path) - 1):
        if _spatial(path[p]) is None or _spatial(path[p + 1]) is None:
            continue
        if _opens_block(graph, path[p], path[p + 1]):
            found.add(p)
            found.add(_follow_passthrough(graph, p + 1))
    return found


def _as_tap(graph, tensor, reason):
    layer = graph.producer[id(tensor)].operation
    return Tap(layer.name, tuple(tensor.shape[1:]), reason)


def find_taps(model: keras.Model, mode: str = "downsampling") -> list[Tap]:
    """Finds where activation connectors join a backbone.

    With `mode="downsampling"` (the Rep-Net rule) there is one tap per
    resolution level reached by the backbone's main path: the output of the
    block that first reaches the lower resolution. That is the first tensor at
    the new level that feeds a residual or multi-branch block, or, where the
    level has none, its narrowest tensor. Where the main path skips a level
    (cells that read the two cells before them, as NASNet's, leave no tensor
    there on every path), the tap is the level's tensor that the most
    input-output paths go through. With `mode="all"` every block
    boundary on the main path is a tap as well.

    Args:
        model: keras.Model. A functional backbone with a single image input
            (channels last), usually built with `include_top=False`.
        mode: str. `"downsampling"` or `"all"`. Defaults to `"downsampling"`.

    Returns:
        A list of `Tap`s in the order the backbone computes them.

    Example:

    >>> backbone = keras.applications.MobileNetV2(
    ...     weights=None, include_top=False, input_shape=(224, 224, 3))
    >>> [(t.layer_name, t.shape[:2]) for t in keras_repnet.find_taps(backbone)]
    [('expanded_conv_project_BN', (112, 112)), ('block_1_project_BN', (56, 56)),
     ('block_3_project_BN', (28, 28)), ('block_6_project_BN', (14, 14)),
     ('block_13_project_BN', (7, 7))]
    """
    if mode not in ("downsampling", "all"):
        raise ValueError(
            f'`mode` must be "downsampling" or "all". Received: mode={mode!r}'
        )
    _check_functional(model)
    graph = _analyse(model)
    levels = _levels(graph.main_path)
    if not levels:
        raise ValueError(
            f"The backbone {model.name!r} never reduces the spatial "
            "resolution of its input, so there is nowhere to attach Rep-Net "
            "modules. Use a CNN backbone with stride-2 blocks or pooling, "
            "and an input large enough for them (received input shape "
            f"{tuple(model.inputs[0].shape[1:])})."
        )
    path = graph.main_path
    chosen = {}  # id(tensor) -> (tensor, reason)
    for first, last in levels:
        tensor = path[_tap_of_level(graph, first, last)]
        chosen[id(tensor)] = (tensor, "downsampling")
    for tensor in _skipped_levels(graph):
        chosen[id(tensor)] = (tensor, "downsampling")
    if mode == "all":
        first_level = levels[0][0]
        for position in _block_boundaries(graph):
            if position >= first_level:
                chosen.setdefault(id(path[position]), (path[position], "block"))
    return [
        _as_tap(graph, *chosen[key])
        for key in sorted(chosen, key=graph.order.get)
    ]


# `build()`'s default: at least this many modules where the backbone has the
# block boundaries for them.
MIN_MODULES = 4
# Taps start where the output stride is at least this (about 4: the first
# stride-2 level is left out, see `select_taps`).
_MIN_STRIDE = 3


def select_taps(model: keras.Model, num_modules: int | None = None) -> list[Tap]:
    """Chooses where `keras_repnet.build` connects Rep-Net modules.

    One tap per downsampling level (`find_taps`) from an output stride of
    about 4 on: the stride-2 level is left out, because its side activations
    dominate the training memory (MobileNetV3Small at 224 px: a 112x112 side
    feature per image is as large as the frozen backbone's whole inference
    peak) while it added no accuracy in `bench/accuracy.py`'s runs. Where
    fewer than `num_modules` (default `MIN_MODULES`) taps result, block
    boundaries (`find_taps(mode="all")`) are added, one at a time from the
    level with the most boundaries left, its middle one; then the stride-2
    level, if still short. Where more result than `num_modules`, the finest
    levels are dropped.

    Args:
        model: keras.Model. The frozen backbone.
        num_modules: int. How many modules to aim for, e.g. 6 as in the
            paper. Defaults to `None`: every downsampling level from stride
            4 on, and at least `MIN_MODULES`.

    Returns:
        A list of `Tap`s in the order the backbone computes them.

    Example:

    >>> backbone = keras.applications.MobileNetV2(
    ...     weights=None, include_top=False, input_shape=(224, 224, 3))
    >>> [t.shape[:2] for t in select_taps(backbone)]
    [(56, 56), (28, 28), (14, 14), (7, 7)]
    >>> len(select_taps(backbone, num_modules=6))
    6
    """
    if num_modules is not None and (
        not isinstance(num_modules, int) or num_modules < 1
    ):
        raise ValueError(
            "`num_modules` must be a positive int or None. Received: "
            f"num_modules={num_modules!r}"
        )
    candidates = find_taps(model, mode="all")
    side = min(s for s in model.inputs[0].shape[1:3] if s) if all(
        model.inputs[0].shape[1:3]
    ) else 2 * max(min(t.shape[:2]) for t in candidates)

    def coarse(tap):
        return min(tap.shape[:2]) * _MIN_STRIDE <= side

    chosen = [t for t in candidates if t.reason == "downsampling" and coarse(t)]
    target = num_modules or max(MIN_MODULES, len(chosen))
    spare = [t for t in candidates if t not in chosen and coarse(t)]
    while len(chosen) < target and spare:
        levels = {}
        for tap in spare:
            levels.setdefault(tap.shape[:2], []).append(tap)
        level = max(levels.values(), key=len)
        pick = level[len(level) // 2]
        chosen.append(pick)
        spare.remove(pick)
    fine = [t for t in candidates if t not in chosen and not coarse(t)]
    chosen += fine[::-1][: max(0, target - len(chosen))]
    chosen.sort(key=candidates.index)
    return chosen[len(chosen) - target :] if len(chosen) > target else chosen


def feature_output(model: keras.Model):
    """The backbone's last feature map: the model output if it is 4-D, else
    the input of the first global pooling or flattening on the main path (so
    a backbone built with its classification top can be used)."""
    _check_functional(model)
    if len(model.outputs[0].shape) == 4:
        return model.outputs[0]
    feature = None
    for tensor in _analyse(model).main_path:
        layer = graph_lib.producer(tensor)
        if len(tensor.shape) != 4 or isinstance(layer, _GLOBAL_LAYERS):
            break
        feature = tensor
    if feature is None:
        raise ValueError(
            f"Could not find a 4-D feature map in the backbone {model.name!r}."
            " Rep-Net needs a convolutional backbone whose layers keep the "
            "(batch, height, width, channels) layout."
        )
    return feature


def _check_functional(model):
    if not isinstance(model, keras.Model) or not hasattr(
        model, "_nodes_by_depth"
    ):
        raise ValueError(
            "Rep-Net needs a functional keras.Model (built from keras.Input "
            "and layer calls, as keras.applications models are). Received: "
            f"{type(model).__name__}. Subclassed models have no graph to "
            "walk: rebuild the backbone with the functional API."
        )
