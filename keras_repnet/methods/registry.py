"""The methods by name: their descriptions, default learning rates and
options, and `build_method()`."""

import keras

from keras_repnet.core.builder import build
from keras_repnet.methods import common
from keras_repnet.methods import fine_tuning
from keras_repnet.methods import mobiletl
from keras_repnet.methods import reprogramming
from keras_repnet.methods import tinytl

# Rep-Net methods -> the `build()` arguments that make them.
REPNET_METHODS = {
    "repnet": {"connect": "up"},
    "repnet-no-shifts": {"connect": "up", "backbone_shifts": False},
    "repnet-mask": {"connect": "up"},
    "repnet-dual": {"connect": "dual"},
    "repnet-down": {"connect": "down"},
    "repnet-none": {"connect": "none"},
    "repnet-all": {"connect": "all"},
}
# Rep-Net methods -> `build()` arguments they default to, which a caller may
# change (e.g. `build_method("repnet-mask", ..., backbone_mask="channel")`).
REPNET_DEFAULTS = {"repnet-mask": {"backbone_mask": "kernel"}}
METHODS = (
    *REPNET_METHODS,
    "ft-full",
    "ft-last",
    "bn-only",
    "tinytl",
    "adv-rep",
    "adv-rep-last",
    "mobiletl",
)

# Peak learning rates (cosine decay to zero) of the "side" variables (every
# trainable variable outside the head) and of the head `repnet_head`.
# Rep-Net's side network learns from scratch and takes 10x the head's rate,
# as in the reference code (the reverse, 1e-3 / 1e-2, lost 4-6 points on
# CIFAR-10 in `bench/accuracy.py`'s runs: the head learned what the side
# network should); full fine-tuning uses the usual 10x lower rate for
# pretrained weights; the input perturbation of adversarial reprogramming
# one of 1e-2 (it is one additive tensor in the preprocessed input range).
REPNET_LEARNING_RATES = (1e-2, 1e-3)
_LEARNING_RATES = {
    **{name: REPNET_LEARNING_RATES for name in REPNET_METHODS},
    "ft-full": (1e-4, 1e-3),
    "adv-rep": (1e-2, 1e-2),
    "adv-rep-last": (1e-2, 1e-2),
}
_DEFAULT_LEARNING_RATES = (1e-3, 1e-2)

DESCRIPTIONS = {
    "repnet": "Rep-Net: the side network gets x + p at each tap ('up'), "
    "backbone batch-norm shifts",
    "repnet-no-shifts": "Rep-Net ablation: no backbone shifts",
    "repnet-mask": "Rep-Net + a learned binary mask per backbone kernel "
    "(the paper's Table 4)",
    "repnet-dual": "Rep-Net ablation: both networks get x + p (the paper's)",
    "repnet-down": "Rep-Net ablation: only the backbone gets x + p",
    "repnet-none": "Rep-Net ablation: no exchange, side joins before the head",
    "repnet-all": "Rep-Net ablation: dual connectors at every block boundary",
    "ft-full": "fine-tune every weight (batch norms in training mode)",
    "ft-last": "train the classifier on frozen pooled features",
    "bn-only": "train batch-norm scales and shifts + classifier",
    "tinytl": "TinyTL: lite residual modules + shifts + classifier",
    "adv-rep": "adversarial reprogramming: input perturbation, fixed top",
    "adv-rep-last": "input perturbation + retrained classifier",
    "mobiletl": "MobileTL: top-block shifts, sign-mask backward + classifier",
}

# Number of classes of the fixed source classifier of `adv-rep` when the
# backbone comes without its ImageNet top.


def default_learning_rates(name: str) -> dict:
    """Peak learning rates of a method, as `make_optimizer` arguments.

    Args:
        name: str. A name from `METHODS`.

    Returns:
        `{"side_learning_rate": float, "head_learning_rate": float}`: the
        rate of every trainable variable outside the head, and of the head
        (`repnet_head`). Methods without a head ignore the second.

    Example:

    >>> optimizer = keras_repnet.apps.training.make_optimizer(
    ...     **default_learning_rates("ft-full"), total_steps=1000)
    """
    _check_name(name)
    side, head = _LEARNING_RATES.get(name, _DEFAULT_LEARNING_RATES)
    return {"side_learning_rate": side, "head_learning_rate": head}


