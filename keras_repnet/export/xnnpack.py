"""Rewrites of a converted model that let XNNPACK run more of it.

LiteRT hands the ops XNNPACK supports to XNNPACK and runs the others with
its builtin kernels: mostly single-threaded reference code, and every one
of them splits XNNPACK's partition of the graph, which turns the reshapes
at its edges into copies. Both rewrites below keep the model's numbers.

- `quantize_masks`: the builtin gradient rules
  (`keras_repnet.backward.builtin`) keep each ReLU's mask, a `{0, 1}`
  float (and the sign rule's masks, the squeeze-excite gates' rounded
  features: integers in [-127, 127]), as int8: a `CAST` to int8 in the
  forward pass and a `CAST` back in the backward pass, both named
  `INT8_MASK`. For these values a `QUANTIZE` with scale 1 stores the
  same bytes and a `DEQUANTIZE` reads them back exactly, and XNNPACK runs
  both (a `QUANTIZE` also absorbs the mask's clamp to 1, see the
  function).
- `split_add_n`: TensorFlow sums the gradients of a tensor with several
  consumers (a residual block's input) with `AddN`, LiteRT's `ADD_N`, which
  XNNPACK does not take; a chain of `ADD`s adds in the same order.
- `broadcast_tiles`: the gradient of a mean (batch norm statistics, global
  pooling) is a `TILE` of a `[1, 1, 1, C]` tensor, which XNNPACK does not
  take; a `MUL` by ones broadcasts it to the same values.
"""

import numpy as np

from keras_repnet.backward.builtin import INT8_MASK
from keras_repnet.export import operators


