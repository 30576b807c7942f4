"""Compute units as concurrent pipeline workers: the unit-level problem and the prediction of a unit plan.

Every compute unit of every board is a worker that holds its own stage and
runs it at the same time as the other units of its board (the runtime serves
each unit's stages on their own pinned thread, edgec.runtime.device). A
board's time per frame is then its slowest unit, not the sum of its units.

Contention. The units of one board share its DRAM. A stage's DRAM traffic per
frame is its groups' weights plus activations (the cost pass's param and
activation bytes). While two or more units of a board are busy, each unit's
stage is charged the time the DRAM spends on the other busy units' traffic of
the same frame period (the worst case: their traffic fully overlaps it),

    t'(u) = t(u) + sum over the board's other busy units v of bytes(v) / BW(board)

and the board can go no faster than its total traffic allows:
period >= sum over busy units of bytes / BW(board). BW(board) is the largest
DRAM bandwidth among its units' profiles.

Hand-offs between units of one board are in-memory: pyzmq over loopback at
``INTRA_BOARD_BPS`` (2.0-2.9 GB/s measured, device-facts.md 'Transport'; the
low end), plus a backend's host copy where a unit is a GPU, plus one more
session call (``STAGE_CALL_MS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.backends.registry import backend_for
from edgec.costmodel.resolve import resolve_unit_profile
from edgec.costmodel.transfer import transfer_ms
from edgec.ir import Program
from edgec.passes.partition.build import GroupGraph, build_problem
from edgec.passes.partition.local_partition import STAGE_CALL_MS
from edgec.passes.partition.problem import PartitionProblem

INTRA_BOARD_BPS = 2.0e9


@dataclass(frozen=True)
class Worker:
    device: str
    unit: str

    @property
    def unit_id(self) -> str:
        return f"{self.device}.{self.unit}"


def workers_of(program: Program) -> list[Worker]:
    assert program.cluster is not None
    return [Worker(d.name, u) for d in program.cluster.devices.values() for u in d.units]


def board_bandwidth_Bps(program: Program, device: str) -> float:
    """The board's DRAM bandwidth: the largest among its units' profiles."""
    dev = program.cluster.devices[device]  # type: ignore[union-attr]
    return max(resolve_unit_profile(dev, u).bandwidth_gbs for u in dev.units.values()) * 1e9


def traffic_bytes(program: Program, groups: list[str]) -> float:
    """DRAM bytes a stage of these groups moves per frame: weights plus activations."""
    return float(sum(program.costs[g].param_bytes + program.costs[g].activation_bytes for g in groups))


def handoff_ms(program: Program, nbytes: float, a: Worker, b: Worker) -> float:
    """Time to pass `nbytes` from worker a to worker b: in memory on one board, over the network between two."""
    if a == b or nbytes <= 0:
        return 0.0
    cluster = program.cluster
    assert cluster is not None
    if a.device != b.device:
        return transfer_ms(cluster, int(nbytes), a.device, b.device)
    dev = cluster.devices[a.device]
    copies = backend_for(dev, dev.units[a.unit]).copy_ms(int(nbytes)) + \
        backend_for(dev, dev.units[b.unit]).copy_ms(int(nbytes))
    return STAGE_CALL_MS + nbytes * 1e3 / INTRA_BOARD_BPS + copies


def unit_problem(program: Program, gg: GroupGraph) -> tuple[PartitionProblem, list[Worker]]:
    """The partition problem whose 'devices' are the cluster's compute units.

    A unit's item times are its own (inf where it cannot run the group), plus, on a board of several
    units, the item's DRAM traffic at the board's bandwidth: the search charges every unit of such a
    board as if a sibling were always busy beside it with as much traffic (the contention model's
    bound, kept additive so the exact DP applies); the plan it returns is then predicted exactly
    (`predict_chain`). Every unit may use its whole board's memory; the sum over a board's units is
    checked on the plan. The source and sink are the first unit of their boards.
    """
    cluster = program.cluster
    assert cluster is not None
    boards = build_problem(program, gg)
    ws = workers_of(program)
    n = len(gg.order)
    compute = np.full((n, len(ws)), np.inf)
    for w, worker in enumerate(ws):
        dev = cluster.devices[worker.device]
        shared = len(dev.units) > 1
        bw = board_bandwidth_Bps(program, worker.device) if shared else 0.0
        for i, g in enumerate(gg.order):
            ms = program.group_ms(g, worker.unit_id)
            if shared and np.isfinite(ms):
                ms += traffic_bytes(program, [g]) * 1e3 / bw
            compute[i, w] = ms
    board_index = {d: k for k, d in enumerate(boards.devices)}
    memory = np.array([boards.memory_bytes[board_index[w.device]] for w in ws])
    bandwidth = np.zeros((len(ws), len(ws)))
    latency = np.zeros((len(ws), len(ws)))
    probe = 1e6
    for a, wa in enumerate(ws):
        for b, wb in enumerate(ws):
            if a == b:
                continue
            if wa.device != wb.device:
                bandwidth[a, b] = boards.bandwidth_Bps[board_index[wa.device], board_index[wb.device]]
                latency[a, b] = boards.latency_ms[board_index[wa.device], board_index[wb.device]]
            else:
                per_byte_ms = (handoff_ms(program, probe, wa, wb) - STAGE_CALL_MS) / probe
                bandwidth[a, b] = 1e3 / per_byte_ms
                latency[a, b] = STAGE_CALL_MS
    first = {}
    for w, worker in enumerate(ws):
        first.setdefault(worker.device, w)
    problem = PartitionProblem(
        items=boards.items, devices=tuple(w.unit_id for w in ws), compute_ms=compute,
        weight_bytes=boards.weight_bytes, workspace_bytes=boards.workspace_bytes, memory_bytes=memory,
        bandwidth_Bps=bandwidth, latency_ms=latency, tensors=boards.tensors,
        source=first[cluster.source], sink=first[cluster.sink])
    return problem, ws


@dataclass(frozen=True)
class ChainPrediction:
    stage_ms: tuple[float, ...]  # with contention
    handoff_ms: tuple[float, ...]  # source -> stage 0, stage k -> k+1, last -> sink
    board_floor_ms: dict[str, float]
    latency_ms: float
    bottleneck_ms: float


def predict_chain(program: Program, stages: list[tuple[Worker, list[str], float]],
                  handoff_bytes: list[float]) -> ChainPrediction:
    """Predict a chain of unit stages, each its own worker: (worker, groups, ms alone) per stage, and the
    bytes of each hand-off (len(stages) + 1: from the source, between stages, to the sink)."""
    cluster = program.cluster
    assert cluster is not None
    busy: dict[str, list[int]] = {}
    for k, (w, _, _) in enumerate(stages):
        busy.setdefault(w.device, []).append(k)
    traffic = [traffic_bytes(program, groups) for _, groups, _ in stages]
    ms = []
    floors: dict[str, float] = {}
    for k, (w, _, alone) in enumerate(stages):
        mates = [j for j in busy[w.device] if j != k and stages[j][0] != w]
        if mates:
            bw = board_bandwidth_Bps(program, w.device)
            ms.append(alone + sum(traffic[j] for j in mates) * 1e3 / bw)
            floors[w.device] = sum(traffic[j] for j in busy[w.device]) * 1e3 / bw
        else:
            ms.append(alone)
    src = Worker(cluster.source, next(iter(cluster.devices[cluster.source].units)))
    dst = Worker(cluster.sink, next(iter(cluster.devices[cluster.sink].units)))
    chain = [src] + [w for w, _, _ in stages] + [dst]
    hands = [handoff_ms(program, handoff_bytes[k], chain[k], chain[k + 1]) for k in range(len(chain) - 1)]
    # one worker holding several stages (a unit used twice) runs them one after another
    per_worker: dict[Worker, float] = {}
    for k, (w, _, _) in enumerate(stages):
        per_worker[w] = per_worker.get(w, 0.0) + ms[k]
    latency = sum(ms) + sum(hands)
    bottleneck = max(list(per_worker.values()) + hands + list(floors.values()))
    return ChainPrediction(tuple(ms), tuple(hands), floors, float(latency), float(bottleneck))
