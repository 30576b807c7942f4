"""The `cost` pass: work, bytes and predicted ms of every group on every compute unit.

Per node the prediction is the unit profile's roofline (:meth:`UnitProfile.node_ms`);
a group costs the sum of its nodes. Two things every backend here does (ONNX
Runtime's graph optimizations, TensorRT's layer fusion) are modelled, so that
the figures match what runs:

- an *epilogue* (activation, BatchNormalization, constant Mul/Add, a residual
  Add/Sum) applied to the single-use output of a Conv/Gemm/MatMul, directly or
  through another epilogue, runs inside that kernel: 0 ms; except that a
  grouped conv (op class ``grouped``) takes no residual Add/Sum: ONNX Runtime
  fuses a residual only into the convs of its blocked-layout (NCHWc) path,
  which grouped convs with several channels per group do not take;
- Dropout and Identity are removed; views (Reshape, Flatten, Squeeze, Unsqueeze)
  cost only the per-node overhead;
- a conv the runtime runs in its blocked layout computes whole channel blocks
  (:func:`edgec.passes.layout.channel_padding`) and, a grouped one, not as one
  GEMM per group; a pool it runs in plain layout reaches the profile's
  ``plain_efficiency`` where the profile has one;
- where the unit's runtime runs some ops in a blocked layout (profile
  ``layout_block``), each conversion :mod:`edgec.passes.layout` finds costs
  :meth:`UnitProfile.conversion_ms`: in :func:`predict_ms` the nodes run as one
  session (inputs arrive and outputs leave plain); in the `cost` pass the
  conversions of the whole graph join the group of the blocked node they sit next to.

Also here: :func:`transfer_ms` (a tensor between two devices: link time plus
serialization at both ends; every transfer cost in edgec comes from it) and :func:`stage_memory_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Iterable, Sequence

import onnx_graphsurgeon as gs

from edgec.errors import EdgecError
from edgec.flops import VIEW_OPS, NodeWork, node_work, op_class
from edgec.ir import GroupCost, Program
from edgec.passes.layout import BLOCKED_POOLS, blocked_nodes, channel_padding, conversions
from edgec.pipeline import PassResult
from edgec.profile import UnitProfile, resolve_unit_profile

_PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv"})
_EPILOGUES = frozenset({
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
    "BatchNormalization", "Add", "Sum", "Mul", "Sub", "Div",
})
_CONST_ONLY_EPILOGUES = frozenset({"Mul", "Sub", "Div"})  # folded only with a constant operand
REMOVED_OPS = frozenset({"Dropout", "Identity"})


@dataclass(frozen=True)
class Cost:
    """Fill ``program.costs`` for every group and every unit of ``program.cluster``."""

    name: ClassVar[str] = "cost"

    def run(self, program: Program) -> PassResult:
        if program.cluster is None:
            raise EdgecError("no cluster to cost against; pass a cluster file with -t cluster.json")
        units = [(f"{d.name}.{u.name}", resolve_unit_profile(d, u)) for d, u in program.cluster.units()]
        nodes = list(program.graph.nodes)
        fused = fused_nodes(nodes)
        group_of = program.group_of()
        blocked = {b: blocked_nodes(nodes, b, fused) for b in {p.layout_block for _, p in units}}
        costs: dict[str, GroupCost] = {}
        for node in nodes:
            work = node_work(node)
            group = group_of.get(node.name, node.name)
            cost = costs.setdefault(group, GroupCost(0.0, 0, 0, {uid: 0.0 for uid, _ in units}))
            cost.flops += work.flops
            cost.param_bytes += work.param_bytes
            for uid, profile in units:
                cost.ms[uid] += node_ms(node, work, profile, fused=node.name in fused,
                                        blocked=node.name in blocked[profile.layout_block])
        for uid, profile in units:
            for conv in conversions(nodes, profile.layout_block, fused):
                costs[group_of.get(conv.node, conv.node)].ms[uid] += profile.conversion_ms(conv.nbytes)
        for group, nbytes in _group_output_bytes(nodes, group_of).items():
            costs[group].activation_bytes = nbytes
        program.costs = costs
        return PassResult(program, changed=True)


def node_ms(node: gs.Node, work: NodeWork, profile: UnitProfile, *, fused: bool = False,
            blocked: bool = False) -> float:
    """Predicted ms of one node on one unit; `fused` marks an epilogue its producer's kernel runs, `blocked`
    a node the unit's runtime runs in its blocked layout (:func:`edgec.passes.layout.blocked_nodes`)."""
    if fused or node.op in REMOVED_OPS:
        return 0.0
    if node.op in VIEW_OPS:
        return profile.overhead_ms
    if blocked:
        padding = channel_padding(node, profile.layout_block)
        return profile.node_ms(replace(work, flops=work.flops * padding) if padding != 1.0 else work, blocked=True)
    return profile.node_ms(work, plain=node.op in BLOCKED_POOLS)


def predict_ms(nodes: Sequence[gs.Node], profile: UnitProfile) -> float:
    """Predicted ms of running these nodes (a whole graph or one stage) on one unit, layout conversions included."""
    fused = fused_nodes(nodes)
    blocked = blocked_nodes(nodes, profile.layout_block, fused)
    ms = sum(node_ms(n, node_work(n), profile, fused=n.name in fused, blocked=n.name in blocked) for n in nodes)
    return ms + layout_ms(nodes, profile, fused)


def layout_ms(nodes: Sequence[gs.Node], profile: UnitProfile, fused: Iterable[str] | None = None) -> float:
    """ms the unit's runtime spends converting layouts when running these nodes as one session."""
    if profile.layout_block <= 0:
        return 0.0
    fused = fused_nodes(nodes) if fused is None else fused
    return sum(profile.conversion_ms(c.nbytes) for c in conversions(nodes, profile.layout_block, fused))


