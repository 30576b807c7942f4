"""The global `partition` pass: which board runs which groups.

Groups, in a topological order that lets cuts fall where few bytes cross, are
cut into contiguous stages, one board per stage. The default strategy is the
exact optimum (`optimal.solve`); the research baselines are selectable for
comparison. A group costs a board what its fastest unit able to run it takes
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
from edgec.passes.partition.optimal import solve
from edgec.pipeline import PassResult

STRATEGY_NAMES = ("optimal", *STRATEGIES)


@dataclass(frozen=True)
class GlobalPartition:
    objective: str = "throughput"
    strategy: str = "optimal"
    seed: int = 0
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
        problem = build_problem(program, gg)
        if self.strategy == "optimal":
            plan = solve(problem, self.objective)
        else:
            plan = STRATEGIES[self.strategy](problem, self.objective, seed=self.seed)
        devices = list(program.cluster.devices.values())
        program.segments = [
            DeviceSegment(f"seg{k}", devices[seg.device].name, list(gg.order[seg.start:seg.end]),
                          predicted_ms=plan.stage_ms[k], memory_bytes=plan.memory_bytes[k])
            for k, seg in enumerate(plan.segments)]
        program.graph.nodes = [n for g in gg.order for n in gg.members[g]]
        return PassResult(program, changed=True)
