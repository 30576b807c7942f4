"""The joint search over boards and their units, units as concurrent workers (the `partition` pass runs it).

Strategies:

* ``hierarchical`` (the default): the best of three plan families under the
  objective and the user's limits (--min-fps, --max-latency-ms):
  - a chain of stages over compute units, each unit its own worker
    (edgec.passes.partition.workers): the exact global DP (`optimal.solve`)
    run over the cluster's units instead of its boards, so the cut between
    boards and the split inside each board are chosen together, each board
    costed by its units running at once. Exact up to 2^12 unit sets: the
    reference trio's 5 units and mixed-8's 11 (2^11 sets) are searched
    exactly, in 0.1-1 s; a cluster of more than 12 distinct units gets
    `solve`'s beam search (a heuristic: see edgec.passes.partition.optimal),
    as its exact DP grows as 2^units. Contention between
    the units of a board depends on which of them the plan keeps busy, which
    no additive DP cost can express, so the DP runs twice: charging every
    unit of a multi-unit board as if its sibling were busy (an upper bound)
    and charging nothing (a lower bound: if that plan's exact prediction equals
    its DP value, it is the best chain of distinct units); both plans are then
    predicted exactly. The DP uses each unit at most once, so a board whose
    GPU needs its CPU in the middle (GPU, CPU, GPU) is found only by the
    single-level family below;
  - the whole model replicated over the k fastest able units, frames dealt
    by speed (edgec.passes.partition.replicas);
  - today's single-level plan: one segment per board, split over its units
    one after another (the `partition` + `local-partition` passes).
  - each plan of the first and third families with its bottleneck step
    replicated, greedily, onto units the plan leaves idle (a pipeline of
    replicated stages; `_replicate_bottleneck`).
* ``data-parallel``: the replica family only.

``--objective energy`` picks the plan of least predicted energy per frame
(edgec.costmodel.energy) among those meeting the limits; throughput and
latency pick by (bottleneck, latency) and (latency, bottleneck).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np

from edgec.backends.registry import backend_for
from edgec.costmodel.memory import stage_memory_bytes
from edgec.errors import EdgecError
from edgec.ir import DeviceSegment, Prediction, Program, Replica, Stage
from edgec.liveness import stage_boundaries
from edgec.passes.partition.build import build_problem, group_graph
from edgec.passes.partition.local_partition import LocalPartition
from edgec.passes.partition.optimal import Infeasible, solve
from edgec.passes.partition.placed import alone_ms as _alone_ms
from edgec.passes.partition.placed import predict_placed
from edgec.passes.partition.replicas import replica_sets, replica_stages
from edgec.passes.partition.workers import unit_problem, workers_of

JOINT_STRATEGIES = ("hierarchical", "data-parallel")


@dataclass
class Candidate:
    family: str
    stages: list[Stage]
    prediction: Prediction
    segments: list[DeviceSegment] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """What the user asked a plan to meet."""

    min_fps: float | None = None
    max_latency_ms: float | None = None

    def check(self, p: Prediction) -> bool:
        return (self.min_fps is None or p.throughput_fps >= self.min_fps * (1 - 1e-9)) and \
               (self.max_latency_ms is None or p.latency_ms <= self.max_latency_ms * (1 + 1e-9))

    def unmet(self, predictions: list[Prediction]) -> str:
        """The error when no plan meets the limits: what the best plan reaches."""
        parts = []
        if self.min_fps is not None:
            best = max(p.throughput_fps for p in predictions)
            parts.append(f"--min-fps {self.min_fps:g}: the fastest plan reaches {best:.3g} fps")
        if self.max_latency_ms is not None:
            best = min(p.latency_ms for p in predictions)
            parts.append(f"--max-latency-ms {self.max_latency_ms:g}: the quickest plan takes {best:.4g} ms")
        return "no plan meets " + "; ".join(parts) + "; relax the limit or add devices"


def pick(candidates: list[Candidate], objective: str, limits: Limits) -> Candidate:
    ok = [c for c in candidates if limits.check(c.prediction)]
    if not ok:
        raise EdgecError(limits.unmet([c.prediction for c in candidates]))
    if objective == "energy":
        return min(ok, key=lambda c: (c.prediction.energy_mj, c.prediction.bottleneck_ms))
    if objective == "latency":
        return min(ok, key=lambda c: (c.prediction.latency_ms, c.prediction.bottleneck_ms))
    return min(ok, key=lambda c: (c.prediction.bottleneck_ms, c.prediction.latency_ms))


def joint_plan(program: Program, objective: str, strategy: str, limits: Limits) -> Candidate:
    """The best plan of the strategy's families for the objective within the limits. Leaves
    ``program.stages`` and ``program.prediction`` as it found them (the local partition writes them)."""
    cluster = program.cluster
    assert cluster is not None
    gg = group_graph(program)
    saved = (program.segments, program.stages, program.prediction)
    try:
        candidates: list[Candidate] = []
        if strategy == "hierarchical":
            candidates += _chains(program, gg, objective)
            candidates += _single_level(program, objective)
            candidates += [r for c in list(candidates) for r in _replicate_bottleneck(program, c)]
        candidates += _replicas(program, gg)
    finally:
        program.segments, program.stages, program.prediction = saved
    if not candidates:
        raise EdgecError(f"--strategy {strategy}: no plan fits this cluster" + (
            " (no unit runs the whole model within its board's memory)" if strategy == "data-parallel" else ""))
    return pick(candidates, objective, limits)


def candidate_segments(candidate: Candidate) -> list[DeviceSegment]:
    """A chosen plan as the global partition's segments: the single-level family's as they are (the local
    partition splits them over units), the others with their units and replicas."""
    if candidate.family == "single-level":
        return candidate.segments
    return [DeviceSegment(f"seg{k}", st.device, list(st.groups), st.predicted_ms, st.memory_bytes, unit=st.unit,
                          weight=st.weight, replicas=list(st.replicas))
            for k, st in enumerate(candidate.stages)]


# families -------------------------------------------------------------------
def _chains(program: Program, gg, objective: str) -> list[Candidate]:
    objectives = ("throughput", "latency") if objective == "energy" else (objective,)
    out = []
    for contention, obj in itertools.product((True, False), objectives):
        problem, ws = unit_problem(program, gg, contention)
        try:
            plan = solve(problem, obj)
        except Infeasible:
            continue
        stages = []
        for seg in plan.segments:
            w = ws[seg.device]
            dev = program.cluster.devices[w.device]  # type: ignore[union-attr]
            unit = dev.units[w.unit]
            groups = list(gg.order[seg.start:seg.end])
            stages.append(Stage("", w.device, w.unit, groups, _alone_ms(program, groups, w),
                                stage_memory_bytes(program.nodes_of(groups), program.output_names()),
                                unit.backend, backend_for(dev, unit).default_variant))
        if _fits(program, stages):
            program.stages = stages
            out.append(Candidate("units", stages, predict_placed(program)))
    return out


def _fits(program: Program, stages: list[Stage]) -> bool:
    """A board holds its units' stages together, and each unit binds the tensors at its stage's edges."""
    cluster = program.cluster
    assert cluster is not None
    held: dict[str, int] = {}
    for st in stages:
        held[st.device] = held.get(st.device, 0) + st.memory_bytes
    if any(b > cluster.devices[d].memory_bytes for d, b in held.items()):
        return False
    saved = program.stages
    program.stages = stages
    try:
        lives = stage_boundaries(program)
    finally:
        program.stages = saved
    tensors = program.graph.tensors()
    for k, st in enumerate(stages):
        dev = cluster.devices[st.device]
        backend = backend_for(dev, dev.units[st.unit])
        for live in (lives[k], lives[k + 1]):
            if not all(backend.can_bind(_dtype(tensors[t])) for t in live):
                return False
    return True


def _single_level(program: Program, objective: str) -> list[Candidate]:
    gg = group_graph(program)
    try:
        plan = solve(build_problem(program, gg), "latency" if objective == "latency" else "throughput")
    except Infeasible:
        return []
    devices = list(program.cluster.devices.values())  # type: ignore[union-attr]
    program.segments = [
        DeviceSegment(f"seg{k}", devices[seg.device].name, list(gg.order[seg.start:seg.end]),
                      predicted_ms=plan.stage_ms[k], memory_bytes=plan.memory_bytes[k])
        for k, seg in enumerate(plan.segments)]
    segments = list(program.segments)
    LocalPartition().run(program)
    assert program.prediction is not None
    return [Candidate("single-level", list(program.stages), program.prediction, segments)]


def _replicas(program: Program, gg) -> list[Candidate]:
    out = []
    for workers in replica_sets(program, gg):
        program.stages = replica_stages(program, gg, workers)
        out.append(Candidate("replicas", program.stages, predict_placed(program)))
    return out


def _replicate_bottleneck(program: Program, base: Candidate) -> list[Candidate]:
    """The pipeline `base` with its slowest step replicated, greedily: while the bottleneck is a step's
    compute, give that step one more replica (the fastest unit the plan leaves idle that can run the
    step, bind its edges and fit its board's memory), as long as the bottleneck drops. Each improvement
    is a candidate."""
    cluster = program.cluster
    assert cluster is not None
    stages = [dataclasses.replace(st, replicas=[dataclasses.replace(r) for r in st.replicas]) for st in base.stages]
    program.stages = stages
    lives = stage_boundaries(program)
    tensors = program.graph.tensors()
    used = {(s.device, s.unit) for s in stages} | {(r.device, r.unit) for s in stages for r in s.replicas}
    held: dict[str, int] = {}
    for st in stages:
        for d in [st.device] + [r.device for r in st.replicas]:
            held[d] = held.get(d, 0) + st.memory_bytes
    prediction = predict_placed(program)
    out = []
    while True:
        loads = [max([(st.weight or 1.0) * st.predicted_ms] + [r.weight * r.predicted_ms for r in st.replicas])
                 for st in stages]
        k = int(np.argmax(loads))
        if loads[k] < prediction.bottleneck_ms * (1 - 1e-9):
            return out  # the network or a board's DRAM binds, not a step's compute
        st = stages[k]
        spare = []
        for w in workers_of(program):
            dev = cluster.devices[w.device]
            unit = dev.units[w.unit]
            backend = backend_for(dev, unit)
            ms = _alone_ms(program, st.groups, w)
            if ((w.device, w.unit) in used or not np.isfinite(ms)
                    or held.get(w.device, 0) + st.memory_bytes > dev.memory_bytes
                    or not all(backend.can_bind(_dtype(tensors[t])) for t in lives[k] + lives[k + 1])):
                continue
            spare.append((ms, w, unit, backend))
        if not spare:
            return out
        ms, w, unit, backend = min(spare, key=lambda x: x[0])
        st.replicas.append(Replica(w.device, w.unit, ms, st.memory_bytes, unit.backend, backend.default_variant, 0.0))
        better = predict_placed(program)
        if better.bottleneck_ms >= prediction.bottleneck_ms * (1 - 1e-9):
            return out
        used.add((w.device, w.unit))
        held[w.device] = held.get(w.device, 0) + st.memory_bytes
        prediction = better
        snapshot = [dataclasses.replace(s, replicas=[dataclasses.replace(r) for r in s.replicas]) for s in stages]
        out.append(Candidate("replicated pipeline", snapshot, prediction))


def _dtype(t) -> str:
    try:
        return np.dtype(t.dtype).name
    except TypeError:
        return str(t.dtype)
