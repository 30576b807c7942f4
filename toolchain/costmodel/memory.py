"""What a stage needs resident: its weights plus the peak of its live activations."""

from __future__ import annotations

from typing import Iterable, Sequence

import onnx_graphsurgeon as gs

from edgec.ir import tensor_nbytes
from edgec.weights import constant_nbytes


def stage_memory_bytes(nodes: Sequence[gs.Node], graph_outputs: Iterable[str]) -> int:
    """Bytes a stage of `nodes` (in graph order) needs resident: its weights plus the peak of live activations.

    The stage runs its nodes in graph (topological) order. A tensor is live from
    when it arrives (stage inputs) or is produced until its last reader in the
    stage; tensors the stage hands on (read by later stages or graph outputs)
    stay live to the end.
    """
    nodes = list(nodes)
    inside = {id(n) for n in nodes}
    graph_outputs = set(graph_outputs)

    weights: dict[str, int] = {}
    size: dict[str, int] = {}
    last_use: dict[str, int] = {}
    born: dict[str, int] = {}
    end = len(nodes)
    for step, node in enumerate(nodes):
        for t in node.inputs:
            if isinstance(t, gs.Constant):
                weights.setdefault(t.name or str(id(t)), constant_nbytes(t))
            elif t.name:
                size.setdefault(t.name, tensor_nbytes(t))
                born.setdefault(t.name, 0)  # received from outside: resident from the start
                last_use[t.name] = max(last_use.get(t.name, step), step)
        for t in node.outputs:
            if not t.name:
                continue
            size[t.name] = tensor_nbytes(t)
            born[t.name] = step
            leaves = t.name in graph_outputs or any(id(c) not in inside for c in t.outputs)
            last_use[t.name] = end if leaves else max(last_use.get(t.name, step), step)
    for name, b in born.items():  # a tensor produced in the stage and read later in it
        last_use[name] = max(last_use.get(name, b), b)
    peak = 0
    for step in range(end):
        live = sum(size[n] for n in size if born[n] <= step <= last_use[n])
        peak = max(peak, live)
    return sum(weights.values()) + peak


def group_output_bytes(nodes: Sequence[gs.Node], group_of: dict[str, str]) -> dict[str, int]:
    """Per group: bytes of the tensors it produces that are read outside it or are graph outputs."""
    out: dict[str, int] = {}
    for node in nodes:
        group = group_of.get(node.name, node.name)
        out.setdefault(group, 0)
        for t in node.outputs:
            if not t.name:
                continue
            readers = {group_of.get(c.name, c.name) for c in t.outputs}
            if not t.outputs or readers - {group}:
                out[group] += tensor_nbytes(t)
    return out
