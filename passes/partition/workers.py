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
from edgec.passes.partition.problem import PartitionProblem

INTRA_BOARD_BPS = 2.0e9
# a stage's fixed cost per frame: ONNX Runtime's call (order of 50 us on ARM) plus the runtime's hand-off into the
# stage (decode, wake the stage's worker, encode): 0.2-0.5 ms each way, traced in `edgec run --local` on this
# project's x86 host (a slice step of ResNet-50 spent 1.5-2 ms on its two hand-offs); the boards' cores are slower
STAGE_CALL_MS = 0.5


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


def unit_problem(program: Program, gg: GroupGraph, contention: bool = True) -> tuple[PartitionProblem, list[Worker]]:
    """The partition problem whose 'devices' are the cluster's compute units.

    A unit's item times are its own (inf where it cannot run the group), plus, with `contention`, on a
    board of several units, the item's DRAM traffic at the board's bandwidth: every unit of such a
    board is charged as if a sibling were always busy beside it with as much traffic (an upper bound
    of the contention model, kept additive so the exact DP applies); without, no contention at all (a
    lower bound). The plan the DP returns is then predicted exactly (`predict_steps`). Every unit may
    use its whole board's memory; the sum over a board's units is checked on the plan. The source and
    sink are the first unit of their boards.
    """
    cluster = program.cluster
    assert cluster is not None
    boards = build_problem(program, gg)
    ws = workers_of(program)
    n = len(gg.order)
    compute = np.full((n, len(ws)), np.inf)
    for w, worker in enumerate(ws):
        dev = cluster.devices[worker.device]
        shared = contention and len(dev.units) > 1
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
class Copy:
    """One worker's copy of a step: the groups it runs and its time per frame alone."""

    worker: Worker
    groups: list[str]
    alone_ms: float


@dataclass(frozen=True)
class StepsPrediction:
    ms: tuple[tuple[float, ...], ...]  # per step, per copy: with contention
    weights: tuple[tuple[float, ...], ...]  # per step, per copy: its share of the frames
    handoff_ms: tuple[float, ...]  # per hand-off (source -> step 0, ..., last step -> sink): the slowest pair
    board_floor_ms: dict[str, float]
    latency_ms: float
    bottleneck_ms: float
    network_bytes: float  # per frame, expected over the dealing
    binding: str = ""  # the resource whose load is the bottleneck

    @property
    def stage_ms(self) -> tuple[float, ...]:
        return tuple(ms[0] for ms in self.ms)


