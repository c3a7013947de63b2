"""Transfer-learning methods compared with Rep-Net, built by name.

Every method is built on the same frozen backbone by one entry point,
`build_method(name, backbone, num_classes)`, and returns an ordinary Keras
model that outputs class logits, trains with `fit` and saves to `.keras`.
A method's new classifier is always the layer `repnet_head` (see
`keras_repnet.builder.HEAD_NAME`), so `keras_repnet.training.make_optimizer`
gives it its own learning rate; every other trainable variable is "side".

| name | what trains | reference |
|---|---|---|
| `repnet` | Rep-Net modules (dual connectors) + head | Rep-Net, the paper |
| `repnet-none/down/up/all` | the same, connector ablations | Rep-Net Table 1 |
| `ft-full` | every weight, batch norms in training mode | "FT-Full" |
| `ft-last` | the head on pooled frozen features | "FT-Last" |
| `bn-only` | batch-norm scales and shifts + head | Frankle et al. 2020 |
| `tinytl` | lite residual modules + shifts + head | TinyTL (Cai 2020) |
| `adv-rep` | an additive input perturbation only | Elsayed et al. 2018 |
| `adv-rep-last` | the perturbation + head | Kloberdanz et al. 2021 |
| `mobiletl` | shifts in the top blocks, sign backward + head | MobileTL (2023) |

Blocks are found structurally with `keras_repnet.find_taps(mode="all")`:
a "block" is the main-path segment between two consecutive block
boundaries. Differences from the original methods are listed in each
builder's docstring.
"""

import math

import keras

from keras_repnet import backbones
from keras_repnet import taps as taps_lib
from keras_repnet.builder import HEAD_NAME
from keras_repnet.builder import build
from keras_repnet.layers import RepNetModule
from keras_repnet.models import RepNetModel

REPNET_METHODS = {
    "repnet": "dual",
    "repnet-none": "none",
    "repnet-down": "down",
    "repnet-up": "up",
    "repnet-all": "all",
}
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
# trainable variable outside the head) and of the head `repnet_head`. They
# follow the project's `train` defaults for Rep-Net (1e-3 / 1e-2); full
# fine-tuning uses the usual 10x lower rate for pretrained weights; the input
# perturbation of adversarial reprogramming a 10x higher one (it is one
# additive tensor in the preprocessed input range, e.g. [-1, 1]).
_LEARNING_RATES = {
    "ft-full": (1e-4, 1e-3),
    "adv-rep": (1e-2, 1e-2),
    "adv-rep-last": (1e-2, 1e-2),
}
_DEFAULT_LEARNING_RATES = (1e-3, 1e-2)

