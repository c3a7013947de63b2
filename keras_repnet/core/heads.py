"""What every builder shares: a new input, a replay of the frozen
backbone's own layers on it, and the classifier head."""

import keras

from keras_repnet.core import graph
from keras_repnet.core.layers import SideTop

HEAD_NAME = "repnet_head"


def new_input(frozen: keras.Model):
    """A new `keras.Input` of `frozen`'s input shape and name."""
    return keras.Input(
        batch_shape=frozen.inputs[0].shape, name=frozen.inputs[0].name
    )


def replay(model: keras.Model, image, call_layer=None, transform_input=None):
    """Calls `model`'s own layers on the input `image`, flat (no nested
    model), and returns its output tensor.

    Args:
        model: keras.Model. A functional model whose layers are reused (not
            copied).
        image: the new input tensor (`new_input(model)`).
        call_layer: callable. `call_layer(layer, *args, **kwargs)` in place
            of each layer call, e.g. to insert layers after some of them.
            Defaults to calling the layer.
        transform_input: callable. If given, the first layers read
            `transform_input(image)` instead of `image` (`clone_model`
            accepts only `Input`s to start from).
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

    with graph.deep_graph_recursion():
        return keras.models.clone_model(
            model,
            input_tensors=keras.tree.map_structure(lambda _: image, model.input),
            clone_function=lambda layer: layer,
            call_function=call_layer,
        ).outputs[0]


def classifier_head(
    features, num_classes, dropout, side_features=None, side_top=None
):
    """Global average pooling, dropout and the new classifier `HEAD_NAME`
    (logits). `side_features`, if given, go through the layer `side_top`
    (if given), and are pooled and joined to the pooled `features`."""
    features = keras.layers.GlobalAveragePooling2D(name="repnet_pool")(
        features
    )
    if side_features is not None and side_top is not None:
        side_features = side_top(side_features)
    if side_features is not None:
        side_features = keras.layers.GlobalAveragePooling2D(
            name="repnet_side_pool"
        )(side_features)
        features = keras.layers.Concatenate(name="repnet_join")(
            [features, side_features]
        )
    if dropout:
        features = keras.layers.Dropout(dropout, name="repnet_dropout")(
            features
        )
    return keras.layers.Dense(num_classes, name=HEAD_NAME)(features)


def make_side_top(features, side_features, channels, norm_momentum):
    """The `SideTop` through which the head reads the side network's last
    feature `side_features`, `channels` wide (with `"auto"`: as wide as the
    backbone's output `features` where the side feature is narrower), or
    `None` (no width, or no side feature to read)."""
    if side_features is None:
        return None
    if channels == "auto":
        narrower = side_features.shape[-1] < features.shape[-1]
        channels = int(features.shape[-1]) if narrower else 0
    if not channels:
        return None
    return SideTop(channels, norm_momentum, name="repnet_side_top")
