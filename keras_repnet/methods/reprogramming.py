"""`adv-rep` and `adv-rep-last`: adversarial reprogramming, an input
perturbation through a fixed classifier or a new head (Elsayed et al. 2018,
Kloberdanz et al. 2021)."""

import keras

from keras_repnet.core import backbones
from keras_repnet.core import heads
from keras_repnet.methods import base
from keras_repnet.methods.baseline_layers import InputPerturbation
from keras_repnet.methods.baseline_layers import LabelMapping

# Number of classes of the fixed source classifier of `adv-rep` when the
# backbone comes without its ImageNet top.
_RANDOM_TOP_CLASSES = 1000


def adv_rep(backbone, num_classes, input_shape, weights, source_top,
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
    image = heads.new_input(source)
    source_logits = heads.replay(
        source, image, transform_input=InputPerturbation(name="adv_perturbation")
    )
    logits = LabelMapping(num_classes, name="adv_label_mapping")(source_logits)
    return base.method_model(image, logits, "adv-rep", backbone, name)


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


def adv_rep_last(backbone, num_classes, input_shape, weights, dropout,
                 name=None):
    """Builds `adv-rep-last`: an input perturbation and a retrained head on
    the frozen backbone's pooled features (the ImageNet top is dropped)."""
    frozen = backbones.resolve(backbone, input_shape, weights)
    frozen.trainable = False
    image = heads.new_input(frozen)
    features = heads.replay(
        frozen, image, transform_input=InputPerturbation(name="adv_perturbation")
    )
    logits = heads.classifier_head(features, num_classes, dropout)
    return base.method_model(image, logits, "adv-rep-last", backbone, name)
