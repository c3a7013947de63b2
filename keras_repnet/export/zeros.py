"""Zero initial values as `FILL` ops instead of stored zeros.

The training file initialises the optimizer's slots (and any zero-initialised
trainable variable) from constants. The converter writes large zero
constants as `FILL` ops (`keras_repnet.compat.unfold_splat_constants`), but
only above a size threshold of its own, and stores the smaller zero
constants. `fill_zero_initial_values(content)` replaces
every remaining zero-filled constant that only `ASSIGN_VARIABLE` reads (an
initial value) with a builtin `FILL` of its shape, run before the
assignments.
"""

import numpy as np

from keras_repnet.export import operators

# Smaller zero constants are left as they are: a FILL op and its shape cost
# about as much as the bytes they would save.
MIN_BYTES = 1024


def fill_zero_initial_values(content: bytes) -> bytes:
    """Returns `content` with stored zero initial values made by `FILL`.

    Args:
        content: bytes. A `.tflite` model.

    Returns:
        The model's bytes; `content` itself when nothing is replaced.
    """
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    schema = flatbuffer_utils.schema_fb
    model, codes = operators.read_object_tree(content)
    replaced = False
    for subgraph in model.subgraphs:
        readers = {}
        for op in subgraph.operators:
            for index in op.inputs:
                readers.setdefault(index, set()).add(codes[op.opcodeIndex])
        zero_filled = [
            index
            for index, tensor in enumerate(subgraph.tensors)
            if tensor.type == schema.TensorType.FLOAT32
            and _stores_zeros(model.buffers[tensor.buffer].data)
            and readers.get(index) == {schema.BuiltinOperator.ASSIGN_VARIABLE}
        ]
        if not zero_filled:
            continue
        fill = operators.operator_code(model, codes, schema.BuiltinOperator.FILL)
        zero = _constant(schema, model, subgraph, np.zeros([], np.float32))
        fills = []
        for index in zero_filled:
            tensor = subgraph.tensors[index]
            shape = _constant(
                schema, model, subgraph, np.asarray(tensor.shape, np.int64)
            )
            tensor.buffer = 0  # LiteRT's empty buffer: computed, not stored
            op = schema.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = fill, [shape, zero], [index]
            fills.append(op)
        subgraph.operators = fills + list(subgraph.operators)
        replaced = True
    if not replaced:
        return content
    _drop_unused_buffers(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _stores_zeros(data):
    return data is not None and len(data) >= MIN_BYTES and not np.any(data)


def _constant(schema, model, subgraph, array):
    """Appends a constant tensor holding `array` (float32 or int64) to
    `subgraph` and returns its index."""
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(array.tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.shape = list(array.shape)
    tensor.type = (
        schema.TensorType.INT64 if array.dtype == np.int64
        else schema.TensorType.FLOAT32
    )
    tensor.buffer = len(model.buffers) - 1
    tensor.name = "zero_fill_shape" if array.ndim else "zero"
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _drop_unused_buffers(model):
    """Empties the buffers no tensor reads any more (indices stay valid)."""
    used = {t.buffer for subgraph in model.subgraphs for t in subgraph.tensors}
    for index, buffer in enumerate(model.buffers):
        if index not in used:
            buffer.data = None
