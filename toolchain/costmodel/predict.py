"""Predicted ms of nodes on a compute unit: the roofline of its profile, with what runtimes fuse and reorder.

Per node the prediction is the unit profile's roofline (:meth:`UnitProfile.node_ms`);
a group costs the sum of its nodes. Two things every backend here does (ONNX
Runtime's graph optimizations, TensorRT's layer fusion) are modelled, so that
the figures match what runs:

- what the unit's runtime (profile ``runtime``) runs inside another node's
  kernel costs 0 ms (:mod:`edgec.costmodel.runtime_fusion`: activations,
  BatchNormalization and residual Adds on a conv; TensorRT's pointwise chains);
- Dropout and Identity are removed; views (Reshape, Flatten, Squeeze, Unsqueeze)
  cost only the per-node overhead; an Erf that ONNX Runtime runs as a whole GELU
  costs a Gelu's FLOPs;
- a conv the runtime runs in its blocked layout computes whole channel blocks
  (:func:`edgec.costmodel.layout.channel_padding`) and, a grouped one, not as one
  GEMM per group; a pool it runs in plain layout reaches the profile's
  ``plain_efficiency`` where the profile has one;
- where the unit's runtime runs some ops in a blocked layout (profile
  ``layout_block``), each conversion :mod:`edgec.costmodel.layout` finds costs
  :meth:`UnitProfile.conversion_ms`: in :func:`predict_ms` the nodes run as one
  session (inputs arrive and outputs leave plain); in :func:`group_ms` the
  conversions of the whole graph join the group of the blocked node they sit next to.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Mapping, Sequence

import onnx_graphsurgeon as gs

from edgec.costmodel.layout import BLOCKED_POOLS, blocked_nodes, channel_padding, conversions
from edgec.costmodel.profile import UnitProfile
from edgec.costmodel.runtime_fusion import fused_nodes, is_gelu_erf
from edgec.costmodel.work import VIEW_OPS, NodeWork, node_work, unary_flops

REMOVED_OPS = frozenset({"Dropout", "Identity"})


def group_ms(nodes: Sequence[gs.Node], group_of: Mapping[str, str],
             profiles: Mapping[str, UnitProfile]) -> dict[str, dict[str, float]]:
    """Per group (of `group_of`, a node its own group where absent) and per unit id of `profiles`:
    predicted ms, the graph's layout conversions included where they sit."""
    nodes = list(nodes)
    fused: dict[tuple[str, bool], set[str]] = {}  # per fusion kind, shared by the profiles that have it
    blocked: dict[tuple[int, str, bool], set[str]] = {}
    for p in profiles.values():
        kind = _fusion_kind(p)
        if kind not in fused:
            fused[kind] = fused_nodes(nodes, kind[0], residual=kind[1])
        if (p.layout_block, *kind) not in blocked:
            blocked[(p.layout_block, *kind)] = blocked_nodes(nodes, p.layout_block, fused[kind])
    out: dict[str, dict[str, float]] = {}
    for node in nodes:
        work = node_work(node)
        ms = out.setdefault(group_of.get(node.name, node.name), {uid: 0.0 for uid in profiles})
        for uid, profile in profiles.items():
            kind = _fusion_kind(profile)
            ms[uid] += node_ms(node, work, profile, fused=node.name in fused[kind],
                               blocked=node.name in blocked[(profile.layout_block, *kind)])
    for uid, profile in profiles.items():
        for conv in conversions(nodes, profile.layout_block, fused[_fusion_kind(profile)]):
            out[group_of.get(conv.node, conv.node)][uid] += profile.conversion_ms(conv.nbytes)
    return out


def node_ms(node: gs.Node, work: NodeWork, profile: UnitProfile, *, fused: bool = False,
            blocked: bool = False) -> float:
    """Predicted ms of one node on one unit; `fused` marks an epilogue its producer's kernel runs, `blocked`
    a node the unit's runtime runs in its blocked layout (:func:`edgec.costmodel.layout.blocked_nodes`)."""
    if fused or node.op in REMOVED_OPS:
        return 0.0
    if node.op in VIEW_OPS:
        return profile.overhead_ms
    if is_gelu_erf(node, profile.runtime):
        work = replace(work, flops=work.flops * unary_flops("Gelu") / unary_flops("Erf"))
    if blocked:
        padding = channel_padding(node, profile.layout_block)
        return profile.node_ms(replace(work, flops=work.flops * padding) if padding != 1.0 else work, blocked=True)
    return profile.node_ms(work, plain=node.op in BLOCKED_POOLS)


def predict_ms(nodes: Sequence[gs.Node], profile: UnitProfile) -> float:
    """Predicted ms of running these nodes (a whole graph or one stage) on one unit, layout conversions included."""
    fused = _fused(nodes, profile)
    blocked = blocked_nodes(nodes, profile.layout_block, fused)
    ms = sum(node_ms(n, node_work(n), profile, fused=n.name in fused, blocked=n.name in blocked) for n in nodes)
    return ms + layout_ms(nodes, profile, fused)


def layout_ms(nodes: Sequence[gs.Node], profile: UnitProfile, fused: Iterable[str] | None = None) -> float:
    """ms the unit's runtime spends converting layouts when running these nodes as one session."""
    if profile.layout_block <= 0:
        return 0.0
    fused = _fused(nodes, profile) if fused is None else fused
    return sum(profile.conversion_ms(c.nbytes) for c in conversions(nodes, profile.layout_block, fused))


def _fused(nodes: Sequence[gs.Node], profile: UnitProfile) -> set[str]:
    """The nodes the profile's runtime runs inside another node's kernel."""
    runtime, residual = _fusion_kind(profile)
    return fused_nodes(nodes, runtime, residual=residual)


def _fusion_kind(profile: UnitProfile) -> tuple[str, bool]:
    """(runtime, whether residual Adds join convs): ONNX Runtime does that on its blocked-layout path only."""
    return profile.runtime, profile.runtime != "onnxruntime" or profile.layout_block > 0
