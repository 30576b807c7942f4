"""The rewrite rules of the `fusion` pass: ONNX-valid rewrites that exported models need.

A rule is a stateless object with

- ``name``: kebab-case, what ``Fusion(rules=...)`` lists;
- ``anchor``: the op types the pattern ends on, and ``pattern``: the structure it matches;
- ``check(graph, node)``: None when the rewrite applies at ``node``, else a one-line reason
  why not (``"Conv 'c1' output feeds 2 nodes"``);
- ``rewrite(graph, node)``: the rewrite, called only after ``check`` returned None.

Every rewrite keeps the graph valid ONNX and keeps graph input and output tensor
names. Nodes a rewrite removes are disconnected (no inputs, no outputs) and
taken out of ``graph.nodes``; the pass runs ``cleanup().toposort()`` afterwards.

One module per rewrite family (batchnorm, gemm, pad, simplify); the shared
graph helpers and the Rule base are in `base`; the registry and the driver here.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from edgec.passes.rewrites.base import Rule
from edgec.passes.rewrites.batchnorm import BatchNormIntoConv
from edgec.passes.rewrites.gemm import MatMulAddIntoGemm
from edgec.passes.rewrites.pad import PadIntoConv, PadIntoPool
from edgec.passes.rewrites.simplify import RemoveDropout, RemoveIdentity, SumIntoAdd

# -- registry and driver -------------------------------------------------------------

RULES: dict[str, Rule] = {rule.name: rule for rule in (
    RemoveIdentity(), RemoveDropout(), SumIntoAdd(), BatchNormIntoConv(), PadIntoConv(), PadIntoPool(),
    MatMulAddIntoGemm(),
)}


def apply_rules(graph: gs.Graph, rules: list[Rule], max_rounds: int = 8) -> int:
    """Apply ``rules`` until none applies (or ``max_rounds`` sweeps); returns the number of rewrites."""
    by_op: dict[str, list[Rule]] = {}
    for rule in rules:
        for op in rule.anchor:
            by_op.setdefault(op, []).append(rule)
    count = 0
    for _ in range(max_rounds):
        before = count
        for node in list(graph.nodes):
            for rule in by_op.get(node.op, ()):
                if not node.outputs or node.op not in rule.anchor:  # removed or changed by a rewrite
                    break
                if rule.check(graph, node) is None:
                    rule.rewrite(graph, node)
                    count += 1
                    break
        if count == before:
            break
    return count


@dataclass(frozen=True)
class Skip:
    """A rule whose pattern anchor was found but which did not apply, and why."""

    rule: str
    node: str
    reason: str


def explain(graph: gs.Graph, rules: list[Rule]) -> list[Skip]:
    """For each node a rule is anchored on, why the rule does not apply there (now)."""
    out = []
    for node in graph.nodes:
        for rule in rules:
            if node.op in rule.anchor:
                reason = rule.check(graph, node)
                if reason is not None:
                    out.append(Skip(rule.name, node.name, reason))
    return out
