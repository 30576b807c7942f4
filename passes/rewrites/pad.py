"""Pad folded into the pads of the Conv or pooling node after it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from edgec.passes.rewrites.base import (Rule, const_value, describe, optional_input, producer, remove_node,
                                        sole_consumer_blocker, used)



@dataclass
class _PadSpec:
    pads: list[int]  # begin..., end... over every dim of the input
    value: float


def _pad_spec(pad: gs.Node) -> _PadSpec | str:
    """What a Pad node does, or why it cannot be folded."""
    mode = pad.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "constant":
        return f"{describe(pad)} mode is '{mode}', not 'constant'"
    x = pad.inputs[0]
    if x.shape is None:
        return f"{describe(pad)} input rank is unknown"
    rank = len(x.shape)
    if "pads" in pad.attrs:  # opset < 11
        pads = [int(p) for p in pad.attrs["pads"]]
        value = float(pad.attrs.get("value", 0.0))
    else:
        pads_value = const_value(optional_input(pad, 1))
        if pads_value is None:
            return f"{describe(pad)} pads are not constant"
        pads = [int(p) for p in pads_value.reshape(-1)]
        value_t = optional_input(pad, 2)
        value = 0.0
        if value_t is not None:
            v = const_value(value_t)
            if v is None:
                return f"{describe(pad)} pad value is not constant"
            value = float(v.reshape(-1)[0]) if v.size else 0.0
        axes_t = optional_input(pad, 3)
        if axes_t is not None:
            axes = const_value(axes_t)
            if axes is None:
                return f"{describe(pad)} axes are not constant"
            full = [0] * (2 * rank)
            axes = [int(a) % rank for a in axes.reshape(-1)]
            for k, axis in enumerate(axes):
                full[axis] = pads[k]
                full[rank + axis] = pads[len(axes) + k]
            pads = full
    if len(pads) != 2 * rank:
        return f"{describe(pad)} has {len(pads)} pads for rank {rank}"
    if any(p < 0 for p in pads):
        return f"{describe(pad)} has negative pads (a crop)"
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        return f"{describe(pad)} pads the batch or channel dim"
    return _PadSpec(pads, value)


def _merged_pads(node: gs.Node, spec: _PadSpec) -> list[int] | str:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad not in ("NOTSET", "VALID"):
        return f"{describe(node)} has auto_pad={auto_pad}"
    rank = len(spec.pads) // 2
    spatial = rank - 2
    own = [0] * (2 * spatial)
    if auto_pad == "NOTSET":
        own = [int(p) for p in node.attrs.get("pads", own)]
    begin = [own[i] + spec.pads[2 + i] for i in range(spatial)]
    end = [own[spatial + i] + spec.pads[rank + 2 + i] for i in range(spatial)]
    return begin + end


def _pad_before(node: gs.Node) -> gs.Node | None:
    pad = producer(node.inputs[0])
    return pad if pad is not None and pad.op == "Pad" else None


def _fold_pad(graph: gs.Graph, node: gs.Node, pads: list[int]) -> None:
    pad = _pad_before(node)
    x = pad.inputs[0]
    node.attrs.pop("auto_pad", None)
    node.attrs["pads"] = pads
    node.inputs[0] = x
    remove_node(graph, pad)


class PadIntoConv(Rule):
    """Fold a zero constant Pad on spatial dims into the Conv that reads it.

    Rewrite cases:
    - Pad(X, pads, 0) -> Conv{pads=p}: Conv(X){pads = p + spatial pads}; auto_pad
      VALID becomes explicit pads.
    Not applied: Pad mode is not constant; pads or value not constant; value is
    not 0; batch or channel dims padded; negative pads; the Conv has auto_pad
    SAME_*; the Pad output has another reader or is a graph output.
    """

    name = "pad-into-conv"
    anchor = ("Conv",)
    pattern = "Pad(X, pads:const, 0) -> Conv"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        pad = _pad_before(node)
        if pad is None:
            return f"{describe(node)} does not read a Pad"
        spec = _pad_spec(pad)
        if isinstance(spec, str):
            return spec
        if spec.value != 0.0:
            return f"{describe(pad)} pad value is {spec.value}, not 0"
        reason = sole_consumer_blocker(graph, pad, pad.outputs[0])
        if reason:
            return reason
        merged = _merged_pads(node, spec)
        return merged if isinstance(merged, str) else None

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        _fold_pad(graph, node, _merged_pads(node, _pad_spec(_pad_before(node))))


class PadIntoPool(Rule):
    """Fold a constant Pad on spatial dims into the AveragePool or MaxPool that reads it.

    Rewrite cases:
    - Pad(X, pads, 0) -> AveragePool{count_include_pad=1}: the padded zeros
      count in the average either way, so the pool takes the pads;
    - Pad(X, pads, -inf) -> MaxPool: -inf never wins a max, as the pool's own pads.
    Not applied: AveragePool with count_include_pad=0 (the divisor would
    change); MaxPool with a finite pad value or its Indices output used;
    ceil_mode=1 (windows starting in the right pad are dropped only for the
    pool's own pads); merged pads not smaller than the kernel; the Pad cases
    of pad-into-conv.
    """

    name = "pad-into-pool"
    anchor = ("AveragePool", "MaxPool")
    pattern = "Pad(X, pads:const, 0 | -inf) -> AveragePool | MaxPool"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        pad = _pad_before(node)
        if pad is None:
            return f"{describe(node)} does not read a Pad"
        spec = _pad_spec(pad)
        if isinstance(spec, str):
            return spec
        if node.op == "AveragePool":
            if not node.attrs.get("count_include_pad", 0):
                return f"{describe(node)} has count_include_pad=0"
            if spec.value != 0.0:
                return f"{describe(pad)} pad value is {spec.value}, not 0"
        else:
            if not (math.isinf(spec.value) and spec.value < 0):
                return f"{describe(pad)} pad value is {spec.value}, not -inf"
            if any(used(graph, t) for t in node.outputs[1:]):
                return f"{describe(node)} Indices output is used"
        if node.attrs.get("ceil_mode", 0):
            return f"{describe(node)} has ceil_mode=1"
        reason = sole_consumer_blocker(graph, pad, pad.outputs[0])
        if reason:
            return reason
        merged = _merged_pads(node, spec)
        if isinstance(merged, str):
            return merged
        kernel = list(node.attrs.get("kernel_shape", []))
        spatial = len(kernel)
        if any(merged[i] >= kernel[i % spatial] for i in range(len(merged))):
            return f"{describe(node)} pads {merged} would not be smaller than the kernel {kernel}"
        return None

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        _fold_pad(graph, node, _merged_pads(node, _pad_spec(_pad_before(node))))
