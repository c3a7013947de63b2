"""`RepNetModel`: the functional model `build()` returns."""

import functools
import threading

import keras

from keras_repnet import backward
from keras_repnet.core import graph
from keras_repnet.core.layers import RepNetModule
from keras_repnet.core.recipe import REPNET
from keras_repnet.core.recipe import Recipe

_training_call = threading.local()  # per replica thread


def recomputed(operation) -> bool:
    """Whether a lean training call of `RepNetModel` recomputes `operation`
    in the backward pass (`keras_repnet.backward.recompute`): the side
    modules, cheap layers with large activations at the first taps, whose
    convolutions run again from their pooled input
    (`RepNetModule.recomputed_steps`). The memory profiler reads this policy
    too."""
    return isinstance(operation, RepNetModule)


def _check_image_size(model, *datasets):
    """Says what to pass when the data's images are not the model's size
    (Keras' own error comes from deep inside the traced step)."""
    expected = tuple(model.inputs[0].shape[1:3])
    for data in datasets:
        if isinstance(data, tuple):
            data = data[0]
        spec = getattr(data, "element_spec", None)
        if isinstance(spec, tuple):
            spec = spec[0]
        shape = getattr(spec, "shape", None) or getattr(data, "shape", None)
        if shape is None or len(shape) != 4 or None in tuple(shape[1:3]):
            continue
        received = tuple(int(d) for d in shape[1:3])
        if received != expected:
            size = received[0]
            raise ValueError(
                f"The model {model.name!r} takes {expected[0]}x{expected[1]} "
                f"images; the data holds {received[0]}x{received[1]}. Build "
                f"it for the data's size (`input_shape=({size}, {size}, 3)`, "
                f"or `recipe=recipe.replace(image_size={size})`), or load the "
                f"data at the model's (`image_size={expected[0]}`)."
            )


@keras.saving.register_keras_serializable(package="keras_repnet")
class RepNetModel(keras.Model):
    """A functional Rep-Net model that trains with a memory-lean backward pass.

    An ordinary functional `keras.Model` (`RepNetModel(inputs, outputs,
    ...)`), as `keras_repnet.build()` returns it. With `lean_backward`
    (the default), training keeps far less for the backward pass, with the
    same gradients:

    - `train_step` builds its gradients inside
      `keras_repnet.backward.override()`: the frozen backbone's ReLUs keep
      masks (as bits) instead of float activations, hard-swish keeps only its
      input, MobileNet's padded depthwise convolutions need no padded copy
      of their gradient.
    - Calls with `training=True` run the side modules (`RepNetModule`)
      with `recompute=True`: their activations, large at the first taps,
      are recomputed in the backward pass from their pooled input.

    `docs/results.md` has what this saves, measured. The rules also matter
    for `connect="dual"` and for full fine-tuning.
    Works with `fit` in graph or eager mode and under `tf.distribute`
    strategies.

    `lean_backward` takes effect when the train function is traced, i.e. at
    the first `fit`. To change it afterwards, call
    `model.make_train_function(force=True)` or `compile()` again.

    Args:
        lean_backward: bool. Build the train step's gradients with the lean
            rules of `keras_repnet.backward`. Defaults to `True`.
        backbone: str. The frozen backbone's name: its `keras.applications`
            name (e.g. `"MobileNetV2"`) when built from one, used to find its
            preprocessing (e.g. by `keras_repnet.export_tflite`), else the
            backbone model's name. Defaults to `None` (unknown).
        recipe: `keras_repnet.Recipe` (or its `to_dict()`). How the model
            trains: `keras_repnet.train`, the command line and
            `export_tflite` read it, and it is saved with the model.
            Defaults to Rep-Net's recipe.
        *args, **kwargs: passed to `keras.Model` (`inputs`, `outputs`,
            `name`, ...).

    Example:

    >>> model = keras_repnet.build("MobileNetV2", num_classes=5, weights=None)
    >>> type(model).__name__, model.lean_backward, model.backbone
    ('RepNetModel', True, 'MobileNetV2')
    >>> model.recipe.side_learning_rate
    0.01
    """

    def __init__(
        self, *args, lean_backward=True, backbone=None, recipe=None, **kwargs
    ):
        with graph.deep_graph_recursion():  # Also when a saved model loads.
            super().__init__(*args, **kwargs)
        if not isinstance(lean_backward, bool):
            raise ValueError(
                "`lean_backward` must be a bool. Received: "
                f"lean_backward={lean_backward!r}"
            )
        if backbone is not None and not isinstance(backbone, str):
            raise ValueError(
                "`backbone` must be a keras.applications model name or None. "
                f"Received: backbone={backbone!r}"
            )
        self.lean_backward = lean_backward
        self.backbone = backbone
        self.recipe = recipe

    @property
    def recipe(self) -> Recipe:
        """The `Recipe` the model trains with."""
        return self._recipe

    @recipe.setter
    def recipe(self, recipe):
        if recipe is None:
            recipe = REPNET
        elif isinstance(recipe, dict):
            recipe = Recipe.from_dict(recipe)
        if not isinstance(recipe, Recipe):
            raise ValueError(
                "`recipe` must be a keras_repnet.Recipe, its to_dict() or "
                f"None. Received: recipe={recipe!r}"
            )
        self._recipe = recipe

    def fit(self, x=None, *args, **kwargs):
        _check_image_size(self, x, kwargs.get("validation_data"))
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        _check_image_size(self, x)
        return super().evaluate(x, *args, **kwargs)

    def train_step(self, *args, **kwargs):
        if not self.lean_backward:
            return super().train_step(*args, **kwargs)
        with backward.override():
            return super().train_step(*args, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        lean = bool(training) and self.lean_backward
        previous = getattr(_training_call, "lean", False)
        _training_call.lean = lean
        try:
            return super().call(inputs, training=training, mask=mask, **kwargs)
        finally:
            _training_call.lean = previous

    def _run_through_graph(self, inputs, operation_fn=lambda op: op, **kwargs):
        if getattr(_training_call, "lean", False):
            plain_fn = operation_fn

            def operation_fn(operation):
                call = plain_fn(operation)
                if recomputed(operation):
                    return functools.partial(call, recompute=True)
                return call

        return super()._run_through_graph(inputs, operation_fn, **kwargs)

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "lean_backward": self.lean_backward,
                "backbone": self.backbone,
                "recipe": self.recipe.to_dict(),
            }
        )
        return config
