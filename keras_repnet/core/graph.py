"""Walking a functional Keras model's graph: the one walker of the package.

`walk(model)` gives the tensors in topological order with the node that
produces each and the nodes that read each; `topological_nodes(model)` the
nodes themselves. Taps, the export rewrite and the memory profiler all read
the graph through these.
"""

import contextlib
import sys

import keras

from keras_repnet import compat

producer = compat.producer
producer_node = compat.producer_node


def walk(model: keras.Model) -> tuple[list, dict, dict]:
    """The tensors on paths to `model`'s outputs, and their nodes.

    Returns:
        `(order, producer, consumers)`: the tensors in topological order
        (depth first from the outputs, each after its node's inputs),
        `{id(tensor): node that outputs it}` and `{id(tensor): [nodes that
        read it]}`.
    """
    producer, consumers, order, seen = {}, {}, [], set()
    stack = [(tensor, False) for tensor in model.outputs]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        node = producer_node(tensor)
        producer[id(tensor)] = node
        for parent in node.input_tensors:
            consumers.setdefault(id(parent), []).append(node)
            if id(parent) not in seen:
                stack.append((parent, False))
    return order, producer, consumers


def topological_nodes(model: keras.Model) -> list:
    """`model`'s nodes on paths to its outputs, each after the nodes it
    reads from."""
    order, producer, _ = walk(model)
    nodes, seen = [], set()
    for tensor in order:
        node = producer[id(tensor)]
        if id(node) not in seen:
            seen.add(id(node))
            nodes.append(node)
    return nodes


# Python frames that Keras' functional graph walk (`map_graph`, recursive
# in the graph's depth) may take: 1,263 layers (EfficientNetV2L with its
# shifts) pass Python's default limit of 1000.
DEEP_GRAPH_RECURSION_LIMIT = 20_000


@contextlib.contextmanager
def deep_graph_recursion():
    """Raises Python's recursion limit to `DEEP_GRAPH_RECURSION_LIMIT` while
    Keras builds a functional model (never lowers it), and puts it back
    unless something else changed it meanwhile."""
    previous = sys.getrecursionlimit()
    raised = max(previous, DEEP_GRAPH_RECURSION_LIMIT)
    sys.setrecursionlimit(raised)
    try:
        yield
    finally:
        if sys.getrecursionlimit() == raised:
            sys.setrecursionlimit(previous)
