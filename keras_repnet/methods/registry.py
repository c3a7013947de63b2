"""The methods by name, one `Method` record each, and `build_method()`."""

import dataclasses
from typing import Callable

import keras

from keras_repnet.core import recipe as recipe_lib
from keras_repnet.core.builder import build
from keras_repnet.core.recipe import Recipe
from keras_repnet.methods import base
from keras_repnet.methods import fine_tuning
from keras_repnet.methods import mobiletl
from keras_repnet.methods import reprogramming
from keras_repnet.methods import tinytl


@dataclasses.dataclass(frozen=True)
class Method:
    """One transfer-learning method.

    Args:
        name: str. Its name, e.g. `"tinytl"`.
        description: str. One line: what trains.
        builder: callable `(backbone, num_classes, input_shape, weights,
            **options)` returning the model, or `None` for a Rep-Net
            variant, which `keras_repnet.build` makes from `fixed`.
        options: dict. The options a caller may pass and their defaults.
        fixed: dict. `build()` arguments the name sets (Rep-Net variants).
        recipe: `Recipe`. How it trains (Rep-Net's unless said).
    """

    name: str
    description: str
    builder: Callable | None = None
    options: dict = dataclasses.field(default_factory=dict)
    fixed: dict = dataclasses.field(default_factory=dict)
    recipe: Recipe = recipe_lib.REPNET

    @property
    def is_repnet(self) -> bool:
        return self.builder is None


# Baselines train pretrained weights or a head from scratch: the head takes
# the higher rate. Full fine-tuning uses the usual 10x lower rate for
# pretrained weights; the input perturbation of adversarial reprogramming
# one of 1e-2 (one additive tensor in the preprocessed input range).
_BASELINE = recipe_lib.REPNET.replace(
    side_learning_rate=1e-3, head_learning_rate=1e-2
)
_HEAD = {"dropout": 0.2}
# Methods that train batch norms: see `fine_tuning`.
_NORMS = {**_HEAD, "bn_momentum": None, "bn_inference": False}

# Rep-Net and its ablations: name -> (description, the `build()` arguments
# the name sets).
_REPNET_VARIANTS = {
    "repnet": (
        "Rep-Net: the side network gets x + p at each tap ('up'), backbone "
        "batch-norm shifts",
        {"connect": "up"},
    ),
    "repnet-no-shifts": (
        "Rep-Net ablation: no backbone shifts",
        {"connect": "up", "backbone_shifts": False},
    ),
    "repnet-mask": (
        "Rep-Net + a learned binary mask per backbone kernel (the paper's "
        "Table 4)",
        {"connect": "up"},
    ),
    "repnet-dual": (
        "Rep-Net ablation: both networks get x + p (the paper's)",
        {"connect": "dual"},
    ),
    "repnet-down": (
        "Rep-Net ablation: only the backbone gets x + p", {"connect": "down"}
    ),
    "repnet-none": (
        "Rep-Net ablation: no exchange, side joins before the head",
        {"connect": "none"},
    ),
    "repnet-all": (
        "Rep-Net ablation: dual connectors at every block boundary",
        {"connect": "all"},
    ),
}
# Options a Rep-Net variant defaults to, which a caller may change.
_REPNET_OPTIONS = {"repnet-mask": {"backbone_mask": "kernel"}}

_ALL = (
    *(
        Method(name, description, options=_REPNET_OPTIONS.get(name, {}),
               fixed=fixed)
        for name, (description, fixed) in _REPNET_VARIANTS.items()
    ),
    Method(
        "ft-full",
        "fine-tune every weight (batch norms in training mode)",
        fine_tuning.ft_full,
        _NORMS,
        recipe=_BASELINE.replace(side_learning_rate=1e-4, head_learning_rate=1e-3),
    ),
    Method(
        "ft-last",
        "train the classifier on frozen pooled features",
        fine_tuning.ft_last,
        _HEAD,
        recipe=_BASELINE,
    ),
    Method(
        "bn-only",
        "train batch-norm scales and shifts + classifier",
        fine_tuning.bn_only,
        _NORMS,
        recipe=_BASELINE,
    ),
    Method(
        "tinytl",
        "TinyTL: lite residual modules + shifts + classifier",
        tinytl.tinytl,
        {**_HEAD, "kernel_size": 5, "groups": 2},
        recipe=_BASELINE,
    ),
    Method(
        "adv-rep",
        "adversarial reprogramming: input perturbation, fixed top",
        reprogramming.adv_rep,
        {"source_top": "auto"},
        recipe=_BASELINE.replace(side_learning_rate=1e-2),
    ),
    Method(
        "adv-rep-last",
        "input perturbation + retrained classifier",
        reprogramming.adv_rep_last,
        _HEAD,
        recipe=_BASELINE.replace(side_learning_rate=1e-2),
    ),
    Method(
        "mobiletl",
        "MobileTL: top-block shifts, sign-mask backward + classifier",
        mobiletl.mobiletl,
        {**_HEAD, "top_blocks": 5},
        recipe=_BASELINE,
    ),
)
METHODS = {method.name: method for method in _ALL}


