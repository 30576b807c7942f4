"""Unit profiles: what one compute unit sustains, and the profile files `edgec profile` writes.

A :class:`UnitProfile` is a roofline with per-op-class efficiencies:

    ms(node) = max(flops / (peak * efficiency[class]),
                   weight bytes / bandwidth + activation bytes / activation bandwidth) + overhead

Layout ops (class ``memory``) have no arithmetic; their efficiency is the
fraction of the activation bandwidth their strided copies reach.

Built-in profiles of the reference boards are in :mod:`edgec.costmodel.builtin`;
:mod:`edgec.costmodel.resolve` picks the one that predicts a unit.
A profile measured on the board (``edgec profile -o FILE``, see
:mod:`edgec.costmodel.profiler`) always wins.

Profile file (JSON)::

    {"version": 1,
     "host": {"machine": "aarch64", "processor": "...", "cpu_count": 4, "onnxruntime": "1.20.1"},
     "units": {"cpu": {"peak_gflops": 31.0, "bandwidth_gbs": 4.2, "activation_bandwidth_gbs": 6.0,
                       "overhead_ms": 0.02,
                       "threads": 4, "cores": [0, 1, 2, 3],
                       "efficiency": {"conv": 0.8, ...every class in OP_CLASSES...},
                       "sources": {"peak_gflops": "measured: ...", ...}}}}

``efficiency.grouped`` (convolutions with several channels per group) may be
left out, as in files written before the class existed: it then defaults to
:func:`default_grouped_efficiency`, the geometric mean of ``conv`` and
``depthwise`` (per group the runtime runs a GEMM as a dense conv does, but
small, as a depthwise conv's is), and ``sources`` says so.

``layout_block`` and ``layout_efficiency`` describe the runtime's blocked
activation layout (ONNX Runtime's NCHWc on x86-64, see
:mod:`edgec.costmodel.layout`): channels per block, and the fraction of the
activation bandwidth a conversion between plain and blocked layout reaches.
Each conversion costs ``2 x tensor bytes / (activation bandwidth x
layout_efficiency) + overhead_ms``. ``layout_block`` 0 means the runtime
converts no layouts (no cost); it is the default when the field is missing
(files written before it existed) and the value of every built-in profile:
ORT's NCHWc path needs an MLAS build with NCHWc kernels (x86-64; not the ARM
boards' ONNX Runtime builds), and TensorRT (the Nano's GPU) picks layouts
inside its fused engine. ``layout_efficiency`` defaults to 1.0.

``plain_efficiency`` (optional, default empty) gives, per op class, the
efficiency of ops a runtime with a blocked layout runs in plain layout: ONNX
Runtime's plain-layout pools (channels not a multiple of the block) reach a
third of what its blocked pools do. A class not listed uses ``efficiency``.

``grouped_shape`` (optional, default 0 and 0) ``{"reduction": R, "pixels": P}``:
a grouped conv runs one small GEMM per group, of depth K (input channels per
group x kernel area) over N output positions, and each output value carries a
fixed cost beside its K multiply-adds. It reaches ``efficiency.grouped x
K / (K + R) x N / (N + P)``: ShuffleNet's first grouped conv (6 channels per
group) runs at 40% of the peak, its later ones (34 and 68) at 75-80%.

What the unit's runtime does with some ops (all optional; a file without them
predicts as before):

- ``copy_bandwidth_gbs``: data-movement ops (class ``memory`` that are not
  views: Concat, Split, Slice, Transpose, Pad, Gather, ...) are one copy, the
  activation bytes read and written at this bandwidth (a Gather reads the rows
  it writes, not its whole table; absent: the activation bandwidth x
  ``efficiency.memory``, weights included, as before);
- ``im2col_bandwidth_gbs``: the runtime runs a conv that is not a plain GEMM
  as im2col + GEMM (ONNX Runtime's MLAS): the column buffer
  (:attr:`NodeWork.column_bytes`) is written and read back at this bandwidth,
  on top of the GEMM. A depthwise conv is then mostly this expansion. Absent:
  no expansion (TensorRT's implicit-GEMM and Winograd kernels);
- ``group_overhead_ms``: with ``im2col_bandwidth_gbs``, what each group of a
  grouped conv (several channels per group) run as im2col + GEMM costs beside
  its bytes and arithmetic: one expansion and one small GEMM call per group
  (ONNX Runtime's MLAS), so a conv of many groups over few pixels (55 groups
  at 7x7) takes about twice its roofline. Absent: none;
- ``winograd_gain`` (default 1): a dense 3x3 stride-1 conv
  (:attr:`NodeWork.winograd`) reaches its efficiency times this, for the
  multiplies a Winograd kernel saves (TensorRT/cuDNN; MLAS has none);
- ``overlap`` (default 1, the roofline): the share of the shorter of a node's
  compute and memory time hidden behind the longer one: ``max(c, m) +
  (1 - overlap) x min(c, m)``;
- ``float_bytes`` (default 4): bytes a float tensor takes in the runtime's
  buffers; 2 for a TensorRT fp16 engine halves every byte count of the fp32
  graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

from edgec.errors import EdgecError
from edgec.costmodel.runtime_fusion import RUNTIMES
from edgec.costmodel.work import OP_CLASSES, NodeWork
from edgec.jsonfile import read_json

PROFILE_VERSION = 1
GROUPED_SHAPE_KEYS = ("reduction", "pixels")
MAX_GROUPED_SHAPE = 1e4  # far beyond any measured value (about 10 and 16); keeps predictions finite
# optional fields of what the runtime does to some ops, and their defaults (the behaviour of files without them)
OPTIONAL_FIELDS: dict[str, Any] = {"copy_bandwidth_gbs": None, "im2col_bandwidth_gbs": None,
                                   "group_overhead_ms": None, "winograd_gain": 1.0,
                                   "overlap": 1.0, "float_bytes": 4}


@dataclass(frozen=True)
class UnitProfile:
    """Roofline of one compute unit, with where each figure comes from."""

    name: str
    peak_gflops: float                 # fp32 (fp16 for a TensorRT fp16 unit)
    bandwidth_gbs: float               # sustained DRAM bandwidth: weights stream from it every inference
    efficiency: Mapping[str, float]    # op class -> fraction of peak reached
    overhead_ms: float                 # per executed node (kernel launch, thread wake-up)
    threads: int = 1
    cores: tuple[int, ...] | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    activation_bandwidth_gbs: float | None = None  # activations, cache-resident where they fit; default DRAM's
    layout_block: int = 0              # channels per block of the runtime's blocked layout (NCHWc); 0: none
    layout_efficiency: float = 1.0     # fraction of the activation bandwidth a layout conversion reaches
    plain_efficiency: Mapping[str, float] = field(default_factory=dict)  # class -> efficiency when run plain
    grouped_shape: tuple[float, float] = (0.0, 0.0)  # (reduction, pixels) at which a grouped conv's GEMM halves
    runtime: str = "onnxruntime"       # what runs the unit's stages: its fusions (edgec.costmodel.runtime_fusion)
    copy_bandwidth_gbs: float | None = None    # data-movement ops: one copy at this bandwidth
    im2col_bandwidth_gbs: float | None = None  # convs run as im2col + GEMM: the column buffer at this bandwidth
    winograd_gain: float = 1.0         # efficiency factor of dense 3x3 stride-1 convs (Winograd kernels)
    overlap: float = 1.0               # share of min(compute, memory) hidden behind the other
    float_bytes: int = 4               # bytes per float in the runtime's buffers (2: an fp16 engine)
    group_overhead_ms: float | None = None  # per group of a grouped conv run as im2col + GEMM per group

    @property
    def act_bandwidth_gbs(self) -> float:
        return self.activation_bandwidth_gbs or self.bandwidth_gbs

    def class_efficiency(self, op_class: str, *, plain: bool = False) -> float:
        """Fraction of peak the class reaches; `plain`: run in plain layout by a runtime that has a blocked one."""
        if plain and self.layout_block > 0 and op_class in self.plain_efficiency:
            return self.plain_efficiency[op_class]
        return self.efficiency[op_class]

    def compute_ms(self, flops: float, op_class: str, *, plain: bool = False) -> float:
        """ms the arithmetic takes at this class's efficiency."""
        if flops <= 0:
            return 0.0
        return flops / (self.peak_gflops * 1e9 * self.class_efficiency(op_class, plain=plain)) * 1e3

    def memory_ms(self, param_bytes: float, activation_bytes: float = 0.0) -> float:
        """ms to stream weights from DRAM and activations through the cache hierarchy once."""
        return (max(param_bytes, 0) / self.bandwidth_gbs + max(activation_bytes, 0) / self.act_bandwidth_gbs) / 1e6

    def node_ms(self, work: NodeWork, *, overhead: bool = True, plain: bool = False, blocked: bool = False) -> float:
        """Roofline prediction for one node, with what the runtime does to its class (module docstring).

        `plain`: an op the runtime has blocked kernels for (a pool) runs in plain layout here (see
        ``plain_efficiency``); `blocked`: it runs in the blocked layout, a grouped conv included, so not as
        one GEMM per group (no ``grouped_shape`` factor, no im2col).
        """
        scale = self.float_bytes / 4
        extra = self.overhead_ms if overhead else 0.0
        if work.op_class == "memory":
            if self.copy_bandwidth_gbs:
                return work.activation_bytes * scale / self.copy_bandwidth_gbs / 1e6 + extra
            return self.memory_ms(work.param_bytes * scale,
                                  work.activation_bytes * scale / self.efficiency["memory"]) + extra
        flops = work.flops if blocked else work.flops * self.grouped_shape_factor(work)
        if work.winograd:
            flops /= self.winograd_gain
        compute = self.compute_ms(flops, work.op_class, plain=plain)
        memory = self.memory_ms(work.param_bytes * scale, work.activation_bytes * scale)
        t = max(compute, memory) + (1.0 - self.overlap) * min(compute, memory)
        if self.im2col_bandwidth_gbs and work.column_bytes and not blocked:
            t += 2 * work.column_bytes * scale / self.im2col_bandwidth_gbs / 1e6
            if self.group_overhead_ms and work.op_class == "grouped":
                t += work.groups * self.group_overhead_ms
        return t + extra

    def grouped_shape_factor(self, work: NodeWork) -> float:
        """1 / the fraction of ``efficiency.grouped`` a grouped conv of this GEMM shape reaches (1.0 otherwise)."""
        reduction, pixels = self.grouped_shape
        if work.op_class != "grouped" or work.reduction <= 0 or work.pixels <= 0:
            return 1.0
        return (1 + reduction / work.reduction) * (1 + pixels / work.pixels)

    def conversion_ms(self, nbytes: float) -> float:
        """ms of one layout conversion of a tensor of nbytes (read once, written once, one runtime node)."""
        if self.layout_block <= 0 or nbytes <= 0:
            return 0.0
        return self.memory_ms(0, 2 * nbytes / self.layout_efficiency) + self.overhead_ms

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "peak_gflops": self.peak_gflops,
            "bandwidth_gbs": self.bandwidth_gbs,
            "activation_bandwidth_gbs": self.act_bandwidth_gbs,
            "overhead_ms": self.overhead_ms,
            "threads": self.threads,
            "layout_block": self.layout_block,
            "layout_efficiency": self.layout_efficiency,
            "runtime": self.runtime,
            "efficiency": {c: self.efficiency[c] for c in OP_CLASSES},
            "sources": dict(self.sources),
        }
        if self.plain_efficiency:
            out["plain_efficiency"] = dict(self.plain_efficiency)
        if any(self.grouped_shape):
            out["grouped_shape"] = dict(zip(GROUPED_SHAPE_KEYS, self.grouped_shape))
        for key, default in OPTIONAL_FIELDS.items():
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        if self.cores is not None:
            out["cores"] = list(self.cores)
        return out


