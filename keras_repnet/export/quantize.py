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

LiteRT stores each tensor's quantization parameters inline: a float32 scale
and an int64 zero point per channel, and every signature's tensor over a
shared int8 buffer carries its own (MobileNetV2's training file held three
copies of each scale, and zero points that are all 0).
`share_quantization_vectors` writes each distinct vector once, for every
table that holds it to point at: FlatBuffers offsets may share a target.
"""

import contextlib
import io

import numpy as np


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


def share_quantization_vectors(content: bytes) -> bytes:
    """Returns `content` with each distinct quantization vector stored once.

    The model reads the same: every tensor keeps its own quantization table
    (scales, zero points, axis), whose vectors point at one shared copy of
    the values.

    Args:
        content: bytes. A `.tflite` model.

    Returns:
        The model's bytes.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    vectors = {}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if tensor.quantization is not None:
                tensor.quantization = _SharedVectors(tensor.quantization, vectors)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


class _SharedVectors:
    """A `QuantizationParametersT` that packs its vectors through `vectors`,
    a cache of offsets by content shared by all tensors of one model."""

    FIELDS = (
        ("min", np.float32, "Min"),
        ("max", np.float32, "Max"),
        ("scale", np.float32, "Scale"),
        ("zeroPoint", np.int64, "ZeroPoint"),
    )

    def __init__(self, quantization, vectors):
        self.quantization = quantization
        self.vectors = vectors

    def Pack(self, builder):  # noqa: N802 (the FlatBuffers object API name)
        from ai_edge_litert.tools import flatbuffer_utils

        schema = flatbuffer_utils.schema_fb
        quantization = self.quantization
        offsets = {}
        for field, dtype, _ in self.FIELDS:
            values = getattr(quantization, field)
            if values is None:
                continue
            array = np.asarray(values, dtype)
            key = (array.dtype.str, array.tobytes())
            if key not in self.vectors:
                self.vectors[key] = builder.CreateNumpyVector(array)
            offsets[field] = self.vectors[key]
        details = None
        if quantization.details is not None:
            details = quantization.details.Pack(builder)
        schema.QuantizationParametersStart(builder)
        for field, _, suffix in self.FIELDS:
            if field in offsets:
                add = getattr(schema, f"QuantizationParametersAdd{suffix}")
                add(builder, offsets[field])
        schema.QuantizationParametersAddDetailsType(builder, quantization.detailsType)
        if details is not None:
            schema.QuantizationParametersAddDetails(builder, details)
        schema.QuantizationParametersAddQuantizedDimension(
            builder, quantization.quantizedDimension
        )
        return schema.QuantizationParametersEnd(builder)
