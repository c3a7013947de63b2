"""Turns what the user names as a backbone into a frozen functional model."""

import contextlib
import inspect
import os
import warnings

import keras

from keras_repnet.core import taps as taps_lib
from keras_repnet.core.recipe import REPNET

# Rep-Net's recipe's image size.
DEFAULT_INPUT_SHAPE = (REPNET.image_size, REPNET.image_size, 3)


class RandomWeightsWarning(UserWarning):
    """A frozen backbone was built without pretrained weights."""


@contextlib.contextmanager
def random_weights_on_purpose():
    """Builds inside need no `RandomWeightsWarning`: what they measure (the
    memory, the cost) does not depend on the weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        yield


def application_names() -> list[str]:
    """Names of the model constructors in `keras.applications`."""
    return sorted(
        name
        for name, value in vars(keras.applications).items()
        if inspect.isfunction(value) and name[:1].isupper()
    )


def constructor_for(name: str):
    """The `keras.applications` constructor called `name`."""
    if name not in application_names():
        raise ValueError(
            f"Unknown backbone {name!r}. Use the name of a keras.applications "
            f"model, one of: {', '.join(application_names())}."
        )
    return getattr(keras.applications, name)


def backbone_name(backbone) -> str:
    """A short name for a constructor, a constructor name or a model."""
    if isinstance(backbone, str):
        return backbone
    if isinstance(backbone, keras.Model):
        return backbone.name
    return getattr(backbone, "__name__", type(backbone).__name__)


def resolve(backbone, input_shape=None, weights="imagenet") -> keras.Model:
    """Returns the backbone as a functional model ending at its feature map.

    Args:
        backbone: a `keras.applications` constructor, its name, or a built
            functional `keras.Model` (a top, if present, is cut off at its
            first global pooling).
        input_shape: tuple. `(H, W, C)`. Defaults to `(224, 224, 3)` for
            constructors and to the model's own shape for built models.
        weights: `"imagenet"`, `None` or a path to a weights file, passed to
            the constructor. Ignored for built models.
    """
    if isinstance(backbone, str):
        backbone = constructor_for(backbone)
    if isinstance(backbone, keras.Model):
        model = _functional(backbone)
        if input_shape is not None and tuple(input_shape) != tuple(
            model.inputs[0].shape[1:]
        ):
            raise ValueError(
                f"The backbone {model.name!r} is already built for input "
                f"shape {tuple(model.inputs[0].shape[1:])}. Received: "
                f"input_shape={tuple(input_shape)}. Rebuild the backbone for "
                "that shape, or leave `input_shape` unset."
            )
    elif callable(backbone):
        if weights is None:
            warnings.warn(
                f"Building {backbone.__name__} with random weights "
                "(weights=None): a frozen random backbone trains to little "
                "more than chance. Pass weights='imagenet' or a weights file "
                "for a real task.",
                RandomWeightsWarning,
                stacklevel=3,
            )
        model = _construct(backbone, input_shape or DEFAULT_INPUT_SHAPE, weights)
    else:
        raise ValueError(
            "`backbone` must be a keras.applications constructor (e.g. "
            "keras.applications.MobileNetV3Small), its name, or a functional "
            f"keras.Model. Received: {backbone!r}"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or None in shape:
        raise ValueError(
            "Rep-Net needs a backbone with a fixed (height, width, channels) "
            f"input. Received input shape {shape} from {model.name!r}: build "
            "the backbone with an explicit `input_shape`."
        )
    feature = taps_lib.feature_output(model)
    if feature is not model.outputs[0]:
        model = keras.Model(model.inputs, feature, name=model.name)
    return model


def _construct(constructor, input_shape, weights):
    if weights not in ("imagenet", None) and not os.path.exists(weights):
        raise FileNotFoundError(
            f"Weights file not found: {weights!r}. Pass an existing file, "
            '"imagenet" to download the ImageNet weights, or None for random '
            "initialisation."
        )
    try:
        return constructor(
            include_top=False, weights=weights, input_shape=tuple(input_shape)
        )
    except ValueError as error:
        raise ValueError(
            f"{constructor.__name__} refused input_shape="
            f"{tuple(input_shape)} with weights={weights!r}: {error} "
            "Choose an input shape the backbone accepts (for example "
            "(224, 224, 3))."
        ) from error


def _functional(model):
    if isinstance(model, keras.Sequential) and model.built:
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model
