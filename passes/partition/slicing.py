"""Materialise a spatial split: a run of row-local nodes becomes one branch per band of output rows,
and a Concat along the rows that merges them.

Each branch is the run again on fewer rows. Its first nodes crop the run's input
to the rows it reads (its band plus the halo the run's windows need, from
:mod:`edgec.passes.partition.halo`); each windowed op keeps its original pads at
a true image border and gets none at an inner edge, so no pad is applied
twice; where a tensor holds more rows than one of its readers needs (two
readers with different windows), a Slice crops it for that reader. Every
branch computes exactly its band of the run's output, and the Concat puts
the bands together under the output's original name: the rewritten graph is
an ONNX model that computes what the original does, node for node outside
the run, so sub-models cut from it chain like any others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from edgec.costmodel.work import node_flops
from edgec.ir import consumed_tensors
from edgec.passes.partition.halo import WINDOWED, Rows, needed_rows, refusal, window


@dataclass(frozen=True)
class Run:
    """A single-entry single-exit run of row-local nodes: `nodes` in topological order read only
    `entry` from outside (and constants), and nothing outside reads what they make but `exit`."""

    nodes: tuple[gs.Node, ...]
    entry: gs.Variable
    exit: gs.Variable

    @property
    def height(self) -> int:
        return int(self.exit.shape[2])


@dataclass
class SliceRows:
    """What one branch owns and reads: rows of the run's output it makes, rows of the input it reads, the
    halo rows above and below what it owns of the input, and its work."""

    out: Rows
    reads: Rows
    halo: tuple[int, int]
    flops: float
    redundant_flops: float = 0.0  # work on rows of each layer that a neighbouring band owns


@dataclass
class SpatialRewrite:
    """The branches (nodes of each), the merging Concat, each branch's rows, and the run's unsplit work."""

    branches: list[list[gs.Node]]
    merge: gs.Node
    rows: list[SliceRows]
    flops_unsplit: float
    entry: str = ""
    exit: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def redundant_flops(self) -> float:
        return sum(r.redundant_flops for r in self.rows)


def find_run(graph: gs.Graph, nodes: Sequence[gs.Node]) -> Run | str:
    """The run these nodes form, or why they do not form one."""
    nodes = list(nodes)
    if not nodes:
        return "no nodes"
    for node in nodes:
        why = refusal(node)
        if why is not None:
            return f"node '{node.name}': {why}"
    inside = {id(n) for n in nodes}
    made = {t.name for n in nodes for t in n.outputs}
    entries: dict[str, gs.Variable] = {}
    for node in nodes:
        for t in consumed_tensors(node):
            if t.name not in made:
                entries[t.name] = t
    graph_outputs = {t.name for t in graph.outputs}
    exits: dict[str, gs.Variable] = {}
    for node in nodes:
        for t in node.outputs:
            if t.name in graph_outputs or any(id(c) not in inside for c in t.outputs):
                exits[t.name] = t
    if len(entries) != 1:
        return f"the run reads {len(entries)} tensors from outside ({', '.join(sorted(entries)) or 'none'}); a split needs one"
    if len(exits) != 1:
        return f"{len(exits)} tensors of the run are read outside it ({', '.join(sorted(exits)) or 'none'}); a split needs one"
    return Run(tuple(nodes), next(iter(entries.values())), next(iter(exits.values())))


def slice_run(graph: gs.Graph, run: Run, bands: Sequence[Rows], opset: int) -> SpatialRewrite:
    """Replace `run` in `graph` by one branch per band of its exit's rows and a Concat that merges them.

    The bands must cover the exit's rows in order. Node names get a ``__s<k>`` suffix per branch.
    """
    height = run.height
    if not bands or bands[0][0] != 0 or bands[-1][1] != height or any(
            a[1] != b[0] or a[0] >= a[1] for a, b in zip(bands, list(bands[1:]) + [(height, height + 1)])):
        raise ValueError(f"bands {list(bands)} do not cover rows [0, {height}) in order")
    flops_unsplit = sum(node_flops(n) for n in run.nodes)
    entry_height = int(run.entry.shape[2])
    branches: list[list[gs.Node]] = []
    rows: list[SliceRows] = []
    outs: list[gs.Variable] = []
    needs: list[dict[str, Rows]] = []
    for k, band in enumerate(bands):
        nodes, out, need = _branch(run, band, k, opset)
        reads = need[run.entry.name]
        needs.append(need)
        branches.append(nodes)
        outs.append(out)
        owned = (round(band[0] * entry_height / height), round(band[1] * entry_height / height))
        halo = (max(0, owned[0] - reads[0]), max(0, reads[1] - owned[1]))
        rows.append(SliceRows(tuple(band), reads, halo, sum(node_flops(n) for n in nodes)))
    for node in run.nodes:  # each layer's rows owned by the band that starts them: the rest is redundant
        t = node.outputs[0]
        height_t, flops = int(t.shape[2]), node_flops(node)
        starts = [need[t.name][0] if t.name in need else height_t for need in needs] + [height_t]
        for k, need in enumerate(needs):
            if t.name in need:
                lo, hi = need[t.name]
                owned = max(0, min(hi, starts[k + 1]) - max(lo, starts[k]))
                rows[k].redundant_flops += flops * ((hi - lo) - owned) / height_t
    exit_ = run.exit
    position = min(graph.nodes.index(n) for n in run.nodes)
    old = {id(n) for n in run.nodes}
    for node in run.nodes:
        node.inputs.clear()
        node.outputs.clear()
    merge = gs.Node("Concat", name=f"{exit_.name}__merge", attrs={"axis": 2}, inputs=outs, outputs=[exit_])
    kept = [n for n in graph.nodes if id(n) not in old]
    new = [n for b in branches for n in b] + [merge]
    before = [n for n in graph.nodes[:position] if id(n) not in old]
    graph.nodes = before + new + kept[len(before):]
    return SpatialRewrite(branches, merge, rows, flops_unsplit, run.entry.name, exit_.name)


def _branch(run: Run, band: Rows, k: int, opset: int) -> tuple[list[gs.Node], gs.Variable, dict[str, Rows]]:
    """The nodes that compute rows `band` of the run's exit; the branch's exit tensor; the rows of each of the
    run's tensors it holds or reads."""
    need = needed_rows(run.nodes, {run.exit.name: tuple(band)})
    held: dict[str, tuple[gs.Variable, Rows]] = {run.entry.name: (run.entry, (0, int(run.entry.shape[2])))}
    crops: dict[tuple[str, Rows], gs.Variable] = {}
    nodes: list[gs.Node] = []
    suffix = f"__s{k}"

    def rows_of(t: gs.Variable, rows: Rows) -> gs.Variable:
        """The branch's tensor holding exactly `rows` of `t`."""
        tensor, have = held[t.name]
        if have == rows:
            return tensor
        key = (t.name, rows)
        if key not in crops:
            crop = _like(t, f"{t.name}{suffix}_r{rows[0]}_{rows[1]}", rows[1] - rows[0])
            nodes.append(_slice_rows(tensor, crop, rows[0] - have[0], rows[1] - have[0], opset))
            crops[key] = crop
        return crops[key]

    for node in run.nodes:
        out = node.outputs[0]
        if out.name not in need:
            continue
        band_out = need[out.name]
        attrs = dict(node.attrs)
        if node.op in WINDOWED:
            w = window(node)
            height = int(node.inputs[0].shape[2])
            reads = w.reads(band_out, height)
            top, bottom = w.pads_for(band_out, height)
            if band_out[1] == int(out.shape[2]) and reads[1] == height:
                bottom = w.pad_bottom  # the last band ends as the original does: same pad, same ceil_mode
            auto_pad = attrs.get("auto_pad", "NOTSET")
            if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET":
                pads = _explicit_pads(node)
            else:
                pads = list(attrs.get("pads") or [0, 0, 0, 0])
            attrs["auto_pad"] = "NOTSET"
            attrs["pads"] = [top, int(pads[1]), bottom, int(pads[3])]
            inputs = [rows_of(node.inputs[0], reads)] + list(node.inputs[1:])
        else:
            inputs = [t if (not t.name or isinstance(t, gs.Constant)) else rows_of(t, band_out) for t in node.inputs]
        made = _like(out, out.name + suffix, band_out[1] - band_out[0])
        nodes.append(gs.Node(node.op, name=node.name + suffix, attrs=attrs, inputs=inputs, outputs=[made],
                             domain=node.domain))
        held[out.name] = (made, band_out)
    return nodes, rows_of(run.exit, tuple(band)), need


