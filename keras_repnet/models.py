"""`RepNetModel`: the functional model `build()` returns."""

import threading

import keras

from keras_repnet import gradients
from keras_repnet.layers import RepNetModule

_training_call = threading.local()  # per replica thread


@keras.saving.register_keras_serializable(package="keras_repnet")
class RepNetModel(keras.Model):
    """A functional Rep-Net model that trains with a memory-lean backward.

    It is an ordinary functional `keras.Model` (built as
    `RepNetModel(inputs, outputs, ...)`) whose `train_step` builds its
    gradients inside `keras_repnet.gradients.override()` when
    `lean_backward` is true: the frozen backbone's ReLUs then keep bool masks
    instead of float activations for the backward pass, with identical
    gradients.

    `lean_backward` takes effect when the train function is traced, i.e. at
    the first `fit`. To change it afterwards, call
    `model.make_train_function(force=True)` or `compile()` again.

    Args:
        lean_backward: bool. Build the train step's gradients with the lean
            rules of `keras_repnet.gradients`. Defaults to `True`.
        backbone: str. The frozen backbone's name: its `keras.applications`
            name (e.g. `"MobileNetV2"`) when built from one, used to find its
            preprocessing (e.g. by `keras_repnet.export_tflite`), else the
            backbone model's name. Defaults to `None` (unknown).
        *args, **kwargs: passed to `keras.Model` (`inputs`, `outputs`,
            `name`, ...).

    Example:

    >>> model = keras_repnet.build("MobileNetV2", num_classes=5)
    >>> type(model).__name__, model.lean_backward, model.backbone
    ('RepNetModel', True, 'MobileNetV2')
    """

    def __init__(self, *args, lean_backward=True, backbone=None, **kwargs):
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

    def train_step(self, *args, **kwargs):
        if not self.lean_backward:
            return super().train_step(*args, **kwargs)
        with gradients.override():
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
                if isinstance(operation, RepNetModule):
                    return gradients.recompute(call)
                return call

        return super()._run_through_graph(inputs, operation_fn, **kwargs)

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {"lean_backward": self.lean_backward, "backbone": self.backbone}
        )
        return config