@dataclass(frozen=True)
class ProfileFile:
    """A profile file: which host measured it, and one profile per compute unit name."""

    path: str
    version: int
    host: Mapping[str, Any]
    units: Mapping[str, UnitProfile]


def default_grouped_efficiency(conv: float, depthwise: float) -> float:
    """Efficiency of grouped convs where none was measured: the geometric mean of conv and depthwise."""
    return round(math.sqrt(conv * depthwise), 3)


# -- profile files ---------------------------------------------------------------------------


def load_profile(path: str | Path) -> ProfileFile:
    """Read and validate a profile file; an error names the file and the JSON path of the bad field."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise EdgecError("profile file not found; write one with `edgec profile -o FILE` on the board",
                         where=str(path)) from None
    return _load_cached(str(path.resolve()), stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> ProfileFile:
    spec = read_json(path, missing="profile file not found; write one with `edgec profile -o FILE` on the board")
    return parse_profile(spec, path)


def parse_profile(spec: Any, path: str = "<profile>") -> ProfileFile:
    """Validate a decoded profile file (see the module docstring for the format)."""
    _require(isinstance(spec, dict), "$", "expected an object", path)
    version = _field(spec, "version", "$", path)
    _require(isinstance(version, int) and not isinstance(version, bool), "$.version",
             f"expected an integer, got {version!r}", path)
    _require(version == PROFILE_VERSION, "$.version",
             f"unsupported version {version}; this edgec reads version {PROFILE_VERSION}", path)
    host = _field(spec, "host", "$", path)
    _require(isinstance(host, dict), "$.host", "expected an object", path)
    units = _field(spec, "units", "$", path)
    _require(isinstance(units, dict) and units, "$.units", "expected an object with at least one unit", path)
    return ProfileFile(path, version, host, {name: parse_unit_profile(u, name, f"$.units.{name}", path)
                                             for name, u in units.items()})


def parse_unit_profile(spec: Any, name: str, where: str = "$", path: str = "<profile>") -> UnitProfile:
    """Validate one unit's profile object."""
    _require(isinstance(spec, dict), where, "expected an object", path)
    numbers = {}
    for key in ("peak_gflops", "bandwidth_gbs", "overhead_ms"):
        value = _field(spec, key, where, path)
        _require(_is_number(value), f"{where}.{key}", f"expected a number, got {value!r}", path)
        _require(value > 0 or (key == "overhead_ms" and value == 0), f"{where}.{key}",
                 f"must be {'at least 0' if key == 'overhead_ms' else 'greater than 0'}, got {value}", path)
        numbers[key] = float(value)
    act_bw = spec.get("activation_bandwidth_gbs")
    if act_bw is not None:
        _require(_is_number(act_bw) and act_bw > 0, f"{where}.activation_bandwidth_gbs",
                 f"expected a number greater than 0, got {act_bw!r}", path)
    block = spec.get("layout_block", 0)
    _require(isinstance(block, int) and not isinstance(block, bool) and block >= 0, f"{where}.layout_block",
             f"expected a non-negative integer, got {block!r}", path)
    layout_eff = spec.get("layout_efficiency", 1.0)
    _require(_is_number(layout_eff) and layout_eff > 0, f"{where}.layout_efficiency",
             f"expected a number greater than 0, got {layout_eff!r}", path)
    runtime = spec.get("runtime", "onnxruntime")
    _require(runtime in RUNTIMES, f"{where}.runtime", f"expected one of {', '.join(RUNTIMES)}, got {runtime!r}", path)
    threads = spec.get("threads", 1)
    _require(isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1, f"{where}.threads",
             f"expected a positive integer, got {threads!r}", path)
    cores = spec.get("cores")
    if cores is not None:
        _require(isinstance(cores, list) and all(isinstance(c, int) and c >= 0 for c in cores),
                 f"{where}.cores", f"expected a list of CPU ids, got {cores!r}", path)
    eff = _field(spec, "efficiency", where, path)
    _require(isinstance(eff, dict), f"{where}.efficiency", "expected an object", path)
    sources = spec.get("sources", {})
    _require(isinstance(sources, dict) and all(isinstance(v, str) for v in sources.values()),
             f"{where}.sources", "expected an object of strings", path)
    sources = dict(sources)
    if "layout_block" not in spec:
        sources["layout_block"] = "not in the file: 0, no layout conversions charged"
    eff = dict(eff)
    if "grouped" not in eff and all(_is_number(eff.get(c)) and eff[c] > 0 for c in ("conv", "depthwise")):
        eff["grouped"] = default_grouped_efficiency(eff["conv"], eff["depthwise"])
        sources["efficiency.grouped"] = "not in the file: geometric mean of conv and depthwise"
    for cls in OP_CLASSES:
        value = _field(eff, cls, f"{where}.efficiency", path)
        _require(_is_number(value) and value > 0, f"{where}.efficiency.{cls}",
                 f"expected a number greater than 0, got {value!r}", path)
    unknown = sorted(set(eff) - set(OP_CLASSES))
    _require(not unknown, f"{where}.efficiency.{unknown[0] if unknown else ''}",
             f"unknown op class; expected: {', '.join(OP_CLASSES)}", path)
    plain = _number_map(spec.get("plain_efficiency", {}), OP_CLASSES, f"{where}.plain_efficiency", path,
                        lambda v: v > 0, "a number greater than 0")
    shape = _number_map(spec.get("grouped_shape", {}), GROUPED_SHAPE_KEYS, f"{where}.grouped_shape", path,
                        lambda v: 0 <= v <= MAX_GROUPED_SHAPE, f"a number from 0 to {MAX_GROUPED_SHAPE:g}")
    return UnitProfile(name, numbers["peak_gflops"], numbers["bandwidth_gbs"],
                       {c: float(eff[c]) for c in OP_CLASSES}, numbers["overhead_ms"], threads,
                       tuple(cores) if cores is not None else None, sources,
                       float(act_bw) if act_bw is not None else None, block, float(layout_eff),
                       plain, tuple(shape.get(k, 0.0) for k in GROUPED_SHAPE_KEYS), runtime,
                       **_runtime_fields(spec, where, path))


