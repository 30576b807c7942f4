"""The `capability` pass: which compute units can run each fusion group.

The support predicate of the partitioner (torch.fx keeps predicate, proposer
and materializer apart; so does edgec): every node is put to the backend of
every compute unit (`backend_for(device, unit).supports(node, opset)`), and a
group is refused by a unit if one of its nodes is, since a partition never
cuts a group. The partition passes give a refused (group, unit) pair an
infinite cost, so no node is ever placed where it cannot run. A group no unit
of the cluster can run is an error that names the node and every unit's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgec.backends.registry import backend_for
from edgec.errors import EdgecError
from edgec.ir import Program
from edgec.pipeline import PassResult


@dataclass(frozen=True)
class Capability:
    name: ClassVar[str] = "capability"
    requires: ClassVar[frozenset[str]] = frozenset({"cluster", "shapes", "groups"})
    provides: ClassVar[frozenset[str]] = frozenset({"unsupported"})

    def run(self, program: Program) -> PassResult:
        if program.cluster is None:
            raise EdgecError("no cluster given; pass one with -t cluster.json")
        units = program.cluster.units()
        backends = {f"{d.name}.{u.name}": backend_for(d, u) for d, u in units}
        group_of = program.group_of()
        unsupported: dict[str, dict[str, str]] = {}
        for node in program.graph.nodes:
            group = group_of[node.name]
            for unit_id, backend in backends.items():
                if unit_id in unsupported.get(group, {}):
                    continue
                reason = backend.supports(node, program.opset)
                if reason is not None:
                    unsupported.setdefault(group, {})[unit_id] = f"node '{node.name}' ({node.op}): {reason}"
        for group, refusals in unsupported.items():
            if len(refusals) == len(backends):
                lines = "; ".join(f"{unit}: {why}" for unit, why in refusals.items())
                raise EdgecError(f"no compute unit of cluster '{program.cluster.name}' can run fusion group "
                                 f"'{group}': {lines}. Add a device that can, or rewrite the model so that "
                                 f"the node has a form these runtimes take")
        program.unsupported = unsupported
        return PassResult(program, changed=True)
