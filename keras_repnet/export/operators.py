"""Reads which operators a `.tflite` flatbuffer uses, per signature.

`ai_edge_litert` (its flatbuffer schema) is imported on first use, not
with `keras_repnet`.
"""

import functools
import os


@functools.cache
def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


@functools.cache
def _builtin_names():
    return {
        code: name
        for name, code in vars(_schema().BuiltinOperator).items()
        if not name.startswith("_")
    }


def read_object_tree(content):
    """A `.tflite` model's mutable object tree (`ModelT`) for the export's
    rewrites, and the builtin operator of each of its operator codes."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    # Codes above 127 live in `builtinCode`, older ones in the deprecated
    # byte; the larger of the two is the real one.
    codes = [
        max(code.builtinCode, code.deprecatedBuiltinCode)
        for code in model.operatorCodes
    ]
    return model, codes


def operator_code(model, codes, builtin, version=1):
    """The index of `builtin`'s operator code in `model` (an object tree
    from `read_object_tree`, with its `codes`, kept in step), added at
    `version` if missing."""
    if builtin in codes:
        return codes.index(builtin)
    from ai_edge_litert.tools import flatbuffer_utils

    code = flatbuffer_utils.schema_fb.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    codes.append(builtin)
    return len(codes) - 1


def _read(model):
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            model = f.read()
    return _schema().Model.GetRootAs(bytes(model), 0)


def _operator_names(flatbuffer):
    """Name of every operator code: the builtin name or the custom code."""
    names = []
    for index in range(flatbuffer.OperatorCodesLength()):
        code = flatbuffer.OperatorCodes(index)
        # Codes above 127 live in `BuiltinCode`, older ones in the deprecated
        # byte; the larger of the two is the real one.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == _schema().BuiltinOperator.CUSTOM:
            names.append(code.CustomCode().decode())
        else:
            names.append(_builtin_names().get(builtin, f"BUILTIN_{builtin}"))
    return names


def operators(model, signature=None) -> list[str]:
    """Sorted names of the operators in a `.tflite` model.

    Builtin operators are named as in the schema (`CONV_2D`); custom
    operators by their custom code (select TensorFlow ops appear as
    `FlexConv2DBackpropFilter`, for example).

    Args:
        model: bytes of a flatbuffer, or a path to a `.tflite` file.
        signature: str. Only count the operators of the subgraph that runs
            this signature (not the subgraphs it may call). Defaults to
            `None`: every subgraph.

    Returns:
        A sorted list of unique operator names.
    """
    flatbuffer = _read(model)
    names = _operator_names(flatbuffer)
    if signature is None:
        subgraphs = range(flatbuffer.SubgraphsLength())
    else:
        subgraphs = [_signature_subgraph(flatbuffer, signature)]
    used = set()
    for index in subgraphs:
        subgraph = flatbuffer.Subgraphs(index)
        for op in range(subgraph.OperatorsLength()):
            used.add(names[subgraph.Operators(op).OpcodeIndex()])
    return sorted(used)


def signature_subgraph(model, signature):
    """The subgraph that runs `signature`, as the flatbuffer reads it.

    Args:
        model: bytes of a flatbuffer, or a path to a `.tflite` file.
        signature: str. A signature key, e.g. `"train"`.

    Returns:
        `(flatbuffer, subgraph, names)`: the `Model` and the `SubGraph`
        objects of LiteRT's flatbuffer schema, and the operator name of each
        of the subgraph's ops, in the order LiteRT runs them.
    """
    flatbuffer = _read(model)
    codes = _operator_names(flatbuffer)
    subgraph = flatbuffer.Subgraphs(_signature_subgraph(flatbuffer, signature))
    names = [
        codes[subgraph.Operators(op).OpcodeIndex()]
        for op in range(subgraph.OperatorsLength())
    ]
    return flatbuffer, subgraph, names


def non_builtin_operators(model, signature=None) -> list[str]:
    """Sorted names of the custom and select-TF (Flex) operators of a model.

    Args:
        model: bytes of a flatbuffer, or a path to a `.tflite` file.
        signature: str. As in `operators`. Defaults to `None`.

    Returns:
        The names among `operators(model, signature)` that a runtime with
        only the builtin operators cannot run (e.g. `FlexReluGrad`).
    """
    builtin = set(_builtin_names().values())
    return [name for name in operators(model, signature) if name not in builtin]


def signatures(model) -> list[str]:
    """Keys of the signatures of a `.tflite` model, in file order."""
    return _signature_keys(_read(model))


def _signature_subgraph(flatbuffer, key):
    for index in range(flatbuffer.SignatureDefsLength()):
        signature = flatbuffer.SignatureDefs(index)
        if signature.SignatureKey().decode() == key:
            return signature.SubgraphIndex()
    raise ValueError(
        f"No signature {key!r} in the model. Received a model with "
        f"signatures {_signature_keys(flatbuffer)}."
    )


def _signature_keys(flatbuffer):
    return [
        flatbuffer.SignatureDefs(i).SignatureKey().decode()
        for i in range(flatbuffer.SignatureDefsLength())
    ]
