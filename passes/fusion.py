"""The `fusion` pass: ONNX-valid rewrites, then the fusion groups a partition never cuts.

First the rewrite rules of :mod:`edgec.passes.rewrites` run to a fixed point
(BN into Conv, MatMul + Add into Gemm, Pad into Conv and pooling, Sum into
Add, Identity and Dropout removed), then ``cleanup().toposort()``. Then
:func:`edgec.passes.fusion_groups.build_groups` puts every node in exactly one
fusion group, as backends fuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgec.errors import EdgecError
from edgec.ir import Program
from edgec.passes.fusion_groups import PATTERNS, build_groups
from edgec.passes.rewrites import RULES, apply_rules
from edgec.pipeline import PassResult

DEFAULT_RULES = tuple(RULES)


@dataclass(frozen=True)
class Fusion:
    """Rewrite the graph with ``rules`` (in this order) and group it with ``patterns``."""

    rules: tuple[str, ...] = DEFAULT_RULES
    patterns: tuple[str, ...] = PATTERNS
    name: ClassVar[str] = "fusion"
    requires: ClassVar[frozenset[str]] = frozenset({"graph", "shapes"})
    provides: ClassVar[frozenset[str]] = frozenset({"groups"})

    def __post_init__(self) -> None:
        for rule in self.rules:
            if rule not in RULES:
                raise EdgecError(f"unknown fusion rule '{rule}'; known rules: {', '.join(RULES)}")
        for pattern in self.patterns:
            if pattern not in PATTERNS:
                raise EdgecError(f"unknown fusion group pattern '{pattern}'; known patterns: {', '.join(PATTERNS)}")

    def run(self, program: Program) -> PassResult:
        graph = program.graph
        before = [id(n) for n in graph.nodes]
        rewrites = apply_rules(graph, [RULES[r] for r in self.rules])
        graph.cleanup().toposort()
        groups = build_groups(graph, self.patterns)
        changed = bool(rewrites) or [id(n) for n in graph.nodes] != before or groups != program.groups
        program.groups = groups
        return PassResult(program, changed)
