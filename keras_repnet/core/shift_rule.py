"""`build`'s rule: which backward the backbone shifts take, and the
defaults that follow from it.

Where every nonlinearity of the backbone is ReLU-like and no two
activations are multiplied (`shifts_cost_masks_only`: MobileNetV2, ResNet),
the shifts' exact backward keeps masks only, and `MASKS_ONLY_DEFAULTS`
hold. Elsewhere (hard-swish, swish, squeeze-excite: MobileNetV3,
EfficientNet) it would keep float activations, and
`APPROXIMATE_SHIFT_DEFAULTS` hold: what MobileNetV3Small's validation
splits picked in the accuracy protocol (docs/results.md).

Example:

>>> import keras
>>> backbone = keras.applications.MobileNetV2(
...     weights=None, include_top=False, input_shape=(32, 32, 3))
>>> resolve(backbone, None, None, "auto", Recipe())[1:3]
(0.99, True)
"""

import keras

from keras_repnet.core import flat_graph
from keras_repnet.core.recipe import Recipe

# `backbone_shifts` modes whose backward approximates the backbone's:
# mode -> (activations by the sign rule, squeeze-excite gates: "exact",
# "held" constant or their gradient from an "int8" copy of the feature).
APPROXIMATE_SHIFTS = {
    "masks": (True, "held"),
    "sign": (True, "exact"),
    "held-gates": (False, "held"),
    "sign-int8": (True, "int8"),
}
# `backbone_shifts` beside True and False (see `build`).
SHIFT_MODES = ("auto", *APPROXIMATE_SHIFTS)
# One module per level (at least 4), the side norms at Keras' momentum,
# exact shifts at the side's rate.
MASKS_ONLY_DEFAULTS = {
    "num_modules": None,
    "side_norm_momentum": 0.99,
    "backbone_shifts": True,
    "shift_learning_rate": None,
}
APPROXIMATE_SHIFT_DEFAULTS = {
    "num_modules": 6,
    "side_norm_momentum": 0.9,
    "backbone_shifts": "sign-int8",
    "shift_learning_rate": 3e-3,
}


def shifts_cost_masks_only(backbone: keras.Model) -> bool:
    """Whether training shifts inside `backbone` keeps only masks for the
    backward pass: every nonlinearity is piecewise linear (ReLU, ReLU6,
    leaky ReLU: a mask each under the lean rules) and no layer multiplies
    two activations (as squeeze-excite does), as the memory profiler
    classifies the layers (`keras_repnet.memory`)."""
    for node in flat_graph.Graph.of(backbone).nodes:
        if node.kind == "multiply":
            return False
        if node.kind == "activation" and node.detail not in (
            None,
            "linear",
            *flat_graph.PIECEWISE_LINEAR,
        ):
            return False
    return True


def resolve(
    backbone: keras.Model,
    num_modules,
    side_norm_momentum,
    backbone_shifts,
    recipe: Recipe,
) -> tuple:
    """`build`'s arguments left to the rule (`None`, `"auto"`, a recipe
    without a shift rate), resolved for `backbone`: `(num_modules,
    side_norm_momentum, backbone_shifts, recipe)`. An approximate mode on
    a backbone whose shifts cost masks only is exact."""
    masks_only = shifts_cost_masks_only(backbone)
    defaults = MASKS_ONLY_DEFAULTS if masks_only else APPROXIMATE_SHIFT_DEFAULTS
    if num_modules is None:
        num_modules = defaults["num_modules"]
    if side_norm_momentum is None:
        side_norm_momentum = defaults["side_norm_momentum"]
    if backbone_shifts == "auto":
        backbone_shifts = defaults["backbone_shifts"]
    elif backbone_shifts in APPROXIMATE_SHIFTS and masks_only:
        backbone_shifts = True  # Exact, as it keeps masks only anyway.
    rate = defaults["shift_learning_rate"]
    if backbone_shifts and rate is not None and recipe.shift_learning_rate is None:
        recipe = recipe.replace(shift_learning_rate=rate)
    return num_modules, side_norm_momentum, backbone_shifts, recipe
