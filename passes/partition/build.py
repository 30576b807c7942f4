"""From a Program to a PartitionProblem, and from a Plan back to stages.

The problem's items are the fusion groups in a topological order chosen so
that few bytes cross many positions (`order.order_items`); its devices are the
cluster's boards, each costed at its fastest unit for the group (the local
partition then splits a board's segment over its units).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from edgec.costmodel.transfer import transfer_rate
from edgec.ir import Program, tensor_nbytes
from edgec.weights import constant_nbytes
from edgec.liveness import TensorUse, tensor_uses
from edgec.passes.partition.order import order_items
from edgec.passes.partition.problem import PartitionProblem, Tensor


@dataclass
class GroupGraph:
    """The groups of a program as a DAG: members in a partition-friendly order, and the tensors between groups."""

    order: list[str]
    members: dict[str, list[gs.Node]]
    tensors: dict[str, TensorUse]


def group_graph(program: Program) -> GroupGraph:
    group_of = program.group_of()
    members: dict[str, list[gs.Node]] = {}
    for node in program.graph.nodes:
        members.setdefault(group_of[node.name], []).append(node)
    tensors = tensor_uses(program.graph, group_of)
    edges = [(u.producer, c, u.nbytes) for u in tensors.values() if u.producer is not None for c in u.consumers]
    order = order_items(list(members), edges)
    return GroupGraph(order, members, tensors)


def build_problem(program: Program, gg: GroupGraph) -> PartitionProblem:
    """The problem of cutting the program's groups across its cluster's boards (costs from the cost pass)."""
    cluster = program.cluster
    assert cluster is not None
    devices = list(cluster.devices.values())
    index = {g: i for i, g in enumerate(gg.order)}
    n = len(gg.order)
    compute = np.full((n, len(devices)), np.inf)
    for i, g in enumerate(gg.order):
        for d, dev in enumerate(devices):
            compute[i, d] = min(program.group_ms(g, f"{dev.name}.{u}") for u in dev.units)
    weights = np.zeros(n, dtype=np.int64)
    workspace = np.zeros(n, dtype=np.int64)
    for i, g in enumerate(gg.order):
        consts: dict[str, int] = {}
        io: dict[str, int] = {}
        for node in gg.members[g]:
            for t in list(node.inputs) + list(node.outputs):
                if isinstance(t, gs.Constant):
                    consts[t.name] = constant_nbytes(t)
                elif t.name:
                    io[t.name] = tensor_nbytes(t)
        weights[i] = sum(consts.values())
        workspace[i] = sum(io.values())
    tensors = []
    for name, use in gg.tensors.items():
        consumers = sorted(index[c] for c in use.consumers)
        if use.is_output:
            consumers.append(n)
        if consumers:
            producer = index[use.producer] if use.producer is not None else -1
            tensors.append(Tensor(name, use.nbytes, producer, tuple(consumers)))
    bandwidth, latency = link_matrices(program)
    names = [d.name for d in devices]
    return PartitionProblem(
        items=tuple(gg.order), devices=tuple(names), compute_ms=compute, weight_bytes=weights,
        workspace_bytes=workspace, memory_bytes=np.array([d.memory_bytes for d in devices], dtype=np.float64),
        bandwidth_Bps=bandwidth, latency_ms=latency, tensors=tuple(tensors),
        source=names.index(cluster.source), sink=names.index(cluster.sink))


def link_matrices(program: Program) -> tuple[np.ndarray, np.ndarray]:
    """Bytes per second and latency ms of a transfer between each ordered pair of the cluster's boards
    (:func:`edgec.costmodel.transfer.transfer_rate`: link plus serialization); 0 where no link joins them."""
    names = list(program.cluster.devices)  # type: ignore[union-attr]
    bandwidth = np.zeros((len(names), len(names)))
    latency = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a != b:
                bandwidth[i, j], latency[i, j] = transfer_rate(program.cluster, a, b)
    return bandwidth, latency