def _explicit_pads(node: gs.Node) -> list[int]:
    """[top, left, bottom, right] of a windowed node with auto_pad, along both axes."""
    w = window(node)
    attrs = node.attrs
    kernel = list(attrs.get("kernel_shape") or list(node.inputs[1].shape)[2:])
    stride = int((attrs.get("strides") or [1, 1])[1])
    dilation = int((attrs.get("dilations") or [1, 1])[1])
    extent = (int(kernel[1]) - 1) * dilation + 1
    width = int(node.inputs[0].shape[3])
    auto_pad = attrs["auto_pad"].decode() if isinstance(attrs["auto_pad"], bytes) else attrs["auto_pad"]
    if auto_pad == "VALID":
        return [w.pad_top, 0, w.pad_bottom, 0]
    total = max(0, (-(-width // stride) - 1) * stride + extent - width)
    small, big = total // 2, total - total // 2
    left, right = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    return [w.pad_top, left, w.pad_bottom, right]


def _like(t: gs.Variable, name: str, rows: int) -> gs.Variable:
    shape = list(t.shape)
    shape[2] = rows
    return gs.Variable(name, dtype=t.dtype, shape=shape)


def _slice_rows(src: gs.Variable, dst: gs.Variable, start: int, end: int, opset: int) -> gs.Node:
    name = f"{dst.name}__crop"
    if opset < 10:
        return gs.Node("Slice", name=name, attrs={"starts": [start], "ends": [end], "axes": [2]},
                       inputs=[src], outputs=[dst])
    consts = [gs.Constant(f"{name}_{what}", np.array([v], dtype=np.int64))
              for what, v in (("starts", start), ("ends", end), ("axes", 2))]
    return gs.Node("Slice", name=name, inputs=[src, *consts], outputs=[dst])
