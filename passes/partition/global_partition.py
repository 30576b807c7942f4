"""The global `partition` pass: which board runs which groups (and, searched jointly, which unit).

The default strategy, ``hierarchical``, searches boards and their compute
units together, each unit a concurrent worker, and whole-model replicas
(edgec.passes.partition.hierarchical); ``data-parallel`` searches replicas
only. Their segments name their unit (and replicas), which the local pass keeps.

``pipeline`` is the single-level plan: groups, in a topological order that
lets cuts fall where few bytes cross, are cut into contiguous stages, one
board per stage, at the exact optimum (`optimal.solve`; also named
``optimal``); the research baselines are selectable for comparison. A group costs a board what its fastest unit able to run it takes
(the `capability` pass says which can); the `local-partition` pass then
splits each board's stage over the board's units: this pass writes ``program.segments`` (a device each, no
unit yet), the local pass ``program.stages``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgec.errors import EdgecError
from edgec.ir import DeviceSegment, Program
from edgec.passes.partition.baselines import STRATEGIES
from edgec.passes.partition.build import build_problem, group_graph
from edgec.passes.partition.hierarchical import JOINT_STRATEGIES, Limits, candidate_segments, joint_plan
from edgec.passes.partition.optimal import solve
from edgec.pipeline import PassResult

SINGLE_LEVEL = ("optimal", *STRATEGIES)
STRATEGY_NAMES = (*JOINT_STRATEGIES, "pipeline", *SINGLE_LEVEL)


@dataclass(frozen=True)
class GlobalPartition:
    objective: str = "throughput"
    strategy: str = "hierarchical"
    seed: int = 0
    min_fps: float | None = None  # the joint strategies choose among plans that meet these
    max_latency_ms: float | None = None
    name: ClassVar[str] = "partition"
    requires: ClassVar[frozenset[str]] = frozenset({"cluster", "groups", "costs", "unsupported"})
    provides: ClassVar[frozenset[str]] = frozenset({"segments"})

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise EdgecError(f"unknown --strategy '{self.strategy}'; expected one of: {', '.join(STRATEGY_NAMES)}")

    def run(self, program: Program) -> PassResult:
        if program.cluster is None:
            raise EdgecError("no cluster given; pass one with -t cluster.json")
        gg = group_graph(program)
        program.graph.nodes = [n for g in gg.order for n in gg.members[g]]
        if self.strategy in JOINT_STRATEGIES:
            chosen = joint_plan(program, self.objective, self.strategy, Limits(self.min_fps, self.max_latency_ms))
            program.segments = candidate_segments(chosen)
            return PassResult(program, changed=True)
        problem = build_problem(program, gg)
        objective = "latency" if self.objective == "latency" else "throughput"
        if self.strategy in ("optimal", "pipeline"):
            plan = solve(problem, objective)
        else:
            plan = STRATEGIES[self.strategy](problem, objective, seed=self.seed)
        devices = list(program.cluster.devices.values())
        program.segments = [
            DeviceSegment(f"seg{k}", devices[seg.device].name, list(gg.order[seg.start:seg.end]),
                          predicted_ms=plan.stage_ms[k], memory_bytes=plan.memory_bytes[k])
            for k, seg in enumerate(plan.segments)]
        program.graph.nodes = [n for g in gg.order for n in gg.members[g]]
        return PassResult(program, changed=True)