def build_method(
    name: str,
    backbone,
    num_classes: int,
    *,
    input_shape: tuple | None = None,
    weights: str | None = "imagenet",
    **kwargs,
) -> keras.Model:
    """Builds a transfer-learning method on a frozen backbone by name.

    Args:
        name: str. One of `METHODS` (see the module docstring).
        backbone: a `keras.applications` constructor, its name, or a built
            functional `keras.Model` (see `keras_repnet.build`). A built
            model's layers are shared and their `trainable` flags changed.
        num_classes: int. Classes of the new task (at least 2).
        input_shape: tuple. `(H, W, 3)`. Defaults to `(224, 224, 3)`.
        weights: `"imagenet"`, `None` or a weights file for the backbone.
            Defaults to `"imagenet"`.
        **kwargs: method options. Rep-Net methods take the arguments of
            `keras_repnet.build` except those the name sets (`repnet-mask`
            defaults to `backbone_mask="kernel"`); every method
            with a head takes `dropout` (default 0.2); `tinytl` takes `kernel_size`
            (default 5) and `groups` (default 2); `mobiletl` takes
            `top_blocks` (default 5); `adv-rep` takes `source_top`
            (`"auto"`, `"backbone"` or `"random"`, default `"auto"`).

    Returns:
        An uncompiled `keras_repnet.RepNetModel` (a functional
        `keras.Model` with the lean backward pass) mapping images,
        preprocessed for the backbone, to logits.

    Example:

    >>> model = build_method("tinytl", "MobileNetV2", 5,
    ...                      input_shape=(128, 128, 3))
    """
    _check_name(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            "`num_classes` must be an int of at least 2. Received: "
            f"num_classes={num_classes!r}"
        )
    if name in REPNET_METHODS:
        fixed = sorted(set(REPNET_METHODS[name]) & set(kwargs))
        if fixed:
            raise ValueError(
                f"Method {name!r} sets {fixed} itself "
                f"({REPNET_METHODS[name]}). Received: "
                f"{ {key: kwargs[key] for key in fixed} }. Pick the method "
                f"with the setting you want: {', '.join(REPNET_METHODS)}."
            )
        kwargs = {**REPNET_DEFAULTS.get(name, {}), **kwargs}
        if name == "repnet-mask" and kwargs["backbone_mask"] is None:
            raise ValueError(
                "`repnet-mask` needs a mask granularity: backbone_mask="
                '"weight", "kernel" or "channel". Received: backbone_mask=None '
                '(that is the method "repnet").'
            )
        model_name = kwargs.pop("name", None) or common.model_name(name, backbone)
        return build(
            backbone,
            num_classes,
            input_shape=input_shape,
            weights=weights,
            name=model_name,
            **REPNET_METHODS[name],
            **kwargs,
        )
    options = _options(name, kwargs)
    return _BUILDERS[name](
        backbone, num_classes, input_shape, weights, **options
    )


def _check_name(name):
    if name not in METHODS:
        raise ValueError(
            f"Unknown method {name!r}. Use one of: {', '.join(METHODS)}."
        )


_OPTIONS = {
    "ft-full": {"dropout": 0.2},
    "ft-last": {"dropout": 0.2},
    "bn-only": {"dropout": 0.2},
    "tinytl": {"dropout": 0.2, "kernel_size": 5, "groups": 2},
    "adv-rep": {"source_top": "auto"},
    "adv-rep-last": {"dropout": 0.2},
    "mobiletl": {"dropout": 0.2, "top_blocks": 5},
}


def _options(name, kwargs):
    defaults = _OPTIONS[name]
    unknown = sorted(set(kwargs) - set(defaults) - {"name"})
    if unknown:
        raise ValueError(
            f"Method {name!r} has no option {unknown}. Its options are "
            f"{sorted(defaults) + ['name']}."
        )
    return {**defaults, **kwargs}


_BUILDERS = {
    "ft-full": fine_tuning.ft_full,
    "ft-last": fine_tuning.ft_last,
    "bn-only": fine_tuning.bn_only,
    "tinytl": tinytl.tinytl,
    "adv-rep": reprogramming.adv_rep,
    "adv-rep-last": reprogramming.adv_rep_last,
    "mobiletl": mobiletl.mobiletl,
}
