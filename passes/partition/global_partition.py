"""The global `partition` pass: which device runs which groups.

Groups are taken in the graph's topological order and cut into contiguous
stages, one device per stage; the work of each device is balanced against its
fastest compute unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from edgec.errors import EdgecError
from edgec.ir import Prediction, Program, Stage, tensor_nbytes
from edgec.pipeline import PassResult


@dataclass(frozen=True)
class GlobalPartition:
    objective: str = "throughput"
    name: ClassVar[str] = "partition"

    def run(self, program: Program) -> PassResult:
        if program.cluster is None:
            raise EdgecError("no cluster given; pass one with -t cluster.json")
        groups = _groups_in_order(program)
        work = np.array([sum(_rough_flops(n) for n in nodes) for _, nodes in groups], dtype=np.float64)
        devices = list(program.cluster.devices.values())
        best_units = [max(d.units.values(), key=lambda u: u.gflops) for d in devices]
        speed = np.array([u.gflops for u in best_units])
        cuts = _balanced_cuts(work, speed)
        program.stages = []
        for k, (dev, unit) in enumerate(zip(devices, best_units)):
            lo, hi = cuts[k], cuts[k + 1]
            if lo == hi:
                continue
            ms = float(work[lo:hi].sum() / (unit.gflops * 1e9) * 1e3)
            program.stages.append(Stage(f"s{len(program.stages)}", dev.name, unit.name,
                                        [name for name, _ in groups[lo:hi]], predicted_ms=ms,
                                        backend="tensorrt" if unit.backend == "tensorrt" else "onnxruntime-cpu"))
        program.prediction = _predict(program)
        return PassResult(program, changed=True)


def _groups_in_order(program: Program) -> list[tuple[str, list[gs.Node]]]:
    group_of = program.group_of()
    order: list[str] = []
    members: dict[str, list[gs.Node]] = {}
    for node in program.graph.nodes:
        g = group_of[node.name]
        if g not in members:
            order.append(g)
            members[g] = []
        members[g].append(node)
    return [(g, members[g]) for g in order]


def _balanced_cuts(work: np.ndarray, speed: np.ndarray) -> list[int]:
    """Cut points so each device gets work in proportion to its speed."""
    share = np.cumsum(speed) / speed.sum()
    prefix = np.cumsum(work) / max(work.sum(), 1.0)
    cuts = [0] + [int(np.searchsorted(prefix, s - 1e-12) + 1) for s in share[:-1]] + [len(work)]
    for i in range(1, len(cuts)):
        cuts[i] = min(max(cuts[i], cuts[i - 1]), len(work))
    return cuts


def _rough_flops(node: gs.Node) -> float:
    out = node.outputs[0] if node.outputs else None
    out_elems = float(np.prod(out.shape)) if out is not None and out.shape else 1.0
    if node.op in ("Conv", "ConvTranspose") and len(node.inputs) > 1:
        w = node.inputs[1].shape
        return 2.0 * out_elems * float(np.prod(w[1:]))
    if node.op in ("Gemm", "MatMul") and len(node.inputs) > 1 and node.inputs[0].shape:
        trans_a = node.attrs.get("transA", 0)
        k = node.inputs[0].shape[0 if trans_a and node.op == "Gemm" else -1]
        return 2.0 * out_elems * float(k)
    return out_elems


def _predict(program: Program) -> Prediction:
    cluster = program.cluster
    assert cluster is not None
    stage_ms = [s.predicted_ms for s in program.stages]
    transfers = [cluster.transfer_ms(b, a, c) for b, a, c in boundary_transfers(program)]
    latency = sum(stage_ms) + sum(transfers)
    bottleneck = max(stage_ms + transfers)
    return Prediction(latency, bottleneck, 1000.0 / bottleneck if bottleneck > 0 else float("inf"))


def boundary_transfers(program: Program) -> list[tuple[int, str, str]]:
    """(bytes, from device, to device) for the source hand-off, every stage boundary and the sink hand-off."""
    cluster = program.cluster
    assert cluster is not None
    lives = program.live_across_stages()
    devices = [cluster.source] + [s.device for s in program.stages] + [cluster.sink]
    tensors = program.graph.tensors()
    return [(sum(tensor_nbytes(tensors[t]) for t in live), devices[k], devices[k + 1])
            for k, live in enumerate(lives)]
