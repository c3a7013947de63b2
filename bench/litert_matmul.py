"""LiteRT's kernels for a 1x1 convolution's input gradient, without XNNPACK.

    python bench/litert_matmul.py

The input gradient of a 1x1 convolution is one matrix product of the
output gradient by the kernel, transposed. The export computes it as a
`BATCH_MATMUL` by the kernel in the forward `CONV_2D`'s layout, so that a
file stores each frozen kernel once (docs/litert.md); `FULLY_CONNECTED`
and `CONV_2D`, the other kernels that compute it, read the kernel
transposed, a second copy. This times the same product as each of the
three in LiteRT's builtin kernels (no delegate) and with XNNPACK, at
shapes of MobileNetV2's 1x1 convolutions at 128 px, batch 8: the median
of `--repeats` calls, 1 thread, every file converted from a TensorFlow
function and checked against numpy.

Writes bench/results/litert_matmul.{json,md}.
"""

import os
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.interpreter import OpResolverType
from common import write_results

from keras_repnet.export import operators

_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls (after a warm-up).")
_BATCH = 8
# (height and width, output channels, input channels) of the convolution:
# an expansion at 64x64, a projection at 32x32, an expansion at 8x8.
SHAPES = ((64, 96, 16), (32, 24, 144), (8, 384, 64))


def kernels(kernel, size, cout, cin):
    """Op name -> a function of the output gradient `[N, S, S, Cout]` that
    returns the input gradient `[N, S, S, Cin]`, for `kernel` `[Cin, Cout]`."""

    def unflatten(rows):
        return tf.reshape(rows, [_BATCH, size, size, cin])

    forward_layout = tf.constant(kernel.T)  # [Cout, Cin], as the CONV_2D's.
    return {
        "BATCH_MATMUL": lambda g: unflatten(
            tf.matmul(tf.reshape(g, [1, -1, cout]), forward_layout[None])
        ),
        "FULLY_CONNECTED": lambda g: unflatten(
            tf.matmul(tf.reshape(g, [-1, cout]), forward_layout)
        ),
        "CONV_2D": lambda g: tf.nn.conv2d(
            g, tf.reshape(forward_layout, [1, 1, cout, cin]), 1, "VALID"
        ),
    }


def time_op(function, gradient, expected, xnnpack):
    spec = tf.TensorSpec(gradient.shape, tf.float32)
    traced = tf.function(function, input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [traced.get_concrete_function()], traced
    )
    content = converter.convert()
    interpreter = Interpreter(
        model_content=content,
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.AUTO
        if xnnpack
        else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    ops = operators.operators(content)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], gradient)
    interpreter.invoke()
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    result = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4)
    return ops, float(np.median(times)) * 1000


def main(_):
    rng = np.random.default_rng(0)
    rows = []
    for size, cout, cin in SHAPES:
        kernel = rng.standard_normal((cin, cout)).astype("float32")
        gradient = rng.standard_normal((_BATCH, size, size, cout)).astype("float32")
        expected = np.einsum("nhwo,io->nhwi", gradient, kernel)
        for xnnpack in (False, True):
            for name, function in kernels(kernel, size, cout, cin).items():
                ops, ms = time_op(function, gradient, expected, xnnpack)
                if name not in ops:
                    raise RuntimeError(f"{name} converted to {sorted(ops)}.")
                rows.append(
                    {
                        "output gradient": f"{_BATCH}x{size}x{size}x{cout}",
                        "input channels": cin,
                        "XNNPACK": "yes" if xnnpack else "no",
                        "op": name,
                        "kernel stored": "once (forward layout)"
                        if name == "BATCH_MATMUL"
                        else "transposed copy",
                        "ms": round(ms, 2),
                    }
                )
    settings = {
        "threads": 1,
        "repeats": _REPEATS.value,
        "cpu_cores": os.cpu_count(),
    }
    write_results("litert_matmul", rows, list(rows[0]), settings)


if __name__ == "__main__":
    app.run(main)
