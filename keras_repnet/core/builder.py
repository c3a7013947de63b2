"""`build()`: a frozen backbone plus a trainable Rep-Net, as one Keras model."""

import functools

import keras

from keras_repnet.core import backbones
from keras_repnet.core import flat_graph
from keras_repnet.core import heads
from keras_repnet.core import masks
from keras_repnet.core import shift_rule
from keras_repnet.core import taps as taps_lib
from keras_repnet.core.layers import ActivationConnector
from keras_repnet.core.layers import QuantizedGateProduct
from keras_repnet.core.layers import RepNetModule
from keras_repnet.core.layers import SignGradient
from keras_repnet.core.layers import StopGradient
from keras_repnet.core.layers import shift_after
from keras_repnet.core.models import RepNetModel
from keras_repnet.core.recipe import REPNET
from keras_repnet.core.recipe import Recipe
from keras_repnet.core.shift_rule import APPROXIMATE_SHIFTS
from keras_repnet.core.shift_rule import SHIFT_MODES

CONNECT_MODES = ("up", "dual", "down", "none", "all")
HEAD_NAME = heads.HEAD_NAME
# With `side_width="auto"`, the side network has at most this share of the
# frozen backbone's parameters.
SIDE_PARAMETER_BUDGET = 0.1
# Narrowest module a width rounds to (unless its tap is narrower).
_MIN_HIDDEN = 8