def get_method(name: str) -> Method:
    """The `Method` record of `name`."""
    if name not in METHODS:
        raise ValueError(
            f"Unknown method {name!r}. Use one of: {', '.join(METHODS)}."
        )
    return METHODS[name]


def recipe_for(name: str) -> Recipe:
    """The recipe a method trains with: its peak rates, schedule, loss and
    run defaults.

    Example:

    >>> recipe_for("ft-full").side_learning_rate
    0.0001
    """
    return get_method(name).recipe


def build_method(
    name: str,
    backbone,
    num_classes: int,
    *,
    input_shape: tuple | None = None,
    weights: str | None = "imagenet",
    recipe: Recipe | None = None,
    **kwargs,
) -> keras.Model:
    """Builds a transfer-learning method on a frozen backbone by name.

    Args:
        name: str. One of `METHODS` (see the module docstring).
        backbone: a `keras.applications` constructor, its name, or a built
            functional `keras.Model` (see `keras_repnet.build`). A built
            model's layers are shared and their `trainable` flags changed.
        num_classes: int. Classes of the new task (at least 2).
        input_shape: tuple. `(H, W, 3)`. Defaults to the recipe's image
            size.
        weights: `"imagenet"`, `None` or a weights file for the backbone.
            Defaults to `"imagenet"`.
        recipe: `Recipe`. How the model trains, kept as `model.recipe`.
            Defaults to the method's (`recipe_for(name)`).
        **kwargs: method options. Rep-Net methods take the arguments of
            `keras_repnet.build` except those the name sets; the others
            take their record's `options` (e.g. `dropout`, tinytl's
            `kernel_size`).

    Returns:
        An uncompiled `keras_repnet.RepNetModel` (a functional
        `keras.Model` with the lean backward pass) mapping images,
        preprocessed for the backbone, to logits.

    Example:

    >>> model = build_method("tinytl", "MobileNetV2", 5,
    ...                      input_shape=(96, 96, 3), weights=None)
    >>> model.recipe.head_learning_rate
    0.01
    """
    method = get_method(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            "`num_classes` must be an int of at least 2. Received: "
            f"num_classes={num_classes!r}"
        )
    model_name = kwargs.pop("name", None) or base.model_name(name, backbone)
    recipe = recipe or method.recipe
    if input_shape is None and not isinstance(backbone, keras.Model):
        input_shape = (recipe.image_size, recipe.image_size, 3)
    if method.is_repnet:
        # `build` resolves what the recipe leaves to the backbone.
        return _build_repnet(method, backbone, num_classes, input_shape,
                             weights, model_name, recipe, kwargs)
    unknown = sorted(set(kwargs) - set(method.options))
    if unknown:
        raise ValueError(
            f"Method {name!r} has no option {unknown}. Its options are "
            f"{sorted(method.options) + ['name']}."
        )
    model = method.builder(
        backbone, num_classes, input_shape, weights,
        **{**method.options, **kwargs}, name=model_name,
    )
    model.recipe = recipe
    return model


def _build_repnet(method, backbone, num_classes, input_shape, weights, name,
                  recipe, kwargs):
    fixed = sorted(set(method.fixed) & set(kwargs))
    if fixed:
        raise ValueError(
            f"Method {method.name!r} sets {fixed} itself ({method.fixed}). "
            f"Received: { {key: kwargs[key] for key in fixed} }. Pick the "
            "method with the setting you want: "
            f"{', '.join(n for n, m in METHODS.items() if m.is_repnet)}."
        )
    kwargs = {**method.options, **kwargs}
    if method.name == "repnet-mask" and kwargs["backbone_mask"] is None:
        raise ValueError(
            "`repnet-mask` needs a mask granularity: backbone_mask="
            '"weight", "kernel" or "channel". Received: backbone_mask=None '
            '(that is the method "repnet").'
        )
    return build(
        backbone,
        num_classes,
        input_shape=input_shape,
        weights=weights,
        name=name,
        recipe=recipe,
        **method.fixed,
        **kwargs,
    )
