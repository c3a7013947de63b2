import keras
import numpy as np

import keras_repnet

from keras_repnet import MultiRateAdam
from keras_repnet import MultiRateSGD


def step(optimizer, gradient=1.0):
    side = keras.Variable(np.zeros(3, "float32"), name="side")
    head = keras.Variable(np.zeros(3, "float32"), name="repnet_head")
    grads = [np.full(3, gradient, "float32")] * 2
    optimizer.apply_gradients(zip(grads, [side, head]))
    return side.numpy(), head.numpy()


def test_multiplier_scales_the_step_of_matching_variables():
    side, head = step(MultiRateAdam(0.1, lr_multipliers={"repnet_head": 0.25}))

    # Adam's first step is the learning rate times the sign of the gradient.
    np.testing.assert_allclose(side, -0.1, rtol=1e-4)
    np.testing.assert_allclose(head, -0.025, rtol=1e-4)


def test_zero_multiplier_freezes_a_group():
    side, head = step(MultiRateAdam(0.1, lr_multipliers={"repnet_head": 0.0}))

    assert np.all(side < 0)
    np.testing.assert_array_equal(head, 0.0)


def test_without_multipliers_it_is_adam():
    ours = step(MultiRateAdam(0.1))
    adam = step(keras.optimizers.Adam(0.1))

    np.testing.assert_array_equal(ours, adam)


def test_serialization_keeps_multipliers():
    optimizer = MultiRateAdam(
        keras.optimizers.schedules.CosineDecay(1e-3, 100),
        lr_multipliers={"repnet_head": 0.2},
    )

    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))

    assert isinstance(restored, MultiRateAdam)
    assert restored.lr_multipliers == {"repnet_head": 0.2}


def test_sgd_multiplier_scales_the_step():
    side, head = step(MultiRateSGD(0.1, lr_multipliers={"repnet_head": 0.25}), 2.0)

    # Plain SGD: the step is the learning rate times the gradient.
    np.testing.assert_allclose(side, -0.2, rtol=1e-6)
    np.testing.assert_allclose(head, -0.05, rtol=1e-6)


def test_recipe_optimizer_gives_mask_scores_their_own_rate():
    from keras_repnet.core import masks

    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    layer = masks.masked_copy(dense, "weight", initial_score=0.0)
    side = keras.Variable(np.zeros(2, "float32"), name="side")
    optimizer = keras_repnet.Recipe(
        side_learning_rate=1e-3, head_learning_rate=1e-3,
        mask_learning_rate=1e-2, mask_warmup=0.0,
    ).make_optimizer(total_steps=10**9)
    optimizer.apply_gradients(
        [(np.ones((3, 2), "float32"), layer.score), (np.ones(2, "float32"), side)]
    )
    assert layer.score.path.endswith("/mask_score")
    # Adam's first step is the learning rate times the sign of the gradient.
    np.testing.assert_allclose(layer.score.numpy(), -1e-2, rtol=1e-4)
    np.testing.assert_allclose(side.numpy(), -1e-3, rtol=1e-4)


def test_schedule_multiplier_follows_the_step_and_survives_serialization():
    # A linear warm-up of the head's multiplier: 0, 0.25, 0.5 over 4 steps.
    warmup = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=1, alpha=1.0, warmup_target=1.0, warmup_steps=4
    )
    optimizer = MultiRateAdam(0.1, lr_multipliers={"repnet_head": warmup})
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored.lr_multipliers["repnet_head"], type(warmup))

    for candidate in (optimizer, restored):
        side = keras.Variable(np.zeros(1, "float32"), name="side")
        head = keras.Variable(np.zeros(1, "float32"), name="repnet_head")
        heads = []
        for _ in range(3):
            candidate.apply_gradients(
                [(np.ones(1, "float32"), side), (np.ones(1, "float32"), head)]
            )
            heads.append(float(head.numpy()[0]))
        # Plain Adam on a constant gradient steps by the rate each time.
        np.testing.assert_allclose(side.numpy(), -0.3, rtol=1e-4)
        np.testing.assert_allclose(
            np.diff([0.0, *heads]), [0.0, -0.025, -0.05], rtol=1e-4, atol=1e-7
        )


def test_recipe_optimizer_warms_mask_scores_up():
    from keras_repnet.core import masks

    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    layer = masks.masked_copy(dense, "weight", initial_score=0.0)
    optimizer = keras_repnet.Recipe(
        side_learning_rate=1e-3, head_learning_rate=1e-3,
        mask_learning_rate=1e-2, mask_warmup=0.2,
    ).make_optimizer(total_steps=10)
    scores = []
    for _ in range(3):
        optimizer.apply_gradients([(np.ones((3, 2), "float32"), layer.score)])
        scores.append(float(layer.score.numpy()[0, 0]))
    # 2 warm-up steps: fixed at the first, half the rate at the second, then
    # the rate (times the cosine decay of the base schedule at step 2 of 10).
    def decay(step):
        return 0.5 * (1 + np.cos(np.pi * step / 10))

    np.testing.assert_allclose(
        np.diff([0.0, *scores]),
        [0.0, -5e-3 * decay(1), -1e-2 * decay(2)],
        rtol=1e-4,
        atol=1e-8,
    )


def test_recipe_optimizer_gives_backbone_shifts_their_own_rate():
    from keras_repnet.core.layers import shift_after

    shift = shift_after("conv_bn")
    shift.build((None, 2))
    side = keras.Variable(np.zeros(2, "float32"), name="side")
    recipe = keras_repnet.Recipe(side_learning_rate=1e-2, shift_learning_rate=1e-3)
    optimizer = recipe.make_optimizer(total_steps=10**9)
    optimizer.apply_gradients(
        [(np.ones(2, "float32"), shift.bias), (np.ones(2, "float32"), side)]
    )
    # Adam's first step is the learning rate times the sign of the gradient.
    np.testing.assert_allclose(shift.bias.numpy(), -1e-3, rtol=1e-4)
    np.testing.assert_allclose(side.numpy(), -1e-2, rtol=1e-4)
    # Without a rate of their own the shifts train at the side's.
    assert keras_repnet.Recipe().make_optimizer().multiplier(shift.bias) == 1.0
