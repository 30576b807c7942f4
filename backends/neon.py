"""The `neon` backend: ONNX Runtime's CPU provider on one ARM core cluster.

ONNX Runtime's CPU kernels (MLAS) use NEON on ARM. A device's stages run in
one process (edgec.runtime.device), and a stage on a CPU unit is held to the
unit's cores twice over:

- the launcher starts the process under `taskset -c <cores of its units>`,
  which also pins the calling ("main") thread ONNX Runtime never pins itself;
- the session gets `intra_op_num_threads = len(cores)` and, where the board's
  ONNX Runtime has it (1.14 and later), `session.intra_op_thread_affinities`:
  one entry per pool thread (all but the main thread), `;` between threads,
  logical processor ids **1-based** (onnxruntime docs "Thread management",
  and the key's comment in onnxruntime_session_options_config_keys.h). The
  XU4's big cores 4-7 give "6;7;8": pool threads 2..4 on cores 5, 6, 7,
  the main thread (which runs a share of the work) within the taskset mask. Setting a thread count turns off ORT's
  own pinning (onnxruntime #12819), so without the key the pool threads float
  inside the taskset mask.

What the board can load: `target_versions(device)` from its `onnxruntime`
release and `max_opset` (table in edgec.backends.opset).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, Sequence

import onnx
import onnx_graphsurgeon as gs

from edgec.backends.base import Backend, taskset_list
from edgec.backends.decompose import has_body, needs_body
from edgec.backends.int8 import INT8_SESSION, int8_model, runs_int8, worth_quantizing
from edgec.backends.opset import convert_for_device, elem_type, lowered_op_types, model_opset, node_convertible
from edgec.backends.registry import register
from edgec.backends.versions import target_versions
from edgec.errors import EdgecError
from edgec.manifest import StageSpec
from edgec.runtime.session import AFFINITY_KEY

if TYPE_CHECKING:
    from edgec.cluster import ComputeUnit, Device

NAME = "neon"
AFFINITY_SINCE = (1, 14)
# int8 (static QDQ) over fp32 on the A72/A57: ncnn's ResNet-50 on the Raspberry Pi 4, 262.8 ms fp32 / 196.7 ms
# int8 (device-facts.md). Assumed on the XU4's ARMv7 cores too (no published figure); applied to compute-bound
# groups (convolutions, matrix products) only.
INT8_SPEEDUP = 262.8 / 196.7  # the session config key arrived in ONNX Runtime 1.14 (microsoft/onnxruntime #13778)
_DOMAINS = ("", "ai.onnx", "com.microsoft", "ai.onnx.ml")


# -- capability ----------------------------------------------------------------------------


def supports(node: gs.Node, opset: int, device: Device | None = None) -> str | None:
    """None if ONNX Runtime's CPU provider on `device` can run the node, else why not.

    Checks: the op's domain; that the node has a form at the board's opset
    (down-conversion, edgec.backends.opset); that the CPU provider registers
    a kernel for the op at that version and for the node's tensor types. The
    kernel table is the installed onnxruntime's, a superset of an older
    board's: ops newer than the board's opset are caught by the opset check.
    float16 tensors pass: ONNX Runtime runs float16 nodes without a float16
    CPU kernel through inserted casts (slower, never faster, on these cores).
    """
    domain = node.domain or ""
    if domain not in _DOMAINS:
        return f"op domain '{domain}' has no ONNX Runtime CPU kernels"
    target = opset if device is None else min(opset, target_versions(device)[0])
    if domain in ("", "ai.onnx") and target < opset:
        reason = node_convertible(node, opset, target)
        if reason is not None:
            return reason
        if needs_body(node.op, domain, target):  # runs as its ONNX function body (prepare_submodel lowers it)
            lowered = lowered_op_types(node, opset, target) or ()
            missing = sorted({op for op in lowered if ("", op) not in _cpu_kernels() and not has_body(op, target)})
            return (f"{node.op} runs at opset {target} only as its ONNX function body, which needs "
                    f"{', '.join(missing)}: no ONNX Runtime CPU kernel") if missing else None
    return _kernel_reason(node, min(opset, target) if domain in ("", "ai.onnx") else None)


def _kernel_reason(node: gs.Node, opset: int | None) -> str | None:
    domain = node.domain or ""
    if domain in ("", "ai.onnx") and node.op == "Constant":
        return None  # ONNX Runtime turns Constant nodes into initializers when it loads the model
    schema = None
    if opset is not None:
        try:
            schema = onnx.defs.get_schema(node.op, opset, domain)
        except onnx.defs.SchemaError:
            return f"{node.op} is not defined at opset {opset}"
    version = schema.since_version if schema is not None else None
    kernels = _cpu_kernels().get((domain if domain != "ai.onnx" else "", node.op))
    candidates = [k for k in kernels or () if version is None or k[0] <= version <= k[1]]
    if not candidates:
        if schema is not None and (schema.has_function or schema.has_context_dependent_function):
            return None  # an ONNX function (HardSwish, Mish, ...): ONNX Runtime inlines its body
        if not kernels:
            return f"ONNX Runtime's CPU provider has no {node.op} kernel"
        return f"ONNX Runtime's CPU provider has no kernel for {node.op}-{version}"
    bound = _bound_types(node, opset)
    if not bound:
        return None
    for _, _, constraints in candidates:
        if all(param not in constraints or t in constraints[param] for param, t in bound.items()):
            return None
    shown = ", ".join(f"{p}={t}" for p, t in sorted(bound.items()))
    return f"ONNX Runtime's CPU provider has no {node.op} kernel for {shown}"


def _bound_types(node: gs.Node, opset: int | None) -> dict[str, str]:
    """Type parameter -> 'tensor(float)' for the node's inputs with known dtypes (float16 read as float)."""
    if opset is None:
        return {}
    try:
        schema = onnx.defs.get_schema(node.op, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return {}
    out: dict[str, str] = {}
    for i, t in enumerate(node.inputs):
        formal = schema.inputs[i] if i < len(schema.inputs) else (schema.inputs[-1] if schema.inputs else None)
        if formal is None or not t.name:
            continue
        name = _type_name(t.dtype)
        if name is None:
            continue
        if name == "float16":
            name = "float"
        out.setdefault(formal.type_str, f"tensor({name})")
    return out


def _type_name(dtype: Any) -> str | None:
    elem = elem_type(dtype)
    if not elem:
        return None
    return onnx.helper.tensor_dtype_to_string(elem).split(".")[-1].lower()


@functools.lru_cache(maxsize=1)
def _cpu_kernels() -> dict[tuple[str, str], list[tuple[int, int, dict[str, set[str]]]]]:
    from onnxruntime.capi import _pybind_state as C

    table: dict[tuple[str, str], list] = {}
    for k in C.get_all_opkernel_def():
        if k.provider != "CPUExecutionProvider":
            continue
        constraints = {p: set(ts) for p, ts in k.type_constraints.items()}
        table.setdefault((k.domain, k.op_name), []).append((k.version_range[0], k.version_range[1], constraints))
    return table


# -- session -------------------------------------------------------------------------------


def affinity_string(cores: Sequence[int]) -> str:
    """`session.intra_op_thread_affinities` for a pool over `cores` (0-based Linux CPU ids).

    The main thread takes cores[0] (through taskset); pool thread k runs on
    cores[k], written 1-based: [4, 5, 6, 7] -> "6;7;8". Empty for one core.
    """
    cores = sorted(cores)
    return ";".join(str(c + 1) for c in cores[1:])


def session_config(device: Device, unit: ComputeUnit, variant: str = "fp32") -> dict[str, Any]:
    """ONNX Runtime session settings for a stage on `unit`: the manifest's `StageSpec.session`.

    Keys: provider, intra_op_num_threads (= number of cores), inter_op_num_threads,
    execution_mode, graph_optimization_level, config_entries (session config
    entries, with the thread affinities where the board's ORT has the key),
    cores (0-based, what the launcher's taskset uses), main_thread_core.
    `edgec.runtime.session.session_options(config)` turns it into onnxruntime.SessionOptions.
    An int8 stage adds disabled_optimizers (edgec.backends.int8.INT8_SESSION).
    """
    if unit.kind != "cpu":
        raise EdgecError(f"unit '{device.name}.{unit.name}' is a {unit.kind}; the neon backend runs on CPU units")
    cores = sorted(unit.cores)
    entries: dict[str, str] = {}
    if len(cores) > 1 and _ort_at_least(device.onnxruntime, AFFINITY_SINCE):
        entries[AFFINITY_KEY] = affinity_string(cores)
    config = {
        "provider": "CPUExecutionProvider",
        "intra_op_num_threads": len(cores),
        "inter_op_num_threads": 1,
        "execution_mode": "ORT_SEQUENTIAL",
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "config_entries": entries,
        "cores": cores,
        "main_thread_core": cores[0],
    }
    if variant == "int8":
        config.update(INT8_SESSION)
    return config


def _ort_at_least(version: str, minimum: tuple[int, int]) -> bool:
    try:
        parts = tuple(int(p) for p in str(version).split(".")[:2])
    except ValueError:
        return False
    return parts >= minimum


# -- sub-models ----------------------------------------------------------------------------


def prepare_submodel(model: onnx.ModelProto, device: Device) -> onnx.ModelProto:
    """The stage sub-model at the opset and IR version the board's ONNX Runtime loads."""
    max_opset, max_ir = target_versions(device)
    if model_opset(model) <= max_opset and model.ir_version <= max_ir:
        return model
    return convert_for_device(model, max_opset, max_ir)


# -- bundle --------------------------------------------------------------------------------


def session_file(stage: StageSpec) -> str:
    return f"{stage.name}.session.json"


def bundle_files(device: Device, stages: Sequence[StageSpec]) -> dict[str, str]:
    """Per stage, its ONNX Runtime session config as JSON (paths relative to out/<device>/).

    The launcher and README.md are per device: edgec.backends.base.device_bundle.
    """
    return {session_file(s): json.dumps(session_config(device, device.units[s.unit], s.variant), indent=2) + "\n"
            for s in stages}


def readme(device: Device, stages: Sequence[StageSpec]) -> str:
    max_opset, max_ir = target_versions(device)
    lines = [
        "## CPU stages (ONNX Runtime, CPU provider)",
        "",
        f"Needs onnxruntime {device.onnxruntime} or newer on the board (sub-models are at opset <= {max_opset}, "
        f"IR <= {max_ir}).",
    ]
    if device.arch == "armv7l":
        lines.append("PyPI has no armv7 onnxruntime wheel: build it from source or use a community build.")
    lines += ["", "| stage | unit | cores (taskset) | threads | session config |", "|---|---|---|---|---|"]
    for s in stages:
        cfg = session_config(device, device.units[s.unit], s.variant)
        lines.append(f"| {s.name} | {s.unit} | {taskset_list(cfg['cores'])} | {cfg['intra_op_num_threads']} | "
                     f"{session_file(s)} |")
    if not _ort_at_least(device.onnxruntime, AFFINITY_SINCE):
        lines += ["", f"onnxruntime {device.onnxruntime} has no `{AFFINITY_KEY}`: threads are held to the unit's "
                      f"cores by taskset alone."]
    lines.append("")
    return "\n".join(lines)


# -- the backend object ---------------------------------------------------------------------


@register
class NeonBackend(Backend):
    name = NAME
    unit_kinds = ("cpu",)
    variants = ("fp32", "int8")
    variant_speed = {"fp32": 1.0, "int8": INT8_SPEEDUP}
    calibrated_variants = frozenset({"int8"})

    def supports(self, node: gs.Node, opset: int) -> str | None:
        return supports(node, opset, self.device)

    def sped_up(self, variant: str, node: gs.Node) -> bool:
        return runs_int8(node) if variant == "int8" else super().sped_up(variant, node)

    def worth(self, variant: str, sped_up_macs: float, compute_macs: float) -> bool:
        return variant != "int8" or worth_quantizing(sped_up_macs, compute_macs)

    def prepare_submodel(self, model: onnx.ModelProto, variant: str,
                         calibration: Sequence[dict[str, Any]] | None = None) -> onnx.ModelProto:
        if variant not in self.variants:
            raise EdgecError(f"variant '{variant}' is not one ONNX Runtime's CPU provider runs here; "
                             f"use {' or '.join(self.variants)}")
        prepared = prepare_submodel(model, self.device)
        if variant == "int8":
            if not calibration:
                raise EdgecError("int8 needs calibration frames for its static quantization; pass --calib data.npz")
            prepared = prepare_submodel(int8_model(prepared, calibration), self.device)  # the board's IR again
        return prepared

    def emulate(self, model: onnx.ModelProto, variant: str,
                calibration: Sequence[dict[str, Any]] | None = None) -> onnx.ModelProto:
        if variant == "int8":  # the same quantization as the board's sub-model, run by ONNX Runtime here
            return int8_model(model, calibration or [])
        return super().emulate(model, variant, calibration)

    def session_config(self, stage: StageSpec | None = None) -> dict[str, Any]:
        return session_config(self.device, self.unit, stage.variant if stage is not None else "fp32")

    bundle_files = staticmethod(bundle_files)
    readme = staticmethod(readme)