def build(
    backbone,
    num_classes: int,
    *,
    input_shape: tuple | None = None,
    weights: str | None = "imagenet",
    connect: str = "up",
    taps: list | None = None,
    num_modules: int | None = None,
    side_kernel_size: int = 3,
    side_groups: int = 1,
    side_width: float | str = "auto",
    side_downscale: int = 2,
    side_norm_momentum: float | None = None,
    side_top_channels: int | str = "auto",
    backbone_shifts: bool | str = "auto",
    backbone_mask: str | None = None,
    mask_initial_score: float = masks.DEFAULT_INITIAL_SCORE,
    mask_by_magnitude: bool = True,
    dropout: float = 0.2,
    name: str | None = None,
    recipe: Recipe | None = None,
) -> keras.Model:
    """Builds a Rep-Net classifier on a frozen backbone.

    A Rep-Net module is placed at every tap (by default one per resolution
    level from an output stride of 4 on, at least 4, see `select_taps`). The
    side path is sequential and starts from the input image: module `i`
    reads the previous connector's output and produces `p_i` at the tap's
    shape; the connector adds it to the backbone feature `x_i`. The
    modules, the head and (where their backward costs only masks, see
    `backbone_shifts`) a shift after each backbone batch norm train; the
    backbone layers get `trainable=False`, so their weights stay and their
    batch norms stay in inference mode. A built backbone passed in shares
    its layers with the new model and is frozen in place.

    The default, `connect="up"`, departs from the paper's proposed "dual"
    connector (its Table 1 ablation found dual best): the side network reads
    `x_i + p_i` at every tap, the backbone's weights and connections are
    unchanged, and the head reads both networks' pooled features. In this
    project's accuracy protocol (`bench/accuracy.py`, docs/results.md) "up"
    was the more accurate on every far-domain set measured. The backbone
    shifts, as in the reference code, let the frozen features adapt: they
    cost the backbone's ReLU masks in memory and gained the most accuracy
    of anything tried.

    The defaults follow one rule (`keras_repnet.core.shift_rule`). Where
    the shifts' backward costs only masks (MobileNetV2, ResNet), one module
    per level, side norms at Keras' momentum 0.99 and exact shifts at the
    side network's rate. Where it would keep float activations (hard-swish
    and squeeze-excite: MobileNetV3), six modules, side norms at 0.9, the
    shifts with the `"sign-int8"` backward and, unless the recipe sets
    one, at their own rate of 3e-3 (`model.recipe.shift_learning_rate`).
    Arguments given explicitly win.

    Args:
        backbone: a `keras.applications` constructor (e.g.
            `keras.applications.MobileNetV3Small`), its name as a string, or a
            built functional `keras.Model`.
        num_classes: int. Number of classes of the new task (at least 2).
        input_shape: tuple. `(H, W, 3)`. Defaults to the recipe's image
            size (224 px for Rep-Net's), or the shape of a built backbone.
        weights: `"imagenet"`, `None` or a path to a weights file, passed to
            the `keras.applications` constructor. Defaults to `"imagenet"`.
        connect: str. How features are exchanged at each connector:
            `"up"` (only the side network gets the sum `x_i + p_i`; the head
            reads both networks), `"dual"` (the paper's proposed Rep-Net:
            the sum continues in both networks), `"down"` (only the backbone
            gets the sum), `"none"` (no exchange: the side features join the
            backbone's only before the head) or `"all"` (dual, with a
            connector at every block boundary). Defaults to `"up"`.
        taps: list. Backbone layer names (or `Tap`s) to connect instead of
            the automatic choice. Defaults to `None`.
        num_modules: int. How many modules the automatic choice aims for
            (e.g. 6, as in the paper; see `select_taps`). Defaults to `None`:
            one per level from stride 4 on, at least 4, or 6 on backbones
            whose shifts need an approximate backward (the rule above).
        side_kernel_size: int. Kernel size of the modules' first convolution.
            Defaults to 3.
        side_groups: int. Groups of the modules' first convolution. Defaults
            to 1 (see `RepNetModule`).
        side_width: float or `"auto"`. Hidden channels of each module
            relative to its connector's channels. `"auto"` takes 1.0, or the
            largest width that keeps the side network within
            `SIDE_PARAMETER_BUDGET` (10%) of the frozen backbone's parameters
            (e.g. ResNet50: 0.08). Defaults to `"auto"`.
        side_downscale: int. The modules compute at `1/side_downscale` of
            their tap's resolution and are upsampled bilinearly to it, as in
            the reference code (less memory and time; see
            `RepNetModule`). Defaults to 2.
        side_norm_momentum: float. Momentum of the modules' batch-norm
            statistics. Defaults to `None`: Keras' 0.99, or 0.9 (PyTorch's
            0.1, as the reference code) on backbones whose shifts need an
            approximate backward (the rule above).
        side_top_channels: int or `"auto"`. Where the head reads the side
            network (`connect` `"up"` or `"none"`), a 1x1 convolution to
            this many channels, batch norm and ReLU on its last feature
            before the head pools it (`SideTop`, its norm at
            `side_norm_momentum`), as the backbone's own last convolution
            does for its features; 0 for none. `"auto"` widens the side
            network's last feature to the backbone's output channels where
            it is narrower (e.g. MobileNetV3Small: 96 to 576; ResNet50's is
            as wide: none). Not counted in `side_width="auto"`'s budget.
            Defaults to `"auto"`.
        backbone_shifts: bool or str. Train a per-channel shift after
            each of the backbone's batch norms (`ChannelBias`: the norms
            stay frozen, in inference mode), as the reference code's
            "+bias". The backward pass then crosses the backbone. `"auto"`
            trains them exactly where that costs only masks: backbones
            whose nonlinearities are all ReLU-like and that multiply no two
            activations (`shift_rule.shifts_cost_masks_only`; e.g.
            MobileNetV2, ResNet), and with `"sign-int8"` elsewhere
            (MobileNetV3, whose hard-swish and squeeze-excite would keep
            float activations).
            `True` trains them with the exact backward, and four modes
            approximate it to keep less:
            `"masks"` (the other activations pass the gradient by the
            sign of their input, `SignGradient`, as MobileTL does, and
            squeeze-excite gates are held constant, `StopGradient`),
            `"sign"` (the sign rule only), `"held-gates"` (held gates
            only) and `"sign-int8"` (the sign rule, and the gates'
            gradients read an int8 copy of the feature they scale,
            `QuantizedGateProduct`); on a backbone whose shifts cost masks
            only they are exact. Defaults to `"auto"`.
        backbone_mask: str. Learn a binary mask on the frozen backbone's
            `Conv2D`, `DepthwiseConv2D` and `Dense` weights (the paper's
            Table 4, with Piggyback/KSM masks; `keras_repnet.core.masks`),
            one trainable score per `"weight"`, `"kernel"` or `"channel"`.
            The frozen weights never change; the masks' gradients keep the
            backbone's activations in memory. Defaults to `None` (no mask).
        mask_initial_score: float. The mask scores' start (weights are
            kept while their score is above 0): lower drops more. Defaults
            to 0.05 (with the recipe's warm-up of the scores' rate; see
            docs/results.md for what other starts cost).
        mask_by_magnitude: bool. Scale each score's start by the mean
            magnitude of the weights it covers over its layer's, so that
            small weights are dropped first. Defaults to `True`.
        dropout: float. Dropout rate before the head. Defaults to 0.2.
        name: str. Model name. Defaults to `"repnet_<backbone>"`.
        recipe: `keras_repnet.Recipe`. How the model trains, kept as
            `model.recipe` and saved with it. Defaults to Rep-Net's.

    Returns:
        An uncompiled `keras_repnet.RepNetModel` mapping images to class
        logits.

    Example:

    ```python
    model = keras_repnet.build(
        keras.applications.MobileNetV3Small, num_classes=5
    )
    recipe = model.recipe
    recipe.compile(model, total_steps=recipe.epochs * len(train_ds))
    model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs)
    ```
    """
    _check_arguments(
        num_classes, connect, side_width, side_downscale, side_norm_momentum,
        backbone_shifts, dropout, side_top_channels,
    )
    if backbone_mask not in (None, *masks.GRANULARITIES):
        raise ValueError(
            f"`backbone_mask` must be None or one of {masks.GRANULARITIES}. "
            f"Received: backbone_mask={backbone_mask!r}"
        )
    if input_shape is None and recipe is not None and not isinstance(
        backbone, keras.Model
    ):
        input_shape = (recipe.image_size, recipe.image_size, 3)
    frozen = backbones.resolve(backbone, input_shape, weights)
    num_modules, side_norm_momentum, backbone_shifts, recipe = (
        shift_rule.resolve(
            frozen, num_modules, side_norm_momentum, backbone_shifts,
            recipe or REPNET,
        )
    )
    plan = _resolve_taps(frozen, taps, connect, num_modules)
    if side_width == "auto":
        side_width = auto_side_width(
            plan, frozen.count_params(), side_kernel_size
        )
    frozen.trainable = False

    # === Functional Model ===
    image = heads.new_input(frozen)
    side = _SidePath(
        image,
        plan,
        connect,
        side_kernel_size,
        side_groups,
        side_width,
        side_downscale,
        side_norm_momentum,
        backbone_shifts,
        backbone_mask and functools.partial(
            masks.masked_copy,
            granularity=backbone_mask,
            initial_score=mask_initial_score,
            by_magnitude=mask_by_magnitude,
        ),
    )
    features = heads.replay(frozen, image, side.call_layer)
    side.check_complete()
    side_features = side.features if connect in ("none", "up") else None
    logits = heads.classifier_head(
        features,
        num_classes,
        dropout,
        side_features=side_features,
        side_top=heads.make_side_top(
            features, side_features, side_top_channels, side_norm_momentum
        ),
    )
    name = name or f"repnet_{backbones.backbone_name(backbone).lower()}"
    return RepNetModel(
        image,
        logits,
        name=name,
        backbone=backbones.backbone_name(backbone),
        recipe=recipe,
    )


