"""Masks kept as bits: `keras_repnet.backward.bits`."""

import numpy as np
import pytest
import tensorflow as tf

from keras_repnet.backward import bits


@pytest.mark.parametrize("shape", [(3,), (2, 4), (2, 3, 5, 7), (8, 16, 16, 3)])
def test_pack_stores_a_bit_an_element_and_unpacks_to_the_mask(shape):
    mask = np.random.default_rng(0).random(shape) > 0.5
    packed = bits.pack(tf.constant(mask))
    assert packed.dtype == tf.uint8
    assert packed.shape == (-(-mask.size // 8),)
    # The same bytes as numpy's little-endian packing of the flat mask.
    np.testing.assert_array_equal(
        packed, np.packbits(mask.reshape(-1), bitorder="little")
    )
    np.testing.assert_array_equal(bits.unpack(packed, list(shape)), mask)


def test_every_byte_packs_and_unpacks():
    patterns = (np.arange(256)[:, None] >> np.arange(8)) & 1 == 1
    packed = bits.pack(tf.constant(patterns))
    np.testing.assert_array_equal(packed, np.arange(256))
    np.testing.assert_array_equal(bits.unpack(packed, [256, 8]), patterns)


def test_unpack_takes_a_dynamic_shape_in_a_traced_function():
    mask = np.random.default_rng(1).random((3, 5, 7)) > 0.5

    @tf.function(input_signature=[tf.TensorSpec(None, tf.bool)])
    def round_trip(mask):
        return bits.unpack(bits.pack(mask), tf.shape(mask))

    np.testing.assert_array_equal(round_trip(tf.constant(mask)), mask)


def test_where_selects_the_gradient_where_the_kept_mask_holds():
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 3, 5)), tf.float32)
    grad = tf.constant(
        np.random.default_rng(3).normal(size=(2, 3, 5)), tf.float32
    )
    np.testing.assert_array_equal(
        bits.where(bits.keep(x, lambda x: x > 0), grad),
        np.where(x.numpy() > 0, grad.numpy(), 0.0),
    )
