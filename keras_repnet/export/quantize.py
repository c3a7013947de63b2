"""Weight-only int8 storage of the frozen weights of a converted model.

`weight_only_int8(content)` stores the constant weights of the convolutions
and matmuls of a `.tflite` model in int8 (one scale per output channel) with
ai-edge-quantizer's weight-only recipe: each is followed by a builtin
`DEQUANTIZE`, so activations and gradients stay float and every kernel runs
its float form (the converter's dynamic-range quantization instead picks
hybrid kernels that quantize activations on every call).

A frozen 1x1 kernel is read by the forward `CONV_2D` as `[Cout, 1, 1, Cin]`
and by the input gradient's `BATCH_MATMUL` as `[1, Cout, Cin]`: two tensors,
one buffer (`keras_repnet.backward.builtin.conv1x1_input_grad`). The
quantizer quantizes the buffer once and gives both tensors the convolution's
scale axis 0; `_match_scale_axes` moves it to the axis of the same bytes in
the other shape.
"""

import contextlib
import io


def weight_only_int8(content: bytes) -> bytes:
    """Returns `content` with its constant weights stored in int8.

    Args:
        content: bytes. A float `.tflite` model.

    Returns:
        The quantized model's bytes.
    """
    try:
        from ai_edge_quantizer import quantizer
        from ai_edge_quantizer import recipe
    except ImportError as error:
        raise ImportError(
            "An int8 backbone (`quantize_backbone=True`) needs "
            "ai-edge-quantizer: `pip install 'keras-repnet[int8]'`."
        ) from error
    model = quantizer.Quantizer(bytearray(content), recipe.weight_only_wi8_afp32())
    # The quantizer prints a progress bar and a size report.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
        io.StringIO()
    ):
        quantized = model.quantize().quantized_model
    return _match_scale_axes(bytes(quantized))


def _match_scale_axes(content):
    """Moves per-channel scale axes that do not fit their tensor's shape to
    the first axis longer than 1 (the same bytes seen without leading 1s)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    changed = False
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            quantization = tensor.quantization
            if quantization is None or quantization.scale is None:
                continue
            scales, shape = len(quantization.scale), list(tensor.shape)
            axis = quantization.quantizedDimension
            if scales < 2 or shape[axis] == scales:
                continue
            outer = next(i for i, n in enumerate(shape) if n != 1)
            if axis != 0 or shape[outer] != scales:
                raise RuntimeError(
                    f"Tensor {tensor.name!r} of shape {shape} has {scales} "
                    f"int8 scales along axis {axis}: no layout of its bytes "
                    "fits. Export with `quantize_backbone=False`."
                )
            quantization.quantizedDimension = outer
            changed = True
    if not changed:
        return content
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