def quantize_masks(content: bytes) -> bytes:
    """Returns `content` with its int8 mask casts as QUANTIZE/DEQUANTIZE.

    The casts are those named `INT8_MASK`: a `CAST` of floats to int8 in
    general truncates where a `QUANTIZE` rounds, so no other cast changes.

    A mask cast of `min(c, 1)`, `c` a count `>= 0` (the rules' `ceil`),
    becomes a `QUANTIZE` of `c` itself with zero point 126: int8 saturates
    at 127, so the stored bytes are `126 + min(c, 1)` and the `DEQUANTIZE`
    (same zero point) reads `min(c, 1)` back, one pass fewer.

    Args:
        content: bytes. A `.tflite` model.

    Returns:
        The model's bytes; `content` itself when it has no mask casts.
    """
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    schema = flatbuffer_utils.schema_fb
    model, codes = operators.read_object_tree(content)
    types, builtins = schema.TensorType, schema.BuiltinOperator
    changed = False
    for subgraph in model.subgraphs:
        tensors = subgraph.tensors
        producers = {o: op for op in subgraph.operators for o in op.outputs}
        readers = {}
        for op in subgraph.operators:
            for i in op.inputs:
                readers.setdefault(i, []).append(op)
        reads, dropped = [], []
        for op in subgraph.operators:
            if codes[op.opcodeIndex] != builtins.CAST:
                continue
            source, target = tensors[op.inputs[0]], tensors[op.outputs[0]]
            if INT8_MASK.encode() not in (target.name or b""):
                continue
            pair = (source.type, target.type)
            if pair == (types.FLOAT32, types.INT8):
                builtin, mask = builtins.QUANTIZE, target
                zero_point = 0
                clamp = producers.get(op.inputs[0])
                if (
                    clamp is not None
                    and codes[clamp.opcodeIndex] == builtins.MINIMUM
                    and len(readers[op.inputs[0]]) == 1
                    and _is_one(model, tensors[clamp.inputs[1]])
                ):
                    op.inputs = [clamp.inputs[0]]
                    dropped.append(clamp)
                    zero_point = 126
                mask.quantization = _unit_scale(schema, zero_point)
            elif pair == (types.INT8, types.FLOAT32):
                builtin = builtins.DEQUANTIZE
                reads.append(op)
            else:
                continue
            op.opcodeIndex = operators.operator_code(model, codes, builtin, version=2)
            op.builtinOptionsType = schema.BuiltinOptions.NONE
            op.builtinOptions = None
            changed = True
        for op in dropped:
            subgraph.operators.remove(op)
        _postpone(subgraph, reads)
    if not changed:
        return content
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def split_add_n(content: bytes) -> bytes:
    """Returns `content` with every float `ADD_N` a chain of `ADD`s.

    LiteRT's `ADD_N` kernel copies its first input and adds the others in
    order; the chain `((a + b) + c) + ...` computes the same numbers.

    Args:
        content: bytes. A `.tflite` model.

    Returns:
        The model's bytes; `content` itself when it has no `ADD_N`.
    """
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    schema = flatbuffer_utils.schema_fb
    model, codes = operators.read_object_tree(content)
    builtins = schema.BuiltinOperator
    changed = False
    for subgraph in model.subgraphs:
        rewritten = []
        for op in subgraph.operators:
            output = subgraph.tensors[op.outputs[0]] if len(op.outputs) else None
            if (
                codes[op.opcodeIndex] != builtins.ADD_N
                or output.type != schema.TensorType.FLOAT32
                or any(
                    list(subgraph.tensors[i].shape) != list(output.shape)
                    for i in op.inputs
                )
            ):
                rewritten.append(op)
                continue
            add = operators.operator_code(model, codes, builtins.ADD)
            total = op.inputs[0]
            for count, term in enumerate(op.inputs[1:], 2):
                if count == len(op.inputs):
                    result = op.outputs[0]
                else:  # An intermediate sum, a new tensor.
                    partial = schema.TensorT()
                    partial.shape = list(output.shape)
                    partial.type = output.type
                    partial.buffer = 0
                    partial.name = (output.name or b"") + f"_sum{count}".encode()
                    subgraph.tensors.append(partial)
                    result = len(subgraph.tensors) - 1
                step = schema.OperatorT()
                step.opcodeIndex = add
                step.inputs, step.outputs = [total, term], [result]
                step.builtinOptionsType = schema.BuiltinOptions.AddOptions
                step.builtinOptions = schema.AddOptionsT()
                rewritten.append(step)
                total = result
            changed = True
        subgraph.operators = rewritten
    if not changed:
        return content
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def broadcast_tiles(content: bytes) -> bytes:
    """Returns `content` with every float `TILE` that only repeats axes of
    length 1 a `MUL` by a constant of ones (of length 1 where the input
    keeps its length): the same values, by broadcasting.

    Args:
        content: bytes. A `.tflite` model.

    Returns:
        The model's bytes; `content` itself when it has no such `TILE`.
    """
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    schema = flatbuffer_utils.schema_fb
    model, codes = operators.read_object_tree(content)
    changed = False
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.TILE:
                continue
            source = subgraph.tensors[op.inputs[0]]
            target = subgraph.tensors[op.outputs[0]]
            inner, outer = list(source.shape), list(target.shape)
            if (
                source.type != schema.TensorType.FLOAT32
                or len(inner) != len(outer)
                or any(i not in (1, o) for i, o in zip(inner, outer))
            ):
                continue
            shape = [o if i == 1 else 1 for i, o in zip(inner, outer)]
            ones = schema.BufferT()
            ones.data = np.frombuffer(np.ones(shape, np.float32).tobytes(), np.uint8)
            model.buffers.append(ones)
            tensor = schema.TensorT()
            tensor.shape, tensor.type = shape, schema.TensorType.FLOAT32
            tensor.buffer = len(model.buffers) - 1
            tensor.name = (target.name or b"") + b"_ones"
            subgraph.tensors.append(tensor)
            op.inputs = [op.inputs[0], len(subgraph.tensors) - 1]
            op.opcodeIndex = operators.operator_code(
                model, codes, schema.BuiltinOperator.MUL
            )
            op.builtinOptionsType = schema.BuiltinOptions.MulOptions
            op.builtinOptions = schema.MulOptionsT()
            changed = True
    if not changed:
        return content
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _is_one(model, tensor):
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) == 4 and (
        np.frombuffer(bytes(data), np.float32)[0] == 1.0
    )


def _postpone(subgraph, ops):
    """Moves each of `ops` to just before the first op that reads its
    output: the converter hoists a cast that does not depend on the
    gradient into the forward pass, where its float output would stay
    alive until the backward pass reads it (LiteRT runs ops in file order
    and plans the arena by it)."""
    for op in ops:
        subgraph.operators.remove(op)
        output = op.outputs[0]
        first = next(
            i for i, reader in enumerate(subgraph.operators)
            if output in list(reader.inputs)
        )
        subgraph.operators.insert(first, op)


def _unit_scale(schema, zero_point):
    quantization = schema.QuantizationParametersT()
    quantization.scale = np.ones([1], np.float32)
    quantization.zeroPoint = np.full([1], zero_point, np.int64)
    quantization.quantizedDimension = 0
    return quantization

