"""The `cost` pass: work, bytes and predicted ms of every group on every compute unit.

The figures come from :mod:`edgec.costmodel` (op work, the unit's profile,
what its runtime fuses and how it lays out activations); this pass only
writes them into ``program.costs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgec.costmodel.memory import group_output_bytes
from edgec.costmodel.predict import group_ms
from edgec.costmodel.resolve import resolve_unit_profile
from edgec.costmodel.work import node_work
from edgec.errors import EdgecError
from edgec.ir import GroupCost, Program
from edgec.pipeline import PassResult


@dataclass(frozen=True)
class Cost:
    """Fill ``program.costs`` for every group and every unit of ``program.cluster``."""

    name: ClassVar[str] = "cost"
    requires: ClassVar[frozenset[str]] = frozenset({"cluster", "shapes", "groups"})
    provides: ClassVar[frozenset[str]] = frozenset({"costs"})

    def run(self, program: Program) -> PassResult:
        if program.cluster is None:
            raise EdgecError("no cluster to cost against; pass a cluster file with -t cluster.json")
        profiles = {f"{d.name}.{u.name}": resolve_unit_profile(d, u) for d, u in program.cluster.units()}
        nodes = list(program.graph.nodes)
        group_of = program.group_of()
        ms = group_ms(nodes, group_of, profiles)
        costs = {group: GroupCost(0.0, 0, 0, unit_ms) for group, unit_ms in ms.items()}
        for node in nodes:
            work = node_work(node)
            cost = costs[group_of.get(node.name, node.name)]
            cost.flops += work.flops
            cost.param_bytes += work.param_bytes
        for group, nbytes in group_output_bytes(nodes, group_of).items():
            costs[group].activation_bytes = nbytes
        program.costs = costs
        return PassResult(program, changed=True)