def auto_side_width(plan, frozen_params, kernel_size, budget=None) -> float:
    """The largest side width <= 1 whose modules have at most `budget`
    (default `SIDE_PARAMETER_BUDGET`) times `frozen_params` trainable
    parameters, counted as `RepNetModule` makes them (ungrouped, so an upper
    bound with `side_groups`)."""
    budget = SIDE_PARAMETER_BUDGET if budget is None else budget
    fixed, per_width = 0, 0
    inputs = [3] + [tap.channels for tap in plan[:-1]]
    for channels_in, tap in zip(inputs, plan):
        out = tap.channels
        # conv k*k*in*h + project h*out + two batch norms' scale and shift.
        per_width += (kernel_size**2 * channels_in + out + 2) * out
        fixed += 2 * out
    width = (budget * frozen_params - fixed) / per_width
    return float(min(1.0, max(width, 1e-3)))


def _check_arguments(
    num_classes, connect, side_width, side_downscale, side_norm_momentum,
    backbone_shifts, dropout, side_top_channels,
):
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            "`num_classes` must be an int of at least 2. Received: "
            f"num_classes={num_classes!r}"
        )
    if connect not in CONNECT_MODES:
        raise ValueError(
            f"`connect` must be one of {CONNECT_MODES}. Received: "
            f"connect={connect!r}"
        )
    if side_width != "auto" and (
        isinstance(side_width, str) or side_width <= 0
    ):
        raise ValueError(
            '`side_width` must be positive or "auto". Received: '
            f"side_width={side_width!r}"
        )
    if not isinstance(side_downscale, int) or side_downscale < 1:
        raise ValueError(
            "`side_downscale` must be a positive int. Received: "
            f"side_downscale={side_downscale!r}"
        )
    if not (isinstance(backbone_shifts, bool) or backbone_shifts in SHIFT_MODES):
        raise ValueError(
            f"`backbone_shifts` must be a bool or one of {SHIFT_MODES}. "
            f"Received: backbone_shifts={backbone_shifts!r}"
        )
    if side_norm_momentum is not None and not 0 <= side_norm_momentum < 1:
        raise ValueError(
            "`side_norm_momentum` must be in [0, 1). Received: "
            f"side_norm_momentum={side_norm_momentum!r}"
        )
    if side_top_channels != "auto" and (
        isinstance(side_top_channels, bool)
        or not isinstance(side_top_channels, int)
        or side_top_channels < 0
    ):
        raise ValueError(
            '`side_top_channels` must be an int of at least 0 or "auto". '
            f"Received: side_top_channels={side_top_channels!r}"
        )
    if side_top_channels not in (0, "auto") and connect not in ("up", "none"):
        raise ValueError(
            "`side_top_channels` needs a head that reads the side network "
            '(connect="up" or "none"). Received: '
            f"side_top_channels={side_top_channels}, connect={connect!r}"
        )
    if not 0 <= dropout < 1:
        raise ValueError(
            f"`dropout` must be in [0, 1). Received: dropout={dropout}"
        )


