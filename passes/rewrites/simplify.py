"""Nodes that do nothing at inference, or have a simpler form: Identity, Dropout, two-input Sum."""

from __future__ import annotations


import onnx_graphsurgeon as gs

from edgec.passes.rewrites.base import (Rule, const_value, describe, is_graph_input, is_graph_output, optional_input,
                                        producer, remove_node, used)



class SumIntoAdd(Rule):
    """Turn a two-input Sum into Add.

    Rewrite cases:
    - Sum(a, b): Add(a, b), same node name and output (both broadcast alike).
    Not applied: any other number of inputs.
    """

    name = "sum-into-add"
    anchor = ("Sum",)
    pattern = "Sum(a, b)"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        if len(node.inputs) != 2:
            return f"{describe(node)} has {len(node.inputs)} inputs"
        return None

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        node.op = "Add"


# -- Identity and Dropout removal ----------------------------------------------------


def _bypass_blocker(graph: gs.Graph, node: gs.Node, x: gs.Tensor, y: gs.Tensor) -> str | None:
    """Why ``y = node(x)`` cannot be replaced by ``x``."""
    if not is_graph_output(graph, y):
        return None
    if is_graph_output(graph, x):
        return f"{describe(node)} input '{x.name}' and output '{y.name}' are both graph outputs"
    if is_graph_input(graph, x):
        return f"{describe(node)} connects graph input '{x.name}' to graph output '{y.name}'"
    if isinstance(x, gs.Constant) or producer(x) is None:
        return f"{describe(node)} output '{y.name}' is a graph output and its input is a constant"
    return None


def _bypass(graph: gs.Graph, node: gs.Node, x: gs.Tensor, y: gs.Tensor) -> None:
    """Remove ``y = node(x)``: readers of ``y`` read ``x``; a graph output ``y`` keeps its name
    by having the producer of ``x`` write ``y`` and the readers of ``x`` read ``y``."""
    remove_node(graph, node)
    if not is_graph_output(graph, y):
        for reader in list(y.outputs):
            for i, t in enumerate(reader.inputs):
                if t is y:
                    reader.inputs[i] = x
        return
    src = producer(x)
    for reader in list(x.outputs):
        for i, t in enumerate(reader.inputs):
            if t is x:
                reader.inputs[i] = y
    for i, t in enumerate(src.outputs):
        if t is x:
            src.outputs[i] = y


class RemoveIdentity(Rule):
    """Remove an Identity; its readers read its input.

    Rewrite cases:
    - y = Identity(x), y not a graph output: readers of y read x;
    - y a graph output: the producer of x writes y instead, and readers of x read y
      (graph output names never change).
    Not applied: y is a graph output and x is a graph input, a graph output or a constant.
    """

    name = "remove-identity"
    anchor = ("Identity",)
    pattern = "Identity(x)"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        return _bypass_blocker(graph, node, node.inputs[0], node.outputs[0])

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        _bypass(graph, node, node.inputs[0], node.outputs[0])


class RemoveDropout(Rule):
    """Remove an inference Dropout (a no-op); its readers read its input.

    Rewrite cases: as remove-identity, for ``y = Dropout(x, ratio?, training_mode?)``.
    Not applied: the mask output is used; training_mode is not a constant false
    (or, before opset 7, is_test is 0); the remove-identity graph output cases.
    """

    name = "remove-dropout"
    anchor = ("Dropout",)
    pattern = "Dropout(x) with training_mode false and mask unused"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        if any(used(graph, t) for t in node.outputs[1:]):
            return f"{describe(node)} mask output is used"
        if "is_test" in node.attrs and not node.attrs["is_test"]:
            return f"{describe(node)} has is_test=0 (training)"
        mode = optional_input(node, 2)
        if mode is not None:
            value = const_value(mode)
            if value is None:
                return f"{describe(node)} training_mode is not constant"
            if bool(value.reshape(-1)[0]):
                return f"{describe(node)} training_mode is true"
        return _bypass_blocker(graph, node, node.inputs[0], node.outputs[0])

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        _bypass(graph, node, node.inputs[0], node.outputs[0])
