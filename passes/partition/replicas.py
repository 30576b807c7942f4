"""Data-parallel plans: the whole model replicated on several units, frames dealt in proportion to speed.

A replica is a compute unit that can run every group and whose board holds
the model (a board with several replicas holds one copy per replica). Replica
u alone takes t(u) per frame; replicas on one board contend for its DRAM as
edgec.passes.partition.workers models it (each is charged the other replicas'
traffic of the board). Frame shares are proportional to speed,
w(u) = (1/t'(u)) / sum(1/t'), so every replica is busy all the time and the
period is 1 / sum(1/t'(u)), unless the network is slower: the source sends each
frame's inputs once, to the replica it deals it to, and the sink receives each
result once, so their links carry sum(w(u) x transfer(u)) per frame.

The candidates are the k fastest replicas for k = 1 .. all (adding a slower
replica can only lower the period until the network binds, and k = 1 is the
least latency); the objective picks among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.backends.registry import backend_for
from edgec.costmodel.memory import stage_memory_bytes
from edgec.costmodel.transfer import transfer_ms
from edgec.ir import Program, Replica, Stage, tensor_nbytes
from edgec.passes.partition.build import GroupGraph
from edgec.passes.partition.workers import Worker, board_bandwidth_Bps, traffic_bytes, workers_of


@dataclass(frozen=True)
class ReplicaPlan:
    replicas: tuple[Worker, ...]
    ms: tuple[float, ...]  # per replica, with contention
    weights: tuple[float, ...]
    latency_ms: float
    bottleneck_ms: float
    network_bytes: float  # per frame, over the network


def replica_candidates(program: Program, gg: GroupGraph) -> list[ReplicaPlan]:
    """One plan per k = 1 .. number of units able to hold the whole model, the k fastest of them."""
    cluster = program.cluster
    assert cluster is not None
    groups = list(gg.order)
    memory = stage_memory_bytes(program.nodes_of(groups), program.output_names())
    able: list[tuple[float, Worker]] = []
    for w in workers_of(program):
        ms = sum(program.group_ms(g, w.unit_id) for g in groups)
        if np.isfinite(ms) and memory <= cluster.devices[w.device].memory_bytes:
            able.append((ms, w))
    able.sort(key=lambda x: x[0])
    plans = []
    for k in range(1, len(able) + 1):
        chosen = able[:k]
        per_board: dict[str, int] = {}
        for _, w in chosen:
            per_board[w.device] = per_board.get(w.device, 0) + 1
        if any(c * memory > cluster.devices[d].memory_bytes for d, c in per_board.items()):
            continue
        plans.append(replica_plan(program, [w for _, w in chosen], [t for t, _ in chosen]))
    return plans


def replica_plan(program: Program, replicas: list[Worker], alone_ms: list[float]) -> ReplicaPlan:
    """Predict the whole model replicated on `replicas`, each taking `alone_ms` by itself."""
    cluster = program.cluster
    assert cluster is not None
    tensors = program.graph.tensors()
    in_bytes = sum(tensor_nbytes(t) for t in program.graph.inputs)
    out_bytes = sum(tensor_nbytes(tensors[t.name]) for t in program.graph.outputs)
    traffic = traffic_bytes(program, list(program.groups))
    per_board: dict[str, int] = {}
    for w in replicas:
        per_board[w.device] = per_board.get(w.device, 0) + 1
    ms = [t + (per_board[w.device] - 1) * traffic * 1e3 / board_bandwidth_Bps(program, w.device)
          for t, w in zip(alone_ms, replicas)]
    links_in = [transfer_ms(cluster, in_bytes, cluster.source, w.device) for w in replicas]
    links_out = [transfer_ms(cluster, out_bytes, w.device, cluster.sink) for w in replicas]
    rate = [1.0 / max(m, i, o) for m, i, o in zip(ms, links_in, links_out)]
    weights = [r / sum(rate) for r in rate]
    period = 1.0 / sum(rate)
    source_out = sum(wt * t for wt, t in zip(weights, links_in))
    sink_in = sum(wt * t for wt, t in zip(weights, links_out))
    floors = [c * traffic * 1e3 / board_bandwidth_Bps(program, d) for d, c in per_board.items() if c > 1]
    bottleneck = max([period, source_out, sink_in] + floors)
    latency = max(i + m + o for m, i, o in zip(ms, links_in, links_out))
    net = sum(wt * ((in_bytes if w.device != cluster.source else 0) + (out_bytes if w.device != cluster.sink else 0))
              for wt, w in zip(weights, replicas))
    return ReplicaPlan(tuple(replicas), tuple(ms), tuple(weights), latency, bottleneck, net)


def replica_stages(program: Program, gg: GroupGraph, plan: ReplicaPlan) -> list[Stage]:
    """The plan as one stage (the first replica) holding its other replicas."""
    cluster = program.cluster
    assert cluster is not None
    groups = list(gg.order)
    memory = stage_memory_bytes(program.nodes_of(groups), program.output_names())
    copies = []
    for w, ms, weight in zip(plan.replicas, plan.ms, plan.weights):
        dev = cluster.devices[w.device]
        unit = dev.units[w.unit]
        copies.append(Replica(w.device, w.unit, float(ms), memory, unit.backend,
                              backend_for(dev, unit).default_variant, float(weight)))
    first = copies[0]
    stage = Stage("s0", first.device, first.unit, groups, first.predicted_ms, memory, first.backend, first.variant,
                  weight=first.weight if len(copies) > 1 else None, replicas=copies[1:])
    return [stage]