def predict_steps(program: Program, steps: list[list[Copy]], handoff_bytes: list[float]) -> StepsPrediction:
    """Predict a pipeline of steps, each one worker or several replicas of it (frames dealt by weight).

    `handoff_bytes`: what crosses into each step and out of the last (len(steps) + 1). The plan's period is
    its busiest resource's load per frame: a copy computes its share w of the frames, w x t'; a sender
    spends w_a x sum_b w_b x handoff(a, b) per frame, a receiver likewise; a board's DRAM serves the
    traffic of its busy units by their shares. Weights are proportional to each copy's speed, its hand-offs
    included (computed twice, as contention depends on them). Latency: per step its slowest copy, per
    hand-off its slowest pair.
    """
    cluster = program.cluster
    assert cluster is not None
    src = [Copy(Worker(cluster.source, next(iter(cluster.devices[cluster.source].units))), [], 0.0)]
    dst = [Copy(Worker(cluster.sink, next(iter(cluster.devices[cluster.sink].units))), [], 0.0)]
    chain = [src] + steps + [dst]
    traffic = [[traffic_bytes(program, c.groups) for c in step] for step in steps]
    weights = [[1.0 / len(step)] * len(step) for step in chain]
    hand = [[[handoff_ms(program, handoff_bytes[k], a.worker, b.worker) for b in chain[k + 1]] for a in chain[k]]
            for k in range(len(chain) - 1)]
    bandwidth = {d: board_bandwidth_Bps(program, d) for d in {c.worker.device for step in steps for c in step}}
    ms: list[list[float]] = []
    for _ in range(3):
        ms = []
        busy: dict[str, list[tuple[int, int]]] = {}
        for k, step in enumerate(steps):
            for r, c in enumerate(step):
                busy.setdefault(c.worker.device, []).append((k, r))
        for k, step in enumerate(steps):
            row = []
            for r, c in enumerate(step):
                mates = [(j, q) for j, q in busy[c.worker.device] if steps[j][q].worker != c.worker]
                extra = sum(weights[j + 1][q] * traffic[j][q] for j, q in mates) * 1e3 / bandwidth[c.worker.device]
                row.append(c.alone_ms + extra)
            ms.append(row)
        for k, step in enumerate(steps):
            if len(step) == 1:
                continue
            w_in, w_out = weights[k], weights[k + 2]
            load = [max(ms[k][r], sum(wa * hand[k][a][r] for a, wa in enumerate(w_in)),
                        sum(wb * hand[k + 1][r][b] for b, wb in enumerate(w_out))) for r in range(len(step))]
            rate = [1.0 / x if x > 0 else 1e12 for x in load]
            weights[k + 1] = [x / sum(rate) for x in rate]
    loads: list[tuple[float, str]] = []
    for k, step in enumerate(steps):
        what = (f"step {k}: its {len(step)} replicas, all busy" if len(step) > 1 else f"step {k} on {step[0].worker.unit_id}")
        loads += [(weights[k + 1][r] * ms[k][r], what) for r, c in enumerate(step)]
    for k in range(len(chain) - 1):
        wa, wb = weights[k], weights[k + 1]
        loads += [(wa[a] * sum(wb[b] * hand[k][a][b] for b in range(len(wb))),
                   f"sending from {chain[k][a].worker.unit_id}") for a in range(len(wa))]
        loads += [(wb[b] * sum(wa[a] * hand[k][a][b] for a in range(len(wa))),
                   f"receiving on {chain[k + 1][b].worker.unit_id}") for b in range(len(wb))]
    floors: dict[str, float] = {}
    for device in bandwidth:
        mine = [(k, r) for k, step in enumerate(steps) for r, c in enumerate(step) if c.worker.device == device]
        if len({steps[k][r].worker for k, r in mine}) > 1:
            floors[device] = sum(weights[k + 1][r] * traffic[k][r] for k, r in mine) * 1e3 / bandwidth[device]
    # one worker holding stages of several steps runs them one after another
    per_worker: dict[Worker, float] = {}
    held: dict[Worker, int] = {}
    for k, step in enumerate(steps):
        for r, c in enumerate(step):
            per_worker[c.worker] = per_worker.get(c.worker, 0.0) + weights[k + 1][r] * ms[k][r]
            held[c.worker] = held.get(c.worker, 0) + 1
    per_worker = {w: v for w, v in per_worker.items() if held[w] > 1}
    slowest_hand = [max(max(row) for row in h) for h in hand]
    latency = sum(max(row) for row in ms) + sum(slowest_hand)
    loads += [(v, f"{d} DRAM") for d, v in floors.items()]
    loads += [(v, f"{w.unit_id} holding several steps") for w, v in per_worker.items()]
    bottleneck, binding = max(loads)
    network = 0.0
    for k in range(len(chain) - 1):
        for a, ca in enumerate(chain[k]):
            for b, cb in enumerate(chain[k + 1]):
                if ca.worker.device != cb.worker.device:
                    network += weights[k][a] * weights[k + 1][b] * handoff_bytes[k]
    return StepsPrediction(tuple(tuple(r) for r in ms), tuple(tuple(w) for w in weights[1:-1]),
                           tuple(slowest_hand), floors, float(latency), float(bottleneck), float(network), binding)


def predict_chain(program: Program, stages: list[tuple[Worker, list[str], float]],
                  handoff_bytes: list[float]) -> StepsPrediction:
    """A chain of unit stages, each its own worker: (worker, groups, ms alone) per stage, and the bytes of
    each hand-off (len(stages) + 1: from the source, between stages, to the sink)."""
    return predict_steps(program, [[Copy(w, list(g), ms)] for w, g, ms in stages], handoff_bytes)
