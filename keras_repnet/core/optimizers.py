"""Optimizers with a learning rate per group of variables."""

import fnmatch

import keras

from keras_repnet import compat


class _MultiRate:
    """Scales the learning rate per group of variables (a mixin placed
    before a `keras.optimizers.Optimizer` subclass). A multiplier is a float
    or a `LearningRateSchedule` of the optimizer's step (e.g. a warm-up)."""

    def __init__(self, learning_rate=0.001, lr_multipliers=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.lr_multipliers = {
            prefix: _deserialize_multiplier(value)
            for prefix, value in (lr_multipliers or {}).items()
        }

    def multiplier(self, variable):
        """The learning-rate multiplier of a `keras.Variable`: a float or a
        schedule."""
        for prefix, value in self.lr_multipliers.items():
            if fnmatch.fnmatchcase(variable.path, prefix + "*"):
                return value if _is_schedule(value) else float(value)
        return 1.0

    def build(self, var_list):
        super().build(var_list)
        self._scales = [self.multiplier(v) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._scales[compat.variable_index(self, variable)]
        if _is_schedule(scale):
            learning_rate = learning_rate * keras.ops.cast(
                scale(self.iterations), variable.dtype
            )
        elif scale != 1.0:
            learning_rate = learning_rate * scale
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = {
            prefix: keras.optimizers.schedules.serialize(value)
            if _is_schedule(value)
            else value
            for prefix, value in self.lr_multipliers.items()
        }
        return config


def _is_schedule(value):
    return isinstance(value, keras.optimizers.schedules.LearningRateSchedule)


def _deserialize_multiplier(value):
    if isinstance(value, dict):
        return keras.optimizers.schedules.deserialize(value)
    return value


@keras.saving.register_keras_serializable(package="keras_repnet")
class MultiRateAdam(_MultiRate, keras.optimizers.Adam):
    """Adam whose learning rate is scaled per group of variables.

    Rep-Net trains its side modules and its head at different rates. Variables
    whose path (e.g. `"repnet_head/kernel"`) starts with a key of
    `lr_multipliers` use the learning rate (or schedule) times that value.

    Args:
        learning_rate: float or `keras.optimizers.schedules.LearningRateSchedule`.
            The base rate. Defaults to 0.001.
        lr_multipliers: dict. Variable path prefix (`*` matches any
            characters, e.g. `"*/mask_score"`) to multiplier: a float, or a
            `keras.optimizers.schedules.LearningRateSchedule` of the step.
            The first matching prefix wins. Defaults to `{}` (plain Adam).
        **kwargs: other `keras.optimizers.Adam` arguments.

    Example:

    >>> optimizer = MultiRateAdam(1e-3, lr_multipliers={"repnet_head": 0.2})
    """


@keras.saving.register_keras_serializable(package="keras_repnet")
class MultiRateSGD(_MultiRate, keras.optimizers.SGD):
    """SGD whose learning rate is scaled per group of variables: the
    arguments of `MultiRateAdam`, with `keras.optimizers.SGD`'s (e.g.
    `momentum`) as `**kwargs`.

    Example:

    >>> optimizer = MultiRateSGD(1e-2, lr_multipliers={"repnet_head": 0.1})
    """
