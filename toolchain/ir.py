"""The IR that flows through the passes.

A :class:`Program` is the onnx-graphsurgeon graph plus typed annotations keyed
by node or group name. Annotations never go into ONNX node attributes, so the
graph stays a valid ONNX model at every step and can be exported at any time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgec.cluster import Cluster
from edgec.ir_listing import fit, plan_summary
from edgec.weights import as_inputs, constant_nbytes, lighten
from edgec.weights import inline as inline_weights

_DTYPE_SHORT = {
    "float32": "f32", "float16": "f16", "float64": "f64", "bfloat16": "bf16",
    "int64": "i64", "int32": "i32", "int16": "i16", "int8": "i8",
    "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "bool",
}


@dataclass
class FusionGroup:
    """Nodes a partition never cuts apart (e.g. Conv + BN + Relu + residual Add)."""

    name: str
    nodes: list[str]
    pattern: str = "single"


@dataclass
class GroupCost:
    """What one fusion group costs: work, bytes, and predicted ms on each compute unit."""

    flops: float
    param_bytes: int
    activation_bytes: int
    ms: dict[str, float] = field(default_factory=dict)  # unit id ("rpi4.cpu") -> ms


@dataclass
class DeviceSegment:
    """The global partition's answer: a contiguous run of groups placed on one device (no unit yet), or,
    where boards and units were searched together, on one unit of it (``unit``, with any replicas)."""

    name: str
    device: str
    groups: list[str]
    predicted_ms: float = 0.0  # on the device's fastest unit per group, a lower bound
    memory_bytes: int = 0
    unit: str | None = None  # chosen with the boards: the local partition keeps it
    weight: float | None = None
    replicas: list["Replica"] = field(default_factory=list)


@dataclass
class Stage:
    """A contiguous run of groups placed on one compute unit of one device: one sub-model in out/."""

    name: str
    device: str
    unit: str
    groups: list[str]
    predicted_ms: float
    memory_bytes: int
    backend: str
    variant: str
    weight: float | None = None  # a replicated stage: this copy's share of the frames
    replicas: list["Replica"] = field(default_factory=list)  # the stage's other copies (same groups)
    step: int | None = None  # stages that share a step run at once on different units (None: its own step)
    parallel: str | None = None  # "slice": each stage of the step computes a band of rows of every frame
    slice: dict[str, Any] | None = None  # which rows the stage owns, its halo, its redundant FLOPs
    accuracy: float | None = None  # the plan's metric with this stage alone in its variant (None: not measured)

    @property
    def unit_id(self) -> str:
        return f"{self.device}.{self.unit}"


@dataclass
class Replica:
    """Another copy of a stage on another unit: it computes the same groups on its share of the frames."""

    device: str
    unit: str
    predicted_ms: float
    memory_bytes: int
    backend: str
    variant: str
    weight: float

    @property
    def unit_id(self) -> str:
        return f"{self.device}.{self.unit}"


@dataclass
class Prediction:
    latency_ms: float
    bottleneck_ms: float
    throughput_fps: float
    energy_mj: float | None = None  # per frame; None where a unit has no power figures
    accuracy: float | None = None  # the stream's measured accuracy (edgec.accuracy); None: not measured


@dataclass
class Program:
    """One model being compiled: the graph and everything the passes learned about it.

    Each field has one meaning from the pass that provides it on (the passes
    declare which, see edgec.pipeline.FACTS): `segments` is the partition
    across devices, `stages` the split of each segment over the device's units.
    """

    graph: gs.Graph
    opsets: dict[str, int]  # domain -> version, as the source model imports them
    ir_version: int
    source_path: str
    source_sha256: str
    cluster: Cluster | None = None
    groups: dict[str, FusionGroup] = field(default_factory=dict)
    costs: dict[str, GroupCost] = field(default_factory=dict)
    unsupported: dict[str, dict[str, str]] = field(default_factory=dict)  # group -> unit id -> why it cannot run there
    segments: list[DeviceSegment] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    prediction: Prediction | None = None
    # the variants pass's record of how variants were chosen (the manifest's `accuracy` object), and the
    # edgec.accuracy.Measurer whose calibration values codegen quantizes int8 stages with
    variant_choice: dict[str, Any] | None = None
    measurer: Any = None

    @classmethod
    def empty(cls) -> "Program":
        """The program before `load` has read a model into it."""
        return cls(graph=gs.Graph(), opsets={}, ir_version=0, source_path="", source_sha256="")

    # -- graph views -----------------------------------------------------------------

    @property
    def opset(self) -> int:
        return self.opsets.get("", self.opsets.get("ai.onnx", 0))

    def to_onnx(self, inline: bool = True) -> onnx.ModelProto:
        """Export the graph as a model with the source's opsets.

        With `inline` False, large constants (edgec.weights) are placeholders, initializers whose data
        is an external reference: the model is a few KB whatever the weights weigh, and codegen writes
        the bytes. The IR version is at least 4: initializers are no longer listed as graph inputs
        after load, which IR 3 does not allow.
        """
        lighten(self.graph)
        model = gs.export_onnx(self.graph, do_type_check=False)
        if inline:
            inline_weights(model, self.graph)
        model.ir_version = max(self.ir_version, 4)
        del model.opset_import[:]
        model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in self.opsets.items())
        return model

    def to_onnx_structure(self) -> onnx.ModelProto:
        """The model without large weights: they are typed graph inputs.

        Cheap to check with onnx.checker between passes, where exporting
        hundreds of MB of weights each time would dominate compile time.
        """
        model = self.to_onnx(inline=False)
        as_inputs(model)
        return model

    def group_of(self) -> dict[str, str]:
        """Node name -> group name (every node is its own group until fusion says otherwise)."""
        if not self.groups:
            return {n.name: n.name for n in self.graph.nodes}
        return {node: g.name for g in self.groups.values() for node in g.nodes}

    def group_ms(self, group: str, unit_id: str) -> float:
        """Predicted ms of one group on one unit (`device.unit`); inf where capability says it cannot run there."""
        if unit_id in self.unsupported.get(group, {}):
            return float("inf")
        return self.costs[group].ms[unit_id]

    def nodes_of(self, groups: Iterable[str]) -> list[gs.Node]:
        """The nodes of these groups, in graph order."""
        wanted = set(groups)
        group_of = self.group_of()
        return [n for n in self.graph.nodes if group_of.get(n.name, n.name) in wanted]

    def output_names(self) -> list[str]:
        return [t.name for t in self.graph.outputs]

    def placement(self) -> dict[str, tuple[str, str]]:
        """Group name -> (stage or segment name, where: `device.unit`, or `device` before local-partition)."""
        if self.stages:
            return {g: (s.name, s.unit_id) for s in self.stages for g in s.groups}
        return {g: (s.name, s.device) for s in self.segments for g in s.groups}

    # -- dumps -----------------------------------------------------------------------

    def to_text(self) -> str:
        """One line per node (wrapped past edgec.ir_listing.WIDTH), readable without a viewer; once placed,
        a summary of the plan at the end."""
        group_of = self.group_of()
        placed = self.placement()
        lines = [f"# edgec IR  opset {self.opset}  source {self.source_path}"]
        for s in self.stages:
            if s.slice:
                sl = s.slice
                lines.append(f"# slice {s.name}@{s.unit_id} step {s.step}: rows [{sl['rows'][0]},{sl['rows'][1]}) of "
                             f"{sl['of']} of %{sl['tensor']}, reads rows [{sl['input_rows'][0]},{sl['input_rows'][1]}) "
                             f"of %{sl['input']} (halo {sl['halo_rows'][0]} above, {sl['halo_rows'][1]} below), "
                             f"{sl['redundant_flops'] / 1e6:.1f} MFLOP redundant")
        for t in self.graph.inputs:
            lines.append(f"input  %{t.name}: {type_str(t)}")
        for node in self.graph.nodes:
            outs = ", ".join(f"%{t.name}: {type_str(t)}" for t in node.outputs)
            args = ", ".join(_arg_str(t) for t in node.inputs)
            attrs = _attrs_str(node)
            line = f"{outs} = {node.op}({args}){(' {' + attrs + '}') if attrs else ''}"
            notes = _node_notes(node.name, group_of, self.groups, self.costs, placed, self.unsupported)
            lines += fit(line, [node.name] + [n for n in notes.split("  ") if n])
        for t in self.graph.outputs:
            lines.append(f"output %{t.name}: {type_str(t)}")
        lines += plan_summary(self, tensor_nbytes)
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """Structured dump: nodes with their tensors, plus every annotation."""
        return {
            "opset": self.opset,
            "source": self.source_path,
            "inputs": [_tensor_json(t) for t in self.graph.inputs],
            "outputs": [_tensor_json(t) for t in self.graph.outputs],
            "nodes": [
                {
                    "name": n.name,
                    "op": n.op,
                    "domain": n.domain or "",
                    "inputs": [t.name for t in n.inputs],
                    "outputs": [_tensor_json(t) for t in n.outputs],
                }
                for n in self.graph.nodes
            ],
            "groups": [asdict(g) for g in self.groups.values()],
            "costs": {k: asdict(v) for k, v in self.costs.items()},
            "unsupported": self.unsupported,
            "segments": [asdict(s) for s in self.segments],
            "stages": [asdict(s) for s in self.stages],
            "prediction": asdict(self.prediction) if self.prediction else None,
            "variant_choice": self.variant_choice,
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=1, default=_json_default)


def node_reads(node: gs.Node) -> list[gs.Tensor]:
    """Named tensors a node reads: its inputs, and what nodes of its subgraphs read that the subgraph does not
    make or take as inputs (outer-scope tensors; constants read in a body count, whichever scope holds them)."""
    out = [t for t in node.inputs if t.name]
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            # names the subgraph defines itself; an outer tensor keeps its outer producer in graphsurgeon
            inner = {t.name for sub in value.nodes for t in sub.outputs} | {t.name for t in value.inputs}
            for sub in value.nodes:
                out.extend(t for t in node_reads(sub) if t.name not in inner)
    return out


def consumed_tensors(node: gs.Node) -> list[gs.Tensor]:
    """Variable tensors a node reads (:func:`node_reads` less constants)."""
    return [t for t in node_reads(node) if not isinstance(t, gs.Constant)]


def name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed or clashing nodes the name `<op>_<index>`; named nodes keep theirs."""
    taken = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.op_type}_{index}"
        name, k = base, 1
        while name in taken or name in seen:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        seen.add(name)