DESCRIPTIONS = {
    "repnet": "Rep-Net, dual connectors at the downsampling taps",
    "repnet-none": "Rep-Net ablation: no exchange, side joins before the head",
    "repnet-down": "Rep-Net ablation: only the backbone gets x + p",
    "repnet-up": "Rep-Net ablation: only the side network gets x + p",
    "repnet-all": "Rep-Net, dual connectors at every block boundary",
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
_RANDOM_TOP_CLASSES = 1000


def default_learning_rates(name: str) -> dict:
    """Peak learning rates of a method, as `make_optimizer` arguments.

    Args:
        name: str. A name from `METHODS`.

    Returns:
        `{"side_learning_rate": float, "head_learning_rate": float}`: the
        rate of every trainable variable outside the head, and of the head
        (`repnet_head`). Methods without a head ignore the second.

    Example:

    >>> optimizer = keras_repnet.training.make_optimizer(
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
            `keras_repnet.build` (except `connect`); every method with a head
            takes `dropout` (default 0.2); `tinytl` takes `kernel_size`
            (default 5) and `groups` (default 2); `mobiletl` takes
            `top_blocks` (default 5); `adv-rep` takes `source_top`
            (`"auto"`, `"backbone"` or `"random"`, default `"auto"`).

    Returns:
        An uncompiled `keras_repnet.models.RepNetModel` (a functional
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
        model_name = kwargs.pop("name", None) or _model_name(name, backbone)
        return build(
            backbone,
            num_classes,
            input_shape=input_shape,
            weights=weights,
            connect=REPNET_METHODS[name],
            name=model_name,
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


def _model_name(method, backbone):
    backbone_name = backbones.backbone_name(backbone).lower()
    return f"{method.replace('-', '_')}_{backbone_name}"


# === Layers ===


@keras.saving.register_keras_serializable(package="keras_repnet")
class ChannelBias(keras.layers.Layer):
    """Adds a trainable per-channel shift, initialised to zero.

    Placed after a frozen (inference-mode) batch norm it trains that norm's
    shift (beta) without touching the frozen layer: `beta + bias`. Its
    gradient is the sum of the incoming gradient, so it stores no activation.
    """

    def build(self, input_shape):
        self.bias = self.add_weight(
            shape=(input_shape[-1],), initializer="zeros", name="bias"
        )

    def call(self, inputs):
        return inputs + keras.ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_repnet")
class InputPerturbation(keras.layers.Layer):
    """Adds a learnable perturbation of the input's shape: `x + p`, with `p`
    initialised to zero (adversarial reprogramming, Rep-Net Eq. 2)."""

    def build(self, input_shape):
        # Called `bias`: an additive input bias, whose gradient needs no
        # stored activation (memory accounting treats biases so).
        self.bias = self.add_weight(
            shape=tuple(input_shape[1:]),
            initializer="zeros",
            name="perturbation",
        )

    def call(self, inputs):
        return inputs + keras.ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_repnet")
class SignBackward(keras.layers.Layer):
    """Passes an activation's output forward and a binary-mask gradient back.

    Called on `[x, y]` with `y = activation(x)`, it returns `y` exactly, but
    the gradient reaches `x` as `dy * (x > 0)` and never reaches `y`'s own
    backward (MobileTL's sign approximation of ReLU6 and hard-swish
    derivatives). Only the boolean mask `x > 0` is needed for the backward
    pass.
    """

    def call(self, inputs):
        x, y = inputs
        passed = keras.ops.where(x > 0, x, keras.ops.zeros_like(x))
        return keras.ops.stop_gradient(y) + (
            passed - keras.ops.stop_gradient(passed)
        )

    def compute_output_shape(self, input_shape):
        return input_shape[1]


@keras.saving.register_keras_serializable(package="keras_repnet")
class LabelMapping(keras.layers.Layer):
    """Maps source-class logits to `num_classes` target logits, many to one.

    Source class `s` belongs to target class `s % num_classes`; the target
    logit is the log-sum-exp of its source logits, so a softmax over the
    target logits equals the summed source probabilities of each group.

    Args:
        num_classes: int. Number of target classes.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def build(self, input_shape):
        if input_shape[-1] < self.num_classes:
            raise ValueError(
                f"Cannot map {input_shape[-1]} source classes onto "
                f"{self.num_classes} target classes: a many-to-one mapping "
                "needs at least as many source classes."
            )

    def call(self, inputs):
        groups = keras.ops.one_hot(
            keras.ops.arange(inputs.shape[-1]) % self.num_classes,
            self.num_classes,
            dtype=inputs.dtype,
        )
        peak = keras.ops.stop_gradient(
            keras.ops.max(inputs, axis=-1, keepdims=True)
        )
        summed = keras.ops.matmul(keras.ops.exp(inputs - peak), groups)
        return keras.ops.log(summed) + peak

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


# === Methods ===


def _head(features, num_classes, dropout):
    features = keras.layers.GlobalAveragePooling2D(name="repnet_pool")(
        features
    )
    if dropout:
        features = keras.layers.Dropout(dropout, name="repnet_dropout")(
            features
        )
    return keras.layers.Dense(num_classes, name=HEAD_NAME)(features)


def _new_input(frozen):
    return keras.Input(
        batch_shape=frozen.inputs[0].shape, name=frozen.inputs[0].name
    )


def _replay(model, image, call_layer=None, transform_input=None):
    """Calls `model`'s own layers on the input `image`, flat (no nested
    model), with `call_layer(layer, *args, **kwargs)` in place of each layer
    call. `transform_input(image)`, if given, is what the first layers read
    instead of `image` (`clone_model` accepts only `Input`s to start from).
    """
    call_layer = call_layer or (lambda layer, *a, **k: layer(*a, **k))
    if transform_input is not None:
        transformed = []

        def substitute(tensor):
            if tensor is not image:
                return tensor
            if not transformed:
                transformed.append(transform_input(image))
            return transformed[0]

        inner = call_layer

        def call_layer(layer, *args, **kwargs):
            args, kwargs = keras.tree.map_structure(substitute, (args, kwargs))
            return inner(layer, *args, **kwargs)

    return keras.models.clone_model(
        model,
        input_tensors=keras.tree.map_structure(lambda _: image, model.input),
        clone_function=lambda layer: layer,
        call_function=call_layer,
    ).outputs[0]


def _fine_tuning(method, trainable_layer):
    def build_model(
        backbone, num_classes, input_shape, weights, dropout, name=None
    ):
        frozen = backbones.resolve(backbone, input_shape, weights)
        for layer in frozen.layers:
            layer.trainable = trainable_layer(layer)
        logits = _head(frozen.outputs[0], num_classes, dropout)
        return _model(frozen.inputs, logits, method, backbone, name)

    build_model.__doc__ = f"Builds `{method}`: {DESCRIPTIONS[method]}."
    return build_model


def _model(inputs, logits, method, backbone, name):
    """Every method's model is a `RepNetModel`: the same lean backward (exact
    gradients, bool ReLU masks) for all, and the backbone's name for export."""
    return RepNetModel(
        inputs,
        logits,
        name=name or _model_name(method, backbone),
        backbone=backbones.backbone_name(backbone),
    )


def _is_batch_norm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


_ft_full = _fine_tuning("ft-full", lambda layer: True)
_ft_last = _fine_tuning("ft-last", lambda layer: False)
_bn_only = _fine_tuning("bn-only", _is_batch_norm)


def _tinytl(
    backbone, num_classes, input_shape, weights, dropout, kernel_size, groups,
    name=None,
):
    """Builds `tinytl`: lite residual modules, shifts and a head.

    Every backbone batch norm stays frozen in inference mode and gets a
    trainable shift (`ChannelBias`). Every block (main-path segment between
    consecutive `find_taps(mode="all")` boundaries) gets a lite residual
    module: the block's input, average-pooled to half the block's output
    resolution, a `kernel_size` convolution in `groups` groups, batch norm,
    ReLU, a 1x1 convolution to the block's output channels and a batch norm
    with zero-initialised scale (a `RepNetModule`), bilinearly upsampled and
    added to the block's output.

    Differences from TinyTL: the modules start from zero (as TinyTL's
    "random initialisation" row), not from ImageNet-pretrained modules; the
    first block after the stem and blocks that end on no boundary (e.g.
    MobileNetV2's last 160->320 block) get shifts only; TinyTL's weight
    standardisation and group norms are not used.
    """
    frozen = backbones.resolve(backbone, input_shape, weights)
    frozen.trainable = False
    boundaries = [t.layer_name for t in taps_lib.find_taps(frozen, mode="all")]
    # Boundary layer name -> the boundary where the block it ends begins.
    block_inputs = dict(zip(boundaries[1:], boundaries))
    outputs_by_name = {}

    def call_layer(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if _is_batch_norm(layer):
            outputs = ChannelBias(name=f"{layer.name}_shift")(outputs)
        if layer.name in block_inputs:
            index = boundaries.index(layer.name) - 1
            block_input = outputs_by_name[block_inputs[layer.name]]
            outputs = keras.layers.Add(name=f"tinytl_add_{index}")(
                [outputs, _lite_residual(block_input, outputs, index,
                                         kernel_size, groups)]
            )
        if layer.name in boundaries:
            outputs_by_name[layer.name] = outputs
        return outputs

    image = _new_input(frozen)
    features = _replay(frozen, image, call_layer)
    logits = _head(features, num_classes, dropout)
    return _model(image, logits, "tinytl", backbone, name)


def _lite_residual(block_input, block_output, index, kernel_size, groups):
    height, width, channels = block_output.shape[1:]
    half = (math.ceil(height / 2), math.ceil(width / 2))
    residual = RepNetModule(
        filters=channels,
        output_size=half,
        hidden_filters=block_input.shape[-1],
        kernel_size=kernel_size,
        groups=groups,
        name=f"tinytl_residual_{index}",
    )(block_input)
    if half != (height, width):
        residual = keras.layers.Resizing(
            height,
            width,
            interpolation="bilinear",
            name=f"tinytl_upsample_{index}",
        )(residual)
    return residual


def _mobiletl(
    backbone, num_classes, input_shape, weights, dropout, top_blocks,
    name=None,
):
    """Builds `mobiletl`: shifts in the top blocks with a sign backward.

    The last `top_blocks` blocks (main-path segments after the
    `top_blocks`-th block boundary from the end, counting the segment from
    the last boundary to the feature map as one block) train a shift after
    each batch norm (`ChannelBias`, the norms stay in inference mode), and
    each activation layer there (`ReLU`, `Activation`) passes gradients back
    through a binary mask `x > 0` (`SignBackward`). Nothing below the top
    blocks needs a gradient. Activations made of several operations (e.g.
    MobileNetV3's hard-swish) keep their exact gradient.
    """
    if not isinstance(top_blocks, int) or top_blocks < 1:
        raise ValueError(
            f"`top_blocks` must be a positive int. Received: {top_blocks!r}"
        )
    frozen = backbones.resolve(backbone, input_shape, weights)
    frozen.trainable = False
    boundaries = [t.layer_name for t in taps_lib.find_taps(frozen, mode="all")]
    start = boundaries[-min(top_blocks, len(boundaries))]
    state = {"inside": False}

    def call_layer(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if layer.name == start:
            state["inside"] = True
        elif state["inside"]:
            if _is_batch_norm(layer):
                outputs = ChannelBias(name=f"{layer.name}_shift")(outputs)
            elif isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
                outputs = SignBackward(name=f"{layer.name}_sign")(
                    [args[0], outputs]
                )
        return outputs

    image = _new_input(frozen)
    features = _replay(frozen, image, call_layer)
    logits = _head(features, num_classes, dropout)
    return _model(image, logits, "mobiletl", backbone, name)


def _adv_rep(backbone, num_classes, input_shape, weights, source_top,
             name=None):
    """Builds `adv-rep`: an input perturbation through a fixed classifier.

    The frozen source classifier is the backbone's own ImageNet top (global
    pooling and the 1000-class layer, used as is) when it can be had:
    `weights="imagenet"`, or a weights file that holds the top. Otherwise
    (`weights=None`, a no-top weights file, or `source_top="random"`) a
    frozen, randomly initialised 1000-class layer on the pooled features
    stands in for it; the perturbation then steers random projections, a
    much weaker baseline. `LabelMapping` maps the 1000 logits onto the new
    classes (source class `s` to `s % num_classes`). The original method
    also bounds the perturbation with `tanh` and embeds small images in a
    larger frame; here the image fills the input and `p` is unbounded.
    """
    if source_top not in ("auto", "backbone", "random"):
        raise ValueError(
            '`source_top` must be "auto", "backbone" or "random". '
            f"Received: source_top={source_top!r}"
        )
    source = None
    if source_top != "random":
        source = _classifier_with_top(backbone, input_shape, weights)
        if source is None and source_top == "backbone":
            raise ValueError(
                f"No classification top for backbone {backbone!r} with "
                f"weights={weights!r}: pass weights='imagenet' or a weights "
                "file saved with the top, or use source_top='random'."
            )
    if source is None:
        source = _random_top_classifier(backbone, input_shape, weights)
    source.trainable = False
    image = _new_input(source)
    source_logits = _replay(
        source, image, transform_input=InputPerturbation(name="adv_perturbation")
    )
    logits = LabelMapping(num_classes, name="adv_label_mapping")(source_logits)
    return _model(image, logits, "adv-rep", backbone, name)


def _classifier_with_top(backbone, input_shape, weights):
    """The backbone with its own classification top and logits output, or
    `None` when the weights hold no top."""
    if isinstance(backbone, keras.Model):
        return backbone if len(backbone.outputs[0].shape) == 2 else None
    if weights is None:
        return None
    constructor = (
        backbones.constructor_for(backbone)
        if isinstance(backbone, str)
        else backbone
    )
    shape = tuple(input_shape or backbones.DEFAULT_INPUT_SHAPE)
    try:
        if weights != "imagenet":
            return constructor(
                include_top=True,
                weights=weights,
                input_shape=shape,
                classifier_activation=None,
            )
        # ImageNet tops load only at the default size; the weights of a
        # globally pooled top do not depend on the input size.
        reference = constructor(
            include_top=True, weights="imagenet", classifier_activation=None
        )
    except ValueError:
        return None  # A weights file without the top.
    if tuple(reference.inputs[0].shape[1:]) == shape:
        return reference
    model = constructor(
        include_top=True,
        weights=None,
        input_shape=shape,
        classifier_activation=None,
    )
    model.set_weights(reference.get_weights())
    return model


def _random_top_classifier(backbone, input_shape, weights):
    frozen = backbones.resolve(backbone, input_shape, weights)
    pooled = keras.layers.GlobalAveragePooling2D(name="adv_random_top_pool")(
        frozen.outputs[0]
    )
    logits = keras.layers.Dense(
        _RANDOM_TOP_CLASSES,
        kernel_initializer=keras.initializers.GlorotUniform(seed=0),
        name="adv_random_top",
    )(pooled)
    return keras.Model(frozen.inputs, logits, name=frozen.name)


def _adv_rep_last(backbone, num_classes, input_shape, weights, dropout,
                  name=None):
    """Builds `adv-rep-last`: an input perturbation and a retrained head on
    the frozen backbone's pooled features (the ImageNet top is dropped)."""
    frozen = backbones.resolve(backbone, input_shape, weights)
    frozen.trainable = False
    image = _new_input(frozen)
    features = _replay(
        frozen, image, transform_input=InputPerturbation(name="adv_perturbation")
    )
    logits = _head(features, num_classes, dropout)
    return _model(image, logits, "adv-rep-last", backbone, name)


_BUILDERS = {
    "ft-full": _ft_full,
    "ft-last": _ft_last,
    "bn-only": _bn_only,
    "tinytl": _tinytl,
    "adv-rep": _adv_rep,
    "adv-rep-last": _adv_rep_last,
    "mobiletl": _mobiletl,
}
