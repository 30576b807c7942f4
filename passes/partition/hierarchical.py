"""The joint search over boards and their units, units as concurrent workers (the `partition` pass runs it).

Strategies:

* ``hierarchical`` (the default): the best of three plan families under the
  objective and the user's limits (--min-fps, --max-latency-ms):
  - a chain of stages over compute units, each unit its own worker
    (edgec.passes.partition.workers): the exact global DP (`optimal.solve`)
    run over the cluster's units instead of its boards, so the cut between
    boards and the split inside each board are chosen together, each board
    costed by its units running at once. Exact up to 2^12 unit sets (the
    reference trio has 5 units: exact); beyond, `solve`'s beam search (mixed-8
    has 13 units, in 12 interchangeability classes: beam). Two places are
    bounds rather than exact: the DP charges contention to every unit of a
    multi-unit board (see `unit_problem`) and it uses each unit at most once,
    so a board whose GPU needs its CPU in the middle (GPU, CPU, GPU) is found
    only by the single-level family below;
  - the whole model replicated over the k fastest able units, frames dealt
    by speed (edgec.passes.partition.replicas);
  - today's single-level plan: one segment per board, split over its units
    one after another (the `partition` + `local-partition` passes).
  A pipeline whose stages are themselves replicated is not searched.
* ``data-parallel``: the replica family only.

``--objective energy`` picks the plan of least predicted energy per frame
(edgec.costmodel.energy) among those meeting the limits; throughput and
latency pick by (bottleneck, latency) and (latency, bottleneck).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgec.backends.registry import backend_for
from edgec.costmodel.energy import ActiveStage, plan_energy_mj
from edgec.costmodel.memory import stage_memory_bytes
from edgec.errors import EdgecError
from edgec.ir import DeviceSegment, Prediction, Program, Replica, Stage, tensor_nbytes
from edgec.liveness import stage_boundaries
from edgec.passes.partition.build import build_problem, group_graph
from edgec.passes.partition.local_partition import LocalPartition
from edgec.passes.partition.optimal import Infeasible, solve
from edgec.passes.partition.replicas import replica_candidates, replica_plan, replica_stages
from edgec.passes.partition.workers import Worker, predict_chain, unit_problem

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


def predict_placed(program: Program) -> Prediction:
    """The prediction of stages chosen on units by the joint search: a chain of unit workers, or one step
    of replicas. Sets each stage's (and replica's) predicted_ms, contention included."""
    cluster = program.cluster
    assert cluster is not None
    stages = program.stages
    if len(stages) == 1 and stages[0].replicas:
        st = stages[0]
        copies = [_as_replica(st)] + st.replicas
        workers = [Worker(r.device, r.unit) for r in copies]
        plan = replica_plan(program, workers, [_alone_ms(program, st.groups, w) for w in workers])
        st.predicted_ms = plan.ms[0]
        for r, ms, weight in zip(st.replicas, plan.ms[1:], plan.weights[1:]):
            r.predicted_ms, r.weight = ms, weight
        st.weight = plan.weights[0]
        active = [ActiveStage(w.device, w.unit, ms, wt) for w, ms, wt in zip(workers, plan.ms, plan.weights)]
        energy = plan_energy_mj(cluster, active, plan.bottleneck_ms, plan.network_bytes)
        return Prediction(plan.latency_ms, plan.bottleneck_ms, _fps(plan.bottleneck_ms), energy)
    lives = stage_boundaries(program)
    tensors = program.graph.tensors()
    nbytes = [float(sum(tensor_nbytes(tensors[t]) for t in live)) for live in lives]
    chain = predict_chain(program, [(Worker(s.device, s.unit), s.groups,
                                     _alone_ms(program, s.groups, Worker(s.device, s.unit))) for s in stages], nbytes)
    for st, ms in zip(stages, chain.stage_ms):
        st.predicted_ms = float(ms)
    net = sum(b for b, (a, c) in zip(nbytes, _hops(cluster, stages)) if a != c)
    energy = plan_energy_mj(cluster, [ActiveStage(s.device, s.unit, s.predicted_ms) for s in stages],
                            chain.bottleneck_ms, net)
    return Prediction(chain.latency_ms, chain.bottleneck_ms, _fps(chain.bottleneck_ms), energy)


# families -------------------------------------------------------------------
def _chains(program: Program, gg, objective: str) -> list[Candidate]:
    problem, ws = unit_problem(program, gg)
    objectives = ("throughput", "latency") if objective == "energy" else (objective,)
    out = []
    for obj in objectives:
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
    for plan in replica_candidates(program, gg):
        program.stages = replica_stages(program, gg, plan)
        prediction = predict_placed(program)
        out.append(Candidate("replicas", program.stages, prediction))
    return out


def _alone_ms(program: Program, groups: list[str], w: Worker) -> float:
    return float(sum(program.group_ms(g, w.unit_id) for g in groups))


def _fps(bottleneck_ms: float) -> float:
    return 1000.0 / bottleneck_ms if bottleneck_ms > 0 else float("inf")


def _as_replica(stage: Stage) -> Replica:
    return Replica(stage.device, stage.unit, stage.predicted_ms, stage.memory_bytes, stage.backend, stage.variant,
                   stage.weight if stage.weight is not None else 1.0)


def _hops(cluster, stages: list[Stage]) -> list[tuple[str, str]]:
    chain = [cluster.source] + [s.device for s in stages] + [cluster.sink]
    return [(chain[k], chain[k + 1]) for k in range(len(chain) - 1)]


def _dtype(t) -> str:
    try:
        return np.dtype(t.dtype).name
    except TypeError:
        return str(t.dtype)
