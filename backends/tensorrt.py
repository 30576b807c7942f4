"""The `tensorrt` backend: the Jetson Nano's Maxwell GPU through TensorRT 8.2.

JetPack 4.6.1+ ships TensorRT 8.2.1 and the Nano cannot go past it. Its ONNX
parser reads opset <= 13 and the operators, types and limits in
`edgec.backends.trt82_operators`; what it cannot take runs on the Nano's CPU
unit (the partitioner splits a Nano stage with `supports`).

A GPU stage runs under ONNX Runtime's TensorRT execution provider (NVIDIA's
onnxruntime-gpu wheel for JetPack 4.6, Python 3.6), with the options in the
stage's `session.ort_tensorrt_ep`. Engines are not portable: the provider
builds them on the Nano the first time the stage loads (minutes) and keeps
them in its engine cache, out/<device>/trt_cache, from which later starts load
them in seconds. The launcher refuses to serve where onnxruntime has no
TensorRT provider, so a GPU stage never runs on the CPU unnoticed. Precision
is fp16 or fp32, never int8: Maxwell sm_53 has no INT8 path (device-facts.md).

fp16: the sub-model stays fp32 and TensorRT's fp16 mode (`trt_fp16_enable`) lowers it. TensorRT then
picks the precision per layer (keeping fp32 where fp16 has no kernel or is
slower), the engine's bindings stay fp32 so neighbouring CPU stages exchange
float32, and the 8.2 parser has no native fp16 initializers anyway (added in
8.4 GA). `edgec.backends.fp16.to_fp16` writes the fp16 model explicitly: it
is what the accuracy check runs under ONNX Runtime, and an option for a
runtime that wants an fp16 ONNX file. Tolerance: `fp16.FP16_TOLERANCE`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from edgec.backends.fp16 import check_fp16, formal_at, node_schema, to_fp16
from edgec.backends.decompose import needs_body
from edgec.backends.opset import convert_for_device, elem_type, lowered_op_types, node_convertible
from edgec.backends.trt82_operators import (MAX_IR_VERSION, MAX_OPSET, OPERATORS, RESTRICTIONS, SOURCE,
                                            const_value)
from edgec.backends.base import Backend
from edgec.backends.registry import register
from edgec.errors import EdgecError
from edgec.weights import check_model
from edgec.manifest import StageSpec

if TYPE_CHECKING:
    from edgec.cluster import Device

NAME = "tensorrt"
DEFAULT_WORKSPACE_MIB = 1024  # the Nano's 4 GB are shared with the CPU; lower to 512 if a build runs out
ENGINE_CACHE = "trt_cache"  # out/<device>/trt_cache: engines the TensorRT provider built on the board
BINDABLE_DTYPES = frozenset({"float32", "float16", "int32", "bool"})  # TensorRT 8.2 engine bindings
HOST_COPY_GBPS = 10.0  # host <-> GPU copies through the Nano's shared LPDDR4 (25.6 GB/s peak; a copy reads and writes)


_TRT_TYPES = {
    onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.FLOAT16: "FP16", onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT32",  # the parser casts INT64 down to INT32
    onnx.TensorProto.INT8: "INT8", onnx.TensorProto.BOOL: "BOOL",
}
_INT32 = np.iinfo(np.int32)


# -- capability ----------------------------------------------------------------------------


def supports(node: gs.Node, opset: int) -> str | None:
    """None if TensorRT 8.2 on the Nano's GPU takes the node, else why not.

    In order: the op is in the 8.2 parser's table and supported there; the
    node has a form at opset 13; every tensor has a static shape and a type
    TensorRT holds (no DOUBLE or INT8 tensors, INT64 only within INT32 range);
    the op's types column; the op's restrictions (trt82_operators.RESTRICTIONS).
    """
    domain = node.domain or ""
    if domain not in ("", "ai.onnx"):
        return f"op domain '{domain}': TensorRT 8.2's ONNX parser reads the ONNX domain only (no plugins here)"
    info = OPERATORS.get(node.op)
    if info is None or not info.supported:
        if opset > MAX_OPSET and needs_body(node.op, domain, MAX_OPSET):
            return _body_reason(node, opset)
        missing = "not in" if info is None else "unsupported by"
        return f"{node.op} is {missing} TensorRT 8.2's ONNX parser ({SOURCE})"
    if opset > MAX_OPSET:
        reason = node_convertible(node, opset, MAX_OPSET)
        if reason is not None:
            return f"TensorRT 8.2 reads opset <= {MAX_OPSET}: {reason}"
    return (_tensor_reason(node) or _types_reason(node, info.types)
            or (RESTRICTIONS[node.op](node) if node.op in RESTRICTIONS else None)
            or _subgraph_reason(node, opset))


def _body_reason(node: gs.Node, opset: int) -> str | None:
    """A function op newer than opset 13 runs as its ONNX function body (prepare_submodel lowers it)."""
    lowered = lowered_op_types(node, opset, MAX_OPSET)
    if lowered is None:
        return f"{node.op} is not in TensorRT 8.2's ONNX parser ({SOURCE}), and has no form at opset {MAX_OPSET}"
    refused = sorted({op for op in lowered if op not in OPERATORS or not OPERATORS[op].supported})
    if refused:
        return (f"{node.op} runs on TensorRT 8.2 only as its ONNX function body, which needs {', '.join(refused)}: "
                f"not in the parser ({SOURCE})")
    return _tensor_reason(node)


def _tensor_reason(node: gs.Node) -> str | None:
    for t in list(node.inputs) + list(node.outputs):
        if not t.name:
            continue
        elem = elem_type(t.dtype)
        if t in node.outputs and not t.outputs and t.shape is None:
            continue  # an optional output nothing reads (Dropout's mask)
        value = const_value(t) if t in node.inputs and elem == onnx.TensorProto.INT64 else None
        if value is not None and np.asarray(value).dtype == np.int64 and node.op != "Slice" and np.size(value):
            values = np.asarray(value)
            if values.min() < _INT32.min or values.max() > _INT32.max:
                return f"INT64 constant '{t.name}' has values outside INT32, which TensorRT would clamp"
        if isinstance(t, gs.Constant):
            continue
        if t.shape is None or any(not isinstance(d, (int, np.integer)) or d < 0 for d in t.shape):
            return f"tensor '{t.name}' has no static shape; TensorRT engines here are built for static shapes"
        if len(t.shape) > 8:
            return f"tensor '{t.name}' has rank {len(t.shape)}; TensorRT takes at most 8 dimensions"
        if elem == onnx.TensorProto.INT8:
            return f"tensor '{t.name}' is INT8; the Jetson Nano's Maxwell GPU (sm_53) has no INT8 path"
        if elem is not None and elem not in _TRT_TYPES:
            return (f"tensor '{t.name}' is {helper.tensor_dtype_to_string(elem).split('.')[-1]}; TensorRT 8.2 "
                    f"holds FLOAT, FLOAT16, INT32 (INT64 cast down), BOOL")
    return None


def _types_reason(node: gs.Node, types: frozenset[str]) -> str | None:
    if node.op == "Cast":
        to = node.attrs.get("to")
        if to is not None and int(to) not in _TRT_TYPES:
            return f"Cast to {helper.tensor_dtype_to_string(int(to)).split('.')[-1]} is unsupported"
        return None
    if node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        dtype = elem_type(value.dtype) if isinstance(value, gs.Constant) else onnx.TensorProto.FLOAT
        trt = _TRT_TYPES.get(dtype)
        return None if trt in types else f"ConstantOfShape of {trt or dtype}: TensorRT 8.2 fills FP32 only"
    data = [t for t in node.inputs if t.name]
    if node.op == "Where" and len(node.inputs) > 1:
        data = [node.inputs[1]]
    if not data:
        data = [t for t in node.outputs if t.name]
    if not data:
        return None
    elem = elem_type(data[0].dtype)
    if elem is None or elem == onnx.TensorProto.DOUBLE and isinstance(data[0], gs.Constant):
        return None
    trt = _TRT_TYPES.get(elem)
    if trt not in types:
        name = trt or helper.tensor_dtype_to_string(elem).split(".")[-1]
        return f"{node.op} on {name}: TensorRT 8.2 runs {node.op} on {', '.join(sorted(types))}"
    return None


def _subgraph_reason(node: gs.Node, opset: int) -> str | None:
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            for inner in value.nodes:
                reason = supports(inner, opset)
                if reason is not None:
                    return f"{node.op} body node '{inner.name}' ({inner.op}): {reason}"
    return None


# -- sub-models ----------------------------------------------------------------------------


def prepare_submodel(model: onnx.ModelProto, fp16_onnx: bool = False) -> onnx.ModelProto:
    """The GPU stage's sub-model as TensorRT 8.2 parses it.

    Opset <= 13 and IR <= 7 (version conversion), static shapes, float32 /
    float16 / int32 / bool graph inputs and outputs (engine bindings), every
    node in the 8.2 table and within its restrictions, onnx.checker full
    check. EdgecError names the first tensor or node that fails and what to do.
    With `fp16_onnx` the result is `to_fp16` of it (fp32 I/O kept); by default
    it stays fp32 and trtexec --fp16 lowers it.
    """
    out = convert_for_device(model, MAX_OPSET, MAX_IR_VERSION)
    _drop_unread_optional_outputs(out)
    try:
        out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise EdgecError(f"GPU sub-model: shape inference failed: {str(exc).strip().splitlines()[0]}") from None
    graph = gs.import_onnx(out)
    failures = [(n, r) for n in graph.nodes if (r := supports(n, MAX_OPSET)) is not None]
    if failures:
        node, reason = failures[0]
        more = f" (and {len(failures) - 1} more nodes)" if len(failures) > 1 else ""
        raise EdgecError(f"GPU sub-model: node '{node.name}' ({node.op}): {reason}{more}; "
                         f"place it on the Nano's CPU unit")
    _check_static(out)
    if fp16_onnx:
        out = to_fp16(out)
    check_model(out, full_check=True)  # large weights may be placeholders
    return out


def _drop_unread_optional_outputs(model: onnx.ModelProto) -> None:
    """Remove optional node outputs nothing reads (e.g. Dropout's mask): they have no shape to check."""
    g = model.graph
    read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for node in g.node:
        schema = node_schema(node, opset)
        if schema is None:
            continue
        outs = list(node.output)
        for j in range(1, len(outs)):
            f = formal_at(schema.outputs, j)
            if outs[j] not in read and f is not None and f.option == onnx.defs.OpSchema.FormalParameterOption.Optional:
                outs[j] = ""
        while len(outs) > 1 and not outs[-1]:
            outs.pop()
        del node.output[:]
        node.output.extend(outs)
    names = {o for n in g.node for o in n.output}
    kept = [v for v in g.value_info if v.name in names]
    del g.value_info[:]
    g.value_info.extend(kept)


def _check_static(model: onnx.ModelProto) -> None:
    g = model.graph
    io = {v.name for v in list(g.input) + list(g.output)}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        tt = v.type.tensor_type
        if not tt.HasField("shape") or any(not d.HasField("dim_value") for d in tt.shape.dim):
            raise EdgecError(f"GPU sub-model: tensor '{v.name}' has no static shape; pin the model's inputs "
                             f"with --input-shape")
        if v.name in io and tt.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                 onnx.TensorProto.INT32, onnx.TensorProto.BOOL):
            kind = helper.tensor_dtype_to_string(tt.elem_type).split(".")[-1]
            raise EdgecError(f"GPU sub-model: input/output '{v.name}' is {kind}; a TensorRT 8.2 binding is "
                             f"FLOAT, HALF, INT32 or BOOL: move the node that makes or reads it to the CPU unit")


