"""Zero initial values as `FILL` ops instead of stored zeros.

The training file initialises the optimizer's slots (and any zero-initialised
trainable variable) from constants. The converter writes large zero
constants as `FILL` ops (`keras_repnet.compat.unfold_splat_constants`), but
only above a size threshold of its own: for MobileNetV2's Rep-Net it still
stored about 0.28 MB of zeros. `fill_zero_initial_values(content)` replaces
every remaining zero-filled constant that only `ASSIGN_VARIABLE` reads (an
initial value) with a builtin `FILL` of its shape, run before the
assignments.
"""

import numpy as np

# Smaller zero constants are left as they are: a FILL op and its shape cost
# about as much as the bytes they would save.
MIN_BYTES = 1024
_FLOAT32 = 0  # TensorType.FLOAT32 of the LiteRT schema
_INT64 = 4  # TensorType.INT64


def fill_zero_initial_values(content: bytes) -> bytes:
    """Returns `content` with stored zero initial values made by `FILL`.

    Args:
        content: bytes. A `.tflite` model.

    Returns:
        The model's bytes; `content` itself when nothing is replaced.
    """
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    schema = flatbuffer_utils.schema_fb
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    codes = [
        max(code.builtinCode, code.deprecatedBuiltinCode)
        for code in model.operatorCodes
    ]
    assign = schema.BuiltinOperator.ASSIGN_VARIABLE
    replaced = 0
    for subgraph in model.subgraphs:
        readers = {}
        for op in subgraph.operators:
            for index in op.inputs:
                readers.setdefault(index, []).append(codes[op.opcodeIndex])
        fills = []
        for index, tensor in enumerate(subgraph.tensors):
            if (
                tensor.type != _FLOAT32
                or not _stores_zeros(model.buffers[tensor.buffer].data)
                or set(readers.get(index, [])) != {assign}
            ):
                continue
            shape = _constant(model, subgraph, np.asarray(tensor.shape, np.int64))
            value = _constant(model, subgraph, np.zeros([], np.float32))
            tensor.buffer = 0  # LiteRT's empty buffer: computed, not stored
            fills.append((shape, value, index))
        if fills:
            fill = _opcode(model, codes, schema.BuiltinOperator.FILL)
            operators = []
            for shape, value, index in fills:
                op = schema.OperatorT()
                op.opcodeIndex, op.inputs, op.outputs = fill, [shape, value], [index]
                operators.append(op)
            subgraph.operators = operators + list(subgraph.operators)
            replaced += len(fills)
    if not replaced:
        return content
    _drop_unused_buffers(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _stores_zeros(data):
    return data is not None and len(data) >= MIN_BYTES and not np.any(data)


def _constant(model, subgraph, array):
    """Appends a constant tensor holding `array` to `subgraph`."""
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    buffer = flatbuffer_utils.schema_fb.BufferT()
    buffer.data = np.frombuffer(array.tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor = flatbuffer_utils.schema_fb.TensorT()
    tensor.shape = list(array.shape)
    tensor.type = _INT64 if array.dtype == np.int64 else _FLOAT32
    tensor.buffer = len(model.buffers) - 1
    tensor.name = "zero_fill_shape" if array.ndim else "zero"
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _opcode(model, codes, builtin):
    """The index of `builtin`'s operator code, added if missing."""
    if builtin in codes:
        return codes.index(builtin)
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    code = flatbuffer_utils.schema_fb.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    codes.append(builtin)
    return len(codes) - 1


def _drop_unused_buffers(model):
    """Empties the buffers no tensor reads any more (indices stay valid)."""
    used = {t.buffer for subgraph in model.subgraphs for t in subgraph.tensors}
    for index, buffer in enumerate(model.buffers):
        if index not in used:
            buffer.data = None
