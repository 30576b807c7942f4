"""What crosses a boundary: where each tensor is made and read, over an order of fusion groups.

One analysis serves every question of the form "which tensors are live at this
cut": the global partition's problem, the local partition's unit boundaries,
and codegen's stage inputs, outputs and transfers. A tensor made at position
p and last read at position q (the end, for a graph output) is live at every
boundary b with p < b <= q; graph inputs are made at position -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx_graphsurgeon as gs

from edgec.ir import Program, consumed_tensors, tensor_nbytes


@dataclass(frozen=True)
class TensorUse:
    """One variable tensor between groups."""

    producer: str | None  # the group that makes it; None for a graph input
    consumers: frozenset[str]  # the other groups that read it
    is_output: bool  # a graph output
    nbytes: int
    dtype: str  # numpy dtype name


def tensor_uses(graph: gs.Graph, group_of: Mapping[str, str]) -> dict[str, TensorUse]:
    """Every variable tensor of the graph: graph inputs first, then node outputs in node order."""
    outputs = {t.name for t in graph.outputs}
    made: dict[str, tuple[str | None, gs.Tensor]] = {t.name: (None, t) for t in graph.inputs}
    for node in graph.nodes:
        for t in node.outputs:
            if t.name:
                made[t.name] = (group_of.get(node.name, node.name), t)
    readers: dict[str, set[str]] = {name: set() for name in made}
    for node in graph.nodes:
        group = group_of.get(node.name, node.name)
        for t in consumed_tensors(node):
            if t.name in made and made[t.name][0] != group:
                readers[t.name].add(group)
    return {name: TensorUse(producer, frozenset(readers[name]), name in outputs, tensor_nbytes(t), _dtype(t))
            for name, (producer, t) in made.items()}


def live_at_boundaries(uses: Mapping[str, TensorUse], position: Mapping[str, int], n: int) -> list[list[str]]:
    """Per boundary b = 0..n between n positions (groups mapped by `position`): the tensors live there, in
    the order of `uses`. Boundary 0 is before the first position (what the source sends), n after the last."""
    lives: list[list[str]] = [[] for _ in range(n + 1)]
    for name, use in uses.items():
        made = -1 if use.producer is None else position[use.producer]
        last = max([position[c] for c in use.consumers] + ([n] if use.is_output else []), default=made)
        for b in range(made + 1, last + 1):
            lives[b].append(name)
    return lives


def stage_boundaries(program: Program) -> list[list[str]]:
    """Tensors crossing each stage boundary, in execution order.

    Entry k lists what stage k receives (entry 0: the graph inputs the stages
    read, from the source); the last entry is what the sink receives (the graph
    outputs). Skip connections are live at every boundary they span, so they are
    relayed stage to stage.
    """
    position = {g: k for k, s in enumerate(program.stages) for g in s.groups}
    return live_at_boundaries(tensor_uses(program.graph, program.group_of()), position, len(program.stages))


def hand_offs(program: Program, lives: list[list[str]] | None = None) -> list[tuple[int, list[str], int]]:
    """The stage boundaries where the data changes device: (boundary k as in :func:`stage_boundaries`, the
    tensors sent, their bytes). Boundary 0 is the source to the first stage, the last one the last stage
    to the sink. `lives`: :func:`stage_boundaries` where the caller has it already."""
    assert program.cluster is not None
    lives = stage_boundaries(program) if lives is None else lives
    chain = [program.cluster.source] + [s.device for s in program.stages] + [program.cluster.sink]
    tensors = program.graph.tensors()
    return [(k, names, sum(tensor_nbytes(tensors[t]) for t in names))
            for k, names in enumerate(lives) if names and chain[k] != chain[k + 1]]


def _dtype(t: gs.Tensor) -> str:
    try:
        return np.dtype(t.dtype).name
    except TypeError:
        return str(t.dtype)