# -- bundle --------------------------------------------------------------------------------


def _check_variant(variant: str, stage: StageSpec | None) -> None:
    where = f"stage '{stage.name}': " if stage is not None else ""
    if variant == "int8":
        raise EdgecError(f"{where}int8 on the Jetson Nano's GPU gives no speed-up (Maxwell sm_53 "
                         f"has no INT8 path); use fp16")
    if variant not in ("fp16", "fp32"):
        raise EdgecError(f"{where}variant '{variant}' is not one TensorRT builds here; "
                         f"use fp16 or fp32")


def ort_trt_options(device: Device, stage: StageSpec, workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> dict:
    """ONNX Runtime TensorRT execution-provider options: engines built once on the board, then cached."""
    return {
        "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        "TensorrtExecutionProvider": {
            "device_id": 0,
            "trt_fp16_enable": stage.variant == "fp16",
            "trt_int8_enable": False,
            "trt_max_workspace_size": int(workspace_mib) * 2**20,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": f"{device.name}/{ENGINE_CACHE}",  # relative to out/
            "trt_max_partition_iterations": 1000,
            "trt_min_subgraph_size": 1,
        },
    }


def session_config(device: Device, stage: StageSpec, workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> dict[str, Any]:
    """The manifest's `StageSpec.session` for a GPU stage."""
    _check_variant(stage.variant, stage)
    return {
        "precision": stage.variant,
        "workspace_mib": int(workspace_mib),
        "tensorrt": "8.2",
        "ort_tensorrt_ep": ort_trt_options(device, stage, workspace_mib),
    }


def bundle_files(device: Device, stages: Sequence[StageSpec]) -> dict[str, str]:
    """Nothing besides the sub-models: the manifest holds each stage's provider options."""
    return {}


def prelaunch(device: Device, stages: Sequence[StageSpec]) -> list[str]:
    """Launcher lines: refuse to serve a GPU stage where onnxruntime has no TensorRT provider."""
    if not stages:
        return []
    check = ("import onnxruntime as o, sys; "
             "sys.exit(0 if 'TensorrtExecutionProvider' in o.get_available_providers() else 1)")
    return [f'if ! python3 -c "{check}"; then',
            f"  echo 'edgec: device {device.name}: this onnxruntime has no TensorRT execution provider; install "
            f"the onnxruntime-gpu wheel for JetPack from NVIDIA (see {device.name}/README.md)' >&2",
            "  exit 2",
            "fi",
            f"mkdir -p {device.name}/{ENGINE_CACHE}"]


def readme(device: Device, stages: Sequence[StageSpec]) -> str:
    lines = [
        "## GPU stages (TensorRT 8.2, through ONNX Runtime's TensorRT execution provider)",
        "",
        "Needs JetPack 4.6.1 or later (TensorRT 8.2.1, CUDA 10.2) and NVIDIA's onnxruntime-gpu wheel for it",
        "(Install, above); the launcher refuses to serve without the TensorRT provider. The first start builds",
        f"each stage's engine on the Nano (minutes per stage) into {device.name}/{ENGINE_CACHE}/; later starts",
        "load it in seconds. Delete that folder after a JetPack upgrade.",
        "",
        "| stage | sub-model | precision |",
        "|---|---|---|",
    ]
    for s in stages:
        lines.append(f"| {s.name} | {s.model.rsplit('/', 1)[-1]} | {s.variant} |")
    lines.append("")
    return "\n".join(lines)


# -- the backend object ---------------------------------------------------------------------


@register
class TensorRTBackend(Backend):
    name = NAME
    unit_kinds = ("gpu",)
    variants = ("fp16", "fp32")  # fp16 by default: Maxwell runs it at twice the fp32 rate; no int8 path
    variant_speed = {"fp16": 1.0, "fp32": 0.5}  # the built-in profile is fp16; fp32 runs at half its rate
    bindable_dtypes = BINDABLE_DTYPES

    def supports(self, node: gs.Node, opset: int) -> str | None:
        return supports(node, opset)

    def copy_ms(self, nbytes: int) -> float:
        return nbytes / (HOST_COPY_GBPS * 1e6)

    def prepare_submodel(self, model: onnx.ModelProto, variant: str,
                         calibration: Sequence[dict[str, Any]] | None = None) -> onnx.ModelProto:
        _check_variant(variant, None)
        return prepare_submodel(model)

    def emulate(self, model: onnx.ModelProto, variant: str,
                calibration: Sequence[dict[str, Any]] | None = None) -> onnx.ModelProto:
        """fp16: every weight and activation stored in fp16 (`to_fp16`), fp32 arithmetic between them."""
        if variant == "fp16":
            return to_fp16(model)
        return super().emulate(model, variant, calibration)

    def safe_without_data(self, variant: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> bool:
        """fp16 when `check_fp16` (edgec.backends.fp16: 1e-2 of each output's range, or the model's own
        response to fp16-rounded inputs) holds on the frame."""
        if variant == "fp16":
            return all(c.passed for c in check_fp16(model, feeds))
        return super().safe_without_data(variant, model, feeds)

    def session_config(self, stage: StageSpec) -> dict[str, Any]:
        return session_config(self.device, stage)

    bundle_files = staticmethod(bundle_files)
    readme = staticmethod(readme)
    prelaunch = staticmethod(prelaunch)