def type_str(t: gs.Tensor) -> str:
    """`f32[1,3,224,224]`, `?` for unknown dtype/shape."""
    dtype = _dtype_name(t.dtype)
    if t.shape is None:
        return f"{dtype}[?]"
    return f"{dtype}[{','.join(str(d) for d in t.shape)}]"


def tensor_nbytes(t: gs.Tensor) -> int:
    """Bytes of a tensor with a static shape (0 when unknown)."""
    if isinstance(t, gs.Constant):
        return constant_nbytes(t)
    if t.shape is None or t.dtype is None or any(not isinstance(d, int) for d in t.shape):
        return 0
    return int(np.prod(t.shape, dtype=np.int64)) * _itemsize(t.dtype)


def _itemsize(dtype: Any) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 4


def _dtype_name(dtype: Any) -> str:
    if dtype is None:
        return "?"
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    return _DTYPE_SHORT.get(name, name)


def _arg_str(t: gs.Tensor) -> str:
    if not t.name:
        return "_"
    if isinstance(t, gs.Constant):
        return f"%{t.name}:const"
    return f"%{t.name}"


def _attrs_str(node: gs.Node) -> str:
    parts = []
    for key, value in node.attrs.items():
        if isinstance(value, (gs.Tensor, gs.Graph, np.ndarray)):
            parts.append(f"{key}=<{type(value).__name__}>")
        elif isinstance(value, (list, tuple)):
            parts.append(f"{key}={'x'.join(str(v) for v in value)}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _node_notes(node_name, group_of, groups, costs, placed, unsupported) -> str:
    group = group_of.get(node_name)
    out = ""
    if groups and group is not None:
        out += f"  {group}"
    cost = costs.get(group) if group is not None else None
    if cost is not None and groups.get(group, None) is not None and groups[group].nodes[0] == node_name:
        out += f"  {cost.flops / 1e6:.1f} MFLOP"
        refused = unsupported.get(group, {})
        out += "".join(f"  {unit} {'cannot' if unit in refused else f'{ms:.3g}ms'}" for unit, ms in cost.ms.items())
    elif cost is not None and not groups:
        out += f"  {cost.flops / 1e6:.1f} MFLOP"
    where = placed.get(group) if group is not None else None
    if where is not None:
        out += f"  -> {where[0]}@{where[1]}"
    return out


def _tensor_json(t: gs.Tensor) -> dict[str, Any]:
    return {"name": t.name, "dtype": _dtype_name(t.dtype), "shape": list(t.shape) if t.shape is not None else None}


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)
