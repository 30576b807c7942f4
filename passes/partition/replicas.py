"""Data-parallel plans: the whole model replicated on several units, frames dealt in proportion to speed.

A replica is a compute unit that can run every group and whose board holds
the model (a board with several replicas holds one copy per replica). The
candidates are the k fastest replicas for k = 1 .. all: adding a slower
replica can only lower the period until the network or a board's DRAM binds,
and k = 1 has the least latency; the objective picks among them. Each is
predicted as one step of replicas (edgec.passes.partition.workers.predict_steps:
weights by speed, the source's and sink's links, contention on shared boards).
"""

from __future__ import annotations

import numpy as np

from edgec.backends.registry import backend_for
from edgec.costmodel.memory import stage_memory_bytes
from edgec.ir import Program, Replica, Stage
from edgec.passes.partition.build import GroupGraph
from edgec.passes.partition.workers import Worker, workers_of


def replica_sets(program: Program, gg: GroupGraph) -> list[list[Worker]]:
    """The k fastest units able to hold the whole model, for k = 1 .. all (sets a board cannot hold left out)."""
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
    sets = []
    for k in range(1, len(able) + 1):
        chosen = [w for _, w in able[:k]]
        per_board: dict[str, int] = {}
        for w in chosen:
            per_board[w.device] = per_board.get(w.device, 0) + 1
        if all(c * memory <= cluster.devices[d].memory_bytes for d, c in per_board.items()):
            sets.append(chosen)
    return sets


def replica_stages(program: Program, gg: GroupGraph, workers: list[Worker]) -> list[Stage]:
    """The whole model as one stage on the first worker holding its copies on the others (weights and
    times are set when the plan is predicted)."""
    cluster = program.cluster
    assert cluster is not None
    groups = list(gg.order)
    memory = stage_memory_bytes(program.nodes_of(groups), program.output_names())
    copies = []
    for w in workers:
        dev = cluster.devices[w.device]
        unit = dev.units[w.unit]
        ms = float(sum(program.group_ms(g, w.unit_id) for g in groups))
        copies.append(Replica(w.device, w.unit, ms, memory, unit.backend, backend_for(dev, unit).default_variant,
                              1.0 / len(workers)))
    first = copies[0]
    return [Stage("s0", first.device, first.unit, groups, first.predicted_ms, memory, first.backend, first.variant,
                  weight=first.weight if len(copies) > 1 else None, replicas=copies[1:])]
