"""Graph helpers the rewrite rules share, and the Rule base class."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs



def producer(t: gs.Tensor) -> gs.Node | None:
    return t.inputs[0] if t.inputs else None


def const_value(t: gs.Tensor | None) -> np.ndarray | None:
    """The value of a constant tensor, None for anything else."""
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def is_graph_output(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(o is t for o in graph.outputs)


def is_graph_input(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(i is t for i in graph.inputs)


def optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of ``node``, None when it is absent or left empty."""
    if index >= len(node.inputs) or not node.inputs[index].name:
        return None
    return node.inputs[index]


def used(graph: gs.Graph, t: gs.Tensor) -> bool:
    return bool(t.outputs) or is_graph_output(graph, t)


def fresh_name(graph: gs.Graph, base: str) -> str:
    """A tensor name not yet in the graph, derived from ``base``."""
    taken = graph.tensors().keys()
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def describe(node: gs.Node) -> str:
    return f"{node.op} '{node.name}'"


def sole_consumer_blocker(graph: gs.Graph, node: gs.Node, t: gs.Tensor) -> str | None:
    """Why ``t`` (an output of ``node``) cannot be folded away: more readers, or a graph output."""
    if is_graph_output(graph, t):
        return f"{describe(node)} output '{t.name}' is a graph output"
    readers = len({id(n) for n in t.outputs})
    if readers != 1:
        return f"{describe(node)} output feeds {readers} nodes"
    return None


def node_position(graph: gs.Graph, node: gs.Node) -> int:
    return next(i for i, n in enumerate(graph.nodes) if n is node)


def remove_node(graph: gs.Graph, node: gs.Node) -> None:
    """Disconnect ``node`` and take it out of the graph (by identity: gs nodes compare by value)."""
    node.inputs.clear()
    node.outputs.clear()
    del graph.nodes[node_position(graph, node)]


# -- the rule base -------------------------------------------------------------------


class Rule:
    name: ClassVar[str]
    anchor: ClassVar[tuple[str, ...]]
    pattern: ClassVar[str]

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        raise NotImplementedError

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<rule {self.name}: {self.pattern}>"