def _resolve_taps(frozen, taps, connect, num_modules):
    if taps is None:
        if connect == "all":
            return taps_lib.find_taps(frozen, mode="all")
        return taps_lib.select_taps(frozen, num_modules)
    names = [t.layer_name if isinstance(t, taps_lib.Tap) else t for t in taps]
    candidates = taps_lib.find_taps(frozen, mode="all")
    known = {t.layer_name for t in candidates}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"Cannot connect at {unknown}: a tap must be a block boundary on "
            f"the backbone's main path. Candidates: {sorted(known)}."
        )
    return [t for t in candidates if t.layer_name in names]


def _approximate_backward(layer, args, kwargs, sign_activations, gates):
    """Calls a backbone layer so that its backward pass keeps less: with
    `sign_activations`, an activation whose exact gradient reads its float
    input gets the sign rule (`SignGradient`); a squeeze-excite product
    `x * gate` holds the per-channel gate constant with `gates="held"`
    (`StopGradient`; with the sign rule: masks only) and keeps `x` in int8
    for the gate's gradient with `gates="int8"` (`QuantizedGateProduct`)."""
    if sign_activations and isinstance(layer, keras.layers.Activation) and (
        flat_graph.activation_name(layer.activation)
        not in (None, "linear", *flat_graph.PIECEWISE_LINEAR)
    ):
        return SignGradient(layer.activation, name=f"{layer.name}_sign")(
            *args, **kwargs
        )
    if (
        gates != "exact"
        and isinstance(layer, keras.layers.Multiply)
        and len(args[0]) == 2
    ):
        first, second = args[0]
        is_gate = [t.shape[1:3] == (1, 1) for t in (first, second)]
        if is_gate.count(True) == 1:
            index = is_gate.index(True)
            if gates == "int8":
                x, gate = args[0][1 - index], args[0][index]
                return QuantizedGateProduct(name=f"{layer.name}_int8_gate")(
                    [x, gate]
                )
            held = StopGradient(name=f"{layer.name}_held_gate")(args[0][index])
            inputs = [first, held] if index == 1 else [held, second]
            return layer(inputs, *args[1:], **kwargs)
    return layer(*args, **kwargs)


class _SidePath:
    """Inserts modules and connectors while `clone_model` replays the
    backbone, layer by layer, in topological order."""

    def __init__(
        self, image, plan, connect, kernel_size, groups, width, downscale,
        norm_momentum, shifts,
        masked_copy=None,
    ):
        self.plan = {tap.layer_name: (i, tap) for i, tap in enumerate(plan)}
        self.connect = connect
        self.kernel_size, self.groups, self.width = kernel_size, groups, width
        self.downscale = downscale
        self.norm_momentum = norm_momentum
        self.shifts = shifts
        self.masked_copy = masked_copy  # Layer -> its masked copy or None.
        self.features = image  # What the next side module reads.
        self.connected = 0

    def call_layer(self, layer, *args, **kwargs):
        if self.masked_copy:
            layer = self.masked_copy(layer) or layer
        if self.shifts in APPROXIMATE_SHIFTS:
            outputs = _approximate_backward(
                layer, args, kwargs, *APPROXIMATE_SHIFTS[self.shifts]
            )
        else:
            outputs = layer(*args, **kwargs)
        if self.shifts and isinstance(layer, keras.layers.BatchNormalization):
            outputs = shift_after(layer.name)(outputs)
        if layer.name not in self.plan:
            return outputs
        index, tap = self.plan[layer.name]
        side = RepNetModule(
            filters=tap.channels,
            output_size=tap.shape[:2],
            hidden_filters=max(
                min(_MIN_HIDDEN, tap.channels), int(tap.channels * self.width)
            ),
            kernel_size=self.kernel_size,
            groups=self.groups,
            downscale=self.downscale,
            norm_momentum=self.norm_momentum,
            name=f"repnet_module_{index}",
        )(self.features)
        self.connected += 1
        if self.connect == "none":
            self.features = side
            return outputs
        joined = ActivationConnector(name=f"repnet_connector_{index}")(
            [outputs, side]
        )
        self.features = side if self.connect == "down" else joined
        return outputs if self.connect == "up" else joined

    def check_complete(self):
        if self.connected != len(self.plan):
            raise ValueError(
                f"Connected {self.connected} of {len(self.plan)} taps: a tap "
                "layer is shared or not on the path to the output. Received "
                f"taps: {sorted(self.plan)}."
            )