def _runtime_fields(spec: dict[str, Any], where: str, path: str) -> dict[str, Any]:
    """The optional fields of :data:`OPTIONAL_FIELDS`, validated; absent ones keep their defaults."""
    out: dict[str, Any] = {}
    for key in ("copy_bandwidth_gbs", "im2col_bandwidth_gbs", "group_overhead_ms", "winograd_gain"):
        if spec.get(key) is not None:
            value = spec[key]
            _require(_is_number(value) and value > 0, f"{where}.{key}",
                     f"expected a number greater than 0, got {value!r}", path)
            out[key] = float(value)
    if "overlap" in spec:
        value = spec["overlap"]
        _require(_is_number(value) and 0 <= value <= 1, f"{where}.overlap",
                 f"expected a number from 0 to 1, got {value!r}", path)
        out["overlap"] = float(value)
    if "float_bytes" in spec:
        value = spec["float_bytes"]
        _require(value in (1, 2, 4) and not isinstance(value, bool), f"{where}.float_bytes",
                 f"expected 1, 2 or 4, got {value!r}", path)
        out["float_bytes"] = int(value)
    return out


def profile_file_json(units: Mapping[str, UnitProfile | Mapping[str, Any]], host: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of a profile file."""
    return {
        "version": PROFILE_VERSION,
        "host": dict(host),
        "units": {n: (u.to_json() if isinstance(u, UnitProfile) else dict(u)) for n, u in units.items()},
    }


# -- helpers ---------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_map(value: Any, allowed: tuple[str, ...], where: str, path: str, ok: Callable[[float], bool],
                expected: str) -> dict[str, float]:
    """An optional object of named numbers: every name one of `allowed`, every value passing `ok`."""
    _require(isinstance(value, dict), where, f"expected an object with some of: {', '.join(allowed)}", path)
    for key, number in value.items():
        _require(key in allowed, f"{where}.{key}", f"unknown name; expected one of: {', '.join(allowed)}", path)
        _require(_is_number(number) and ok(number), f"{where}.{key}", f"expected {expected}, got {number!r}", path)
    return {key: float(number) for key, number in value.items()}


def _field(obj: dict[str, Any], key: str, where: str, path: str) -> Any:
    if key not in obj:
        raise EdgecError(f"{where}.{key}: missing field", where=path)
    return obj[key]


def _require(ok: bool, where: str, message: str, path: str) -> None:
    if not ok:
        raise EdgecError(f"{where}: {message}", where=path)

