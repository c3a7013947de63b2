"""The training recipe: how a model trains, written once.

A `Recipe` holds the peak learning rate of each group of variables, the
optimizer and its schedule, the loss's label smoothing, the training crops
and the run's defaults (image size, epochs, batch size, validation share,
seed). Each method has one (`keras_repnet.methods.recipe_for`); the model
carries the recipe it was built with (`model.recipe`, saved in the `.keras`
file), and `keras_repnet.train`, `compare`, the command line's defaults,
`export_tflite` and the device trainer read it from there, so that Keras
and the phone optimise the same loss at the same rates.

Example:

>>> recipe = Recipe()
>>> recipe.side_learning_rate, recipe.head_learning_rate
(0.01, 0.001)
>>> optimizer = recipe.make_optimizer(total_steps=1000)
>>> loss = recipe.make_loss()
"""

import dataclasses
import numbers

import keras

from keras_repnet.core import masks
from keras_repnet.core.heads import HEAD_NAME
from keras_repnet.core.layers import SHIFT_PATHS
from keras_repnet.core.losses import SparseCategoricalCrossentropy
from keras_repnet.core.optimizers import MultiRateAdam
from keras_repnet.core.optimizers import MultiRateSGD

OPTIMIZERS = {"adam": MultiRateAdam, "sgd": MultiRateSGD}
SCHEDULES = ("cosine",)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a model trains: rates, optimizer, schedule, loss, crops, run.

    "Side" variables are every trainable variable outside the head
    (`repnet_head`) and the mask scores: Rep-Net's side network and
    backbone shifts, or a baseline's trainable backbone weights.

    Args:
        side_learning_rate: float. Peak learning rate of the side
            variables. Rep-Net's side network starts from zero and takes
            10x the head's rate (as the reference code). Defaults to 1e-2.
        head_learning_rate: float. Peak learning rate of the head.
            Defaults to 1e-3.
        shift_learning_rate: float or `None`. Peak learning rate of the
            backbone shifts (the `ChannelBias` after each frozen batch
            norm, of Rep-Net, TinyTL and MobileTL). `None`: the side's
            rate, except where `keras_repnet.build` trains the shifts of a
            backbone whose exact backward would keep float activations
            (MobileNetV3): there its model's recipe gets 3e-3. Defaults to
            `None`.
        mask_learning_rate: float. Peak learning rate of the scores of
            learned backbone masks (`repnet-mask`): Rep-Net's side rate,
            whatever rate the side network trains at, so that a mask's
            sparsity does not follow the side's rate. Defaults to 1e-2.
        mask_warmup: float. Share of the steps over which the scores' rate
            ramps up from 0, in `[0, 1)`: a random head's first gradients
            would otherwise flip kernels at random. Defaults to 0.2.
        optimizer: str. `"adam"` or `"sgd"`. Defaults to `"adam"`.
        momentum: float. Momentum of `"sgd"`. Defaults to 0.9.
        schedule: str. `"cosine"`: each rate decays from its peak to zero
            along a cosine over the run's steps. Defaults to `"cosine"`.
        label_smoothing: float. Of the cross-entropy, in `[0, 1)`.
            Defaults to 0.1.
        min_crop_area: float. Training images are randomly cropped to
            `min_crop_area`-100% of their area (and flipped). Defaults to
            0.64.
        image_size: int. Side of the square input images. Defaults to 224.
        epochs: int. Defaults to 10.
        batch_size: int. Examples per step. Defaults to 32.
        validation_split: float. Share of the training data held out for
            validation, in `[0, 1)`. Defaults to 0.2.
        seed: int. Seed of the split, the data order and the
            initialisation. Defaults to 1337.
    """

    side_learning_rate: float = 1e-2
    head_learning_rate: float = 1e-3
    shift_learning_rate: float | None = None
    mask_learning_rate: float = 1e-2
    mask_warmup: float = 0.2
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    min_crop_area: float = 0.64
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    validation_split: float = 0.2
    seed: int = 1337

    def __post_init__(self):
        for name in (
            "side_learning_rate", "head_learning_rate", "mask_learning_rate"
        ):
            self._require(_number(self, name) and getattr(self, name) > 0,
                          name, "a positive number")
        self._require(
            self.shift_learning_rate is None
            or (_number(self, "shift_learning_rate")
                and self.shift_learning_rate > 0),
            "shift_learning_rate",
            "a positive number or None",
        )
        for name in ("image_size", "epochs", "batch_size"):
            value = getattr(self, name)
            self._require(
                isinstance(value, int) and not isinstance(value, bool)
                and value > 0,
                name,
                "a positive int",
            )
        for name in (
            "mask_warmup", "label_smoothing", "validation_split", "momentum"
        ):
            self._require(
                _number(self, name) and 0 <= getattr(self, name) < 1,
                name,
                "a number in [0, 1)",
            )
        self._require(
            _number(self, "min_crop_area") and 0 < self.min_crop_area <= 1,
            "min_crop_area",
            "a number in (0, 1]",
        )
        self._require(
            self.optimizer in OPTIMIZERS, "optimizer", f"one of {list(OPTIMIZERS)}"
        )
        self._require(
            self.schedule in SCHEDULES, "schedule", f"one of {list(SCHEDULES)}"
        )
        self._require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool),
            "seed",
            "an int",
        )

    def _require(self, condition, name, expected):
        if not condition:
            raise ValueError(
                f"A recipe's `{name}` must be {expected}. Received: "
                f"{name}={getattr(self, name)!r}"
            )

    def replace(self, **changes) -> "Recipe":
        """A copy with `changes`; `None` values leave a field as it is.

        Example:

        >>> Recipe().replace(epochs=3, seed=None).epochs
        3
        """
        unknown = sorted(set(changes) - set(self.to_dict()))
        if unknown:
            raise ValueError(
                f"A recipe has no field {unknown}. Its fields: "
                f"{list(self.to_dict())}."
            )
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "Recipe":
        """The inverse of `to_dict`; fields a newer version added keep their
        defaults."""
        return cls().replace(**config)

    # === Keras objects ===

    def make_optimizer(self, total_steps: int | None = None):
        """The optimizer, its rates decaying over `total_steps`.

        Args:
            total_steps: int. Optimizer steps of the run. `None` gives a
                constant rate (the peak), for a caller that sets the rate
                itself each step, as the exported `train` signature does.

        Returns:
            A `keras_repnet.MultiRateAdam` (or `MultiRateSGD`) whose base
            rate is the side's, with the head's, the shifts' and the mask
            scores' rates as multipliers.
        """
        side = self.side_learning_rate
        rate = side
        if total_steps is not None:
            rate = keras.optimizers.schedules.CosineDecay(
                side, decay_steps=max(1, total_steps)
            )
        mask_multiplier = self.mask_learning_rate / side
        warmup_steps = round(self.mask_warmup * (total_steps or 0))
        if warmup_steps:
            # A linear ramp from 0 to the multiplier, then flat (alpha=1: no
            # decay of its own; the base schedule still decays).
            mask_multiplier = keras.optimizers.schedules.CosineDecay(
                0.0,
                decay_steps=1,
                alpha=1.0,
                warmup_target=mask_multiplier,
                warmup_steps=warmup_steps,
            )
        multipliers = {
            HEAD_NAME: self.head_learning_rate / side,
            masks.SCORE_PATHS: mask_multiplier,
        }
        if self.shift_learning_rate is not None:
            multipliers[SHIFT_PATHS] = self.shift_learning_rate / side
        options = {"momentum": self.momentum} if self.optimizer == "sgd" else {}
        return OPTIMIZERS[self.optimizer](
            rate, lr_multipliers=multipliers, **options
        )

    def make_loss(self) -> SparseCategoricalCrossentropy:
        """The cross-entropy of logits and integer labels, smoothed."""
        return SparseCategoricalCrossentropy(
            from_logits=True, label_smoothing=self.label_smoothing
        )

    def compile(self, model: keras.Model, total_steps: int, **kwargs) -> None:
        """`model.compile` with this recipe's optimizer and loss and an
        `accuracy` metric; `kwargs` go to `compile`.

        XLA stays off unless asked for: on CPU it measured slower and used
        more memory.
        """
        model.compile(
            optimizer=self.make_optimizer(total_steps),
            loss=self.make_loss(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            **{"jit_compile": False, **kwargs},
        )


def _number(recipe, name):
    value = getattr(recipe, name)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# Rep-Net's recipe: `build()`'s models carry it.
REPNET = Recipe()
