import keras
import numpy as np

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


def test_make_optimizer_gives_mask_scores_their_own_rate():
    from keras_repnet.apps import training
    from keras_repnet.core import masks

    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    layer = masks.masked_copy(dense, "weight", initial_score=0.0)
    side = keras.Variable(np.zeros(2, "float32"), name="side")
    optimizer = training.make_optimizer(
        1e-3, 1e-3, total_steps=10**9, mask_learning_rate=1e-2
    )
    optimizer.apply_gradients(
        [(np.ones((3, 2), "float32"), layer.score), (np.ones(2, "float32"), side)]
    )
    assert layer.score.path.endswith("/mask_score")
    # Adam's first step is the learning rate times the sign of the gradient.
    np.testing.assert_allclose(layer.score.numpy(), -1e-2, rtol=1e-4)
    np.testing.assert_allclose(side.numpy(), -1e-3, rtol=1e-4)
