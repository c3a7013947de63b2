"""The cross-entropy every method trains with."""

import keras


@keras.saving.register_keras_serializable(package="keras_repnet")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels, with label smoothing.

    `keras.losses.SparseCategoricalCrossentropy` takes no
    `label_smoothing`; this loss is `keras.losses.CategoricalCrossentropy`
    on the one-hot labels, so datasets keep their integer labels.

    Args:
        from_logits: bool. Whether `y_pred` holds logits. Defaults to
            `False`.
        label_smoothing: float. In `[0, 1)`: the target is
            `(1 - label_smoothing) * one_hot + label_smoothing / classes`.
            Defaults to 0.
        **kwargs: other `keras.losses.Loss` arguments (`reduction`, `name`).

    Example:

    >>> loss = SparseCategoricalCrossentropy(from_logits=True,
    ...                                      label_smoothing=0.1)
    >>> float(loss([0], [[0.0, 0.0]]))
    0.6931...
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        name="sparse_categorical_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(
                "`label_smoothing` must be in [0, 1). Received: "
                f"label_smoothing={label_smoothing!r}"
            )
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            one_hot,
            y_pred,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing,
            }
        )
        return config