def fused_nodes(nodes: Iterable[gs.Node]) -> set[str]:
    """Names of the nodes that run inside their producer's kernel (see the module docstring).

    Only producers among `nodes` count, so an epilogue cut away from its Conv is costed on its own.
    """
    nodes = list(nodes)
    members = {id(n) for n in nodes}
    fused: set[str] = set()
    absorbing: dict[int, bool] = {}  # id of a node whose output an epilogue may join -> may a residual join
    for node in nodes:  # topological order
        if node.op in _PRODUCERS:
            absorbing[id(node)] = op_class(node) != "grouped"
            continue
        if node.op not in _EPILOGUES:
            continue
        variables = [t for t in node.inputs if not isinstance(t, gs.Constant)]
        constants = [t for t in node.inputs if isinstance(t, gs.Constant)]
        if node.op in _CONST_ONLY_EPILOGUES and not constants:
            continue
        for t in variables:
            producer = t.inputs[0] if len(t.inputs) == 1 else None
            if (producer is not None and id(producer) in members and id(producer) in absorbing
                    and len(t.outputs) == 1 and len(variables) <= 2
                    and (len(variables) == 1 or absorbing[id(producer)])):
                fused.add(node.name)
                absorbing[id(node)] = absorbing[id(producer)]
                break
    return fused


# -- transfers and memory --------------------------------------------------------------------


def transfer_ms(program: Program, nbytes: int, src: str, dst: str) -> float:
    """ms to move a tensor of nbytes from device src to device dst (see :func:`transfer_rate`)."""
    if src == dst or nbytes <= 0:
        return 0.0
    bytes_per_s, latency_ms = transfer_rate(program, src, dst)
    return float("inf") if bytes_per_s <= 0 else latency_ms + nbytes * 1e3 / bytes_per_s


def transfer_rate(program: Program, src: str, dst: str) -> tuple[float, float]:
    """(bytes per second, latency ms) of a transfer from src to dst; (0, 0) without a link.

    The link's latency and bandwidth, with one copy at each end to serialize and
    deserialize the message at each device's CPU memory bandwidth: per byte,
    1/link + 1/copy(src) + 1/copy(dst). The partition problem's link matrices
    are these, so partition, manifest and prediction charge a transfer alike.
    """
    cluster = program.cluster
    if cluster is None:
        raise EdgecError("no cluster to cost transfers against; pass a cluster file with -t cluster.json")
    link = cluster.link(src, dst) if src != dst else None
    if link is None:
        return (0.0, 0.0)
    seconds_per_byte = 8 / (link.bandwidth_mbps * 1e6) + sum(
        1 / (_copy_profile(program, name).bandwidth_gbs * 1e9) for name in (src, dst))
    return (1 / seconds_per_byte, link.latency_ms)


def _copy_profile(program: Program, device_name: str) -> UnitProfile:
    """The profile whose memory bandwidth serializes a device's messages: its first CPU unit's."""
    device = program.cluster.devices[device_name]  # type: ignore[union-attr]
    units = sorted(device.units.values(), key=lambda u: u.kind != "cpu")
    return resolve_unit_profile(device, units[0])


def stage_memory_bytes(program: Program, group_names: Iterable[str]) -> int:
    """Bytes a stage needs resident: its weights plus the peak of live activations.

    The stage runs its nodes in graph (topological) order. A tensor is live from
    when it arrives (stage inputs) or is produced until its last reader in the
    stage; tensors the stage hands on (read by later stages or graph outputs)
    stay live to the end.
    """
    wanted = set(group_names)
    group_of = program.group_of()
    nodes = [n for n in program.graph.nodes if group_of.get(n.name, n.name) in wanted]
    inside = {id(n) for n in nodes}
    graph_outputs = {t.name for t in program.graph.outputs}

    weights: dict[str, int] = {}
    size: dict[str, int] = {}
    last_use: dict[str, int] = {}
    born: dict[str, int] = {}
    end = len(nodes)
    for step, node in enumerate(nodes):
        for t in node.inputs:
            if isinstance(t, gs.Constant):
                weights.setdefault(t.name or str(id(t)), int(t.values.nbytes))
            elif t.name:
                size.setdefault(t.name, _tensor_bytes(t))
                born.setdefault(t.name, 0)  # received from outside: resident from the start
                last_use[t.name] = max(last_use.get(t.name, step), step)
        for t in node.outputs:
            if not t.name:
                continue
            size[t.name] = _tensor_bytes(t)
            born[t.name] = step
            leaves = t.name in graph_outputs or any(id(c) not in inside for c in t.outputs)
            last_use[t.name] = end if leaves else max(last_use.get(t.name, step), step)
    for name, b in born.items():  # a tensor produced in the stage and read later in it
        last_use[name] = max(last_use.get(name, b), b)
    peak = 0
    for step in range(end):
        live = sum(size[n] for n in size if born[n] <= step <= last_use[n])
        peak = max(peak, live)
    return sum(weights.values()) + peak


def _tensor_bytes(t: gs.Tensor) -> int:
    from edgec.ir import tensor_nbytes
    return tensor_nbytes(t)


def _group_output_bytes(nodes: Sequence[gs.Node], group_of: dict[str, str]) -> dict[str, int]:
    """Per group: bytes of the tensors it produces that are read outside it or are graph outputs."""
    out: dict[str, int] = {}
    for node in nodes:
        group = group_of.get(node.name, node.name)
        out.setdefault(group, 0)
        for t in node.outputs:
            if not t.name:
                continue
            readers = {group_of.get(c.name, c.name) for c in t.outputs}
            if not t.outputs or readers - {group}:
                out[group] += _tensor_bytes(t)
    return out
