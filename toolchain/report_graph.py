"""The model graph of a plan, for `edgec report`: fusion groups as boxes coloured by stage, cut tensors marked.

Boxes are fusion groups (or, when the source model is not at hand, single
nodes of the sub-models); a model with more than `MAX_BOXES` of them is
condensed: consecutive groups (in topological order) of one stage merge into
one box. Layout is layered: a box's column is its topological generation
(networkx), so data flows left to right.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import networkx as nx

MAX_BOXES = 240


@dataclass
class Box:
    name: str
    stage: str | None  # None: no stage holds it (e.g. a node a backend rewrote)
    ops: Counter = field(default_factory=Counter)
    members: list[str] = field(default_factory=list)  # group (or node) names

    @property
    def label(self) -> str:
        ops = "+".join(op if n == 1 else f"{op}x{n}" for op, n in self.ops.most_common(3))
        return ops + ("+..." if len(self.ops) > 3 else "")

    @property
    def title(self) -> str:
        head = self.members[0] if len(self.members) == 1 else f"{self.members[0]}..{self.members[-1]}"
        return f"{head} ({len(self.members)} groups)" if len(self.members) > 1 else head


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    tensors: tuple[str, ...]
    cut: bool  # the tensors cross from one stage to another
    nbytes: int


@dataclass
class ModelGraph:
    boxes: dict[str, Box]
    edges: list[Edge]
    condensed: bool
    total_groups: int
    columns: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphNode:
    """One ONNX node as the graph view needs it."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def build(nodes: Sequence[GraphNode], group_of: Mapping[str, str], stage_of: Mapping[str, str],
          tensor_bytes: Mapping[str, int], max_boxes: int = MAX_BOXES) -> ModelGraph:
    """Boxes and edges of the graph whose `nodes` fall in groups `group_of` (node -> group; a node missing
    from it is its own group), placed by `stage_of` (node -> stage)."""
    producer = {out: n.name for n in nodes for out in n.outputs}
    group = {n.name: group_of.get(n.name, n.name) for n in nodes}
    ops: dict[str, Counter] = {}
    stages: dict[str, Counter] = {}
    dag = nx.DiGraph()
    flows: dict[tuple[str, str], set[str]] = {}
    for n in nodes:
        g = group[n.name]
        dag.add_node(g)
        ops.setdefault(g, Counter())[n.op] += 1
        if n.name in stage_of:
            stages.setdefault(g, Counter())[stage_of[n.name]] += 1
        for t in n.inputs:
            if t in producer and group[producer[t]] != g:
                src = group[producer[t]]
                dag.add_edge(src, g)
                flows.setdefault((src, g), set()).add(t)
    order = list(nx.lexicographical_topological_sort(dag, key=_natural))
    stage_of_group = {g: (stages[g].most_common(1)[0][0] if g in stages else None) for g in order}
    per_box = max(1, math.ceil(len(order) / max_boxes))
    box_of: dict[str, str] = {}
    boxes: dict[str, Box] = {}
    current: Box | None = None
    for g in order:
        st = stage_of_group[g]
        if current is None or current.stage != st or len(current.members) >= per_box:
            current = Box(f"b{len(boxes)}" if per_box > 1 else g, st)
            boxes[current.name] = current
        current.members.append(g)
        current.ops.update(ops[g])
        box_of[g] = current.name
    merged: dict[tuple[str, str], set[str]] = {}
    for (src, dst), tensors in flows.items():
        if box_of[src] != box_of[dst]:
            merged.setdefault((box_of[src], box_of[dst]), set()).update(tensors)
    edges = []
    for (src, dst), tensors in merged.items():
        names = tuple(sorted(tensors, key=_natural))
        cut = boxes[src].stage != boxes[dst].stage
        edges.append(Edge(src, dst, names, cut, sum(tensor_bytes.get(t, 0) for t in names)))
    graph = ModelGraph(boxes, edges, per_box > 1, len(order))
    _layout(graph)
    return graph


def _layout(graph: ModelGraph) -> None:
    dag = nx.DiGraph()
    dag.add_nodes_from(graph.boxes)
    dag.add_edges_from((e.src, e.dst) for e in graph.edges)
    index = {name: i for i, name in enumerate(graph.boxes)}
    for column, generation in enumerate(nx.topological_generations(dag)):
        for row, name in enumerate(sorted(generation, key=index.__getitem__)):
            graph.columns[name] = column
            graph.rows[name] = row


def _natural(name: str) -> tuple:
    """'g10' after 'g9': digits compare as numbers."""
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    return (head, int(tail) if tail else -1, name)
