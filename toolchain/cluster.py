"""The cluster a model is compiled for: devices, their compute units, the links between them.

A cluster.json names each device and its catalog ``type``; any catalog field can
be overridden field by field. Links are given per pair, or once for all pairs
through ``network`` (every board on one switch). Validation happens in two
steps: the published JSON Schema (``schemas/cluster.schema.json``), then the
cross-references a schema cannot express; both name the JSON path.

Catalog figures come from ../shared/device-facts.md (sources cited there).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from edgec.backends.registry import backend_class
from edgec.backends.registry import names as backend_names
from edgec.backends.versions import ort_release
from edgec.errors import EdgecError
from edgec.jsonfile import read_json

# Board catalog. cores are 0-based Linux CPU ids; gflops is a sustained fp32
# figure for whole-model inference, used until the cost pass's profiles apply.
CATALOG: dict[str, dict[str, Any]] = {
    "odroid-xu4": {
        # Exynos 5422; 2 GB LPDDR3; cores 0-3 are the Cortex-A7s, 4-7 the A15s.
        "arch": "armv7l",
        "memory_mb": 2048,
        "reserved_mb": 512,
        "onnxruntime": "1.16",
        "max_opset": 19,
        "units": {
            "big": {"kind": "cpu", "cores": [4, 5, 6, 7], "gflops": 9.0, "backend": "neon",
                    "profile": "odroid-xu4.big"},
            "little": {"kind": "cpu", "cores": [0, 1, 2, 3], "gflops": 1.6, "backend": "neon",
                       "profile": "odroid-xu4.little"},
        },
    },
    "raspberry-pi-4": {
        # BCM2711, 4x Cortex-A72; 4 GB variant.
        "arch": "aarch64",
        "memory_mb": 4096,
        "reserved_mb": 768,
        "onnxruntime": "1.20",
        "max_opset": 21,
        "units": {
            "cpu": {"kind": "cpu", "cores": [0, 1, 2, 3], "gflops": 15.5, "backend": "neon",
                    "profile": "raspberry-pi-4.cpu"},
        },
    },
    "jetson-nano": {
        # 4 GB LPDDR4 shared by CPU and GPU; JetPack 4.6.1: TensorRT 8.2.1, Python 3.6, ORT 1.10.
        "arch": "aarch64",
        "memory_mb": 4096,
        "reserved_mb": 1024,
        "onnxruntime": "1.10",
        "max_opset": 15,
        "units": {
            "cpu": {"kind": "cpu", "cores": [0, 1, 2, 3], "gflops": 20.0, "backend": "neon",
                    "profile": "jetson-nano.cpu"},
            "gpu": {"kind": "gpu", "cores": [0], "gflops": 44.0, "backend": "tensorrt",
                    "profile": "jetson-nano.gpu"},
        },
    },
    "host": {
        # The machine edgec runs on; give it a measured profile (`edgec profile`) for real figures.
        "arch": "x86_64",
        "memory_mb": 8192,
        "reserved_mb": 1024,
        "onnxruntime": "1.20",
        "max_opset": 21,
        "units": {
            "cpu": {"kind": "cpu", "cores": [0], "gflops": 20.0, "backend": "neon", "profile": None},
        },
    },
}


@dataclass(frozen=True)
class ComputeUnit:
    name: str
    kind: str  # "cpu" | "gpu"
    cores: tuple[int, ...]
    gflops: float
    backend: str
    profile: str | None = None


@dataclass(frozen=True)
class Device:
    name: str
    type: str
    arch: str
    memory_bytes: int  # what a stage may use: physical memory less what the OS keeps
    onnxruntime: str
    max_opset: int
    units: dict[str, ComputeUnit]
    host: str = "127.0.0.1"
    profile_path: str | None = None  # a profile measured on the board (`edgec profile`), resolved


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    bandwidth_mbps: float
    latency_ms: float

    def link_ms(self, nbytes: int) -> float:
        """The link's share of a transfer (latency + bytes / bandwidth); edgec.costmodel.transfer adds the
        serialization at both ends that every transfer cost in edgec charges."""
        if nbytes <= 0:
            return 0.0
        return self.latency_ms + nbytes * 8 / (self.bandwidth_mbps * 1e6) * 1e3


@dataclass(frozen=True)
class Cluster:
    name: str
    devices: dict[str, Device]
    links: dict[frozenset[str], Link]
    source: str
    sink: str
    path: str = "<cluster>"
    spec: dict[str, Any] = field(default_factory=dict, compare=False)

    def link(self, a: str, b: str) -> Link | None:
        return self.links.get(frozenset((a, b)))

    def link_ms(self, nbytes: int, a: str, b: str) -> float:
        """ms nbytes spend on the link from device a to device b (0 on the same device, inf without a link)."""
        if a == b or nbytes <= 0:
            return 0.0
        link = self.link(a, b)
        return float("inf") if link is None else link.link_ms(nbytes)

    def units(self) -> list[tuple[Device, ComputeUnit]]:
        return [(d, u) for d in self.devices.values() for u in d.units.values()]


def schema() -> dict[str, Any]:
    """The published JSON Schema of cluster.json."""
    text = resources.files("edgec").joinpath("schemas/cluster.schema.json").read_text()
    return json.loads(text)


def load_cluster(path: str | Path) -> Cluster:
    """Read and validate a cluster.json; every error names the file and the JSON path."""
    path = Path(path)
    spec = read_json(path, missing="cluster file not found; pass an existing cluster.json with -t")
    return parse_cluster(spec, str(path))


def parse_cluster(spec: Any, path: str = "<cluster>") -> Cluster:
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(spec), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        raise EdgecError(f"{_json_path(err.absolute_path)}: {_schema_message(err)}", where=path)

    devices: dict[str, Device] = {}
    for i, dspec in enumerate(spec["devices"]):
        where = f"$.devices[{i}]"
        name = dspec["name"]
        if name in devices:
            raise EdgecError(f"{where}.name: device '{name}' is defined twice; device names must be unique", where=path)
        dtype = dspec["type"]
        if dtype not in CATALOG:
            known = ", ".join(sorted(CATALOG))
            raise EdgecError(f"{where}.type: unknown device type '{dtype}'; expected one of: {known}", where=path)
        devices[name] = _build_device(name, dtype, dspec, where, path)

    links: dict[frozenset[str], Link] = {}
    network = spec.get("network")
    if network is not None:
        names = list(devices)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                links[frozenset((a, b))] = Link(a, b, float(network["bandwidth_mbps"]), float(network.get("latency_ms", 0.0)))
    for i, lspec in enumerate(spec.get("links", [])):
        a, b = lspec["between"]
        for j, end in enumerate((a, b)):
            if end not in devices:
                raise EdgecError(f"$.links[{i}].between[{j}]: no device named '{end}'; "
                                 f"defined devices: {', '.join(devices)}", where=path)
        if a == b:
            raise EdgecError(f"$.links[{i}].between: a link joins two different devices, got '{a}' twice", where=path)
        links[frozenset((a, b))] = Link(a, b, float(lspec["bandwidth_mbps"]), float(lspec.get("latency_ms", 0.0)))

    for key in ("source", "sink"):
        if spec[key] not in devices:
            raise EdgecError(f"$.{key}: no device named '{spec[key]}'; defined devices: {', '.join(devices)}", where=path)
    return Cluster(spec.get("name", Path(path).stem), devices, links, spec["source"], spec["sink"], path, spec)


def _build_device(name: str, dtype: str, dspec: dict[str, Any], where: str, path: str) -> Device:
    base = copy.deepcopy(CATALOG[dtype])
    for key in ("arch", "memory_mb", "reserved_mb", "onnxruntime", "max_opset"):
        if key in dspec:
            base[key] = dspec[key]
    for uname, uover in dspec.get("units", {}).items():
        if uover is None:  # `"little": null` drops a unit
            if uname not in base["units"]:
                raise EdgecError(f"{where}.units.{uname}: '{dtype}' has no unit '{uname}' to drop; its units: "
                                 f"{', '.join(CATALOG[dtype]['units'])}", where=path)
            base["units"].pop(uname)
            continue
        if uname not in base["units"]:
            missing = [k for k in ("kind", "cores", "gflops", "backend") if k not in uover]
            if missing:
                raise EdgecError(f"{where}.units.{uname}: a unit not in the '{dtype}' catalog entry needs "
                                 f"{', '.join(missing)}", where=path)
            base["units"][uname] = {}
        base["units"][uname].update(uover)
    if not base["units"]:
        raise EdgecError(f"{where}.units: device '{name}' has no compute unit left", where=path)
    capacity_mb = base["memory_mb"] - base["reserved_mb"]
    if capacity_mb <= 0:
        raise EdgecError(f"{where}.memory_mb: {base['memory_mb']} MB leaves nothing after the "
                         f"{base['reserved_mb']} MB reserved for the system", where=path)
    _check_units(dtype, base, where, path)
    units = {
        uname: ComputeUnit(uname, u["kind"], tuple(u["cores"]), float(u["gflops"]), u["backend"], u.get("profile"))
        for uname, u in base["units"].items()
    }
    profile_path = None
    if "profile" in dspec:
        profile_path = str((Path(path).parent / dspec["profile"]).resolve())
        if not Path(profile_path).is_file():
            raise EdgecError(f"{where}.profile: no profile file at {profile_path}; "
                             f"run `edgec profile -o FILE` on the board", where=path)
    return Device(name, dtype, base["arch"], int(capacity_mb * 2**20), str(base["onnxruntime"]),
                  int(base["max_opset"]), units, dspec.get("host", "127.0.0.1"), profile_path)


def _check_units(dtype: str, base: dict[str, Any], where: str, path: str) -> None:
    """What the schema cannot say: a unit's backend is a registered one that runs its kind of unit; CPU units
    name distinct cores of the board; the board's ONNX Runtime is one edgec knows."""

    try:
        ort_release(str(base["onnxruntime"]))
    except EdgecError as exc:
        raise EdgecError(f"{where}.onnxruntime: {exc.message}", where=path) from None
    board_cores = {c for u in CATALOG[dtype]["units"].values() if u["kind"] == "cpu" for c in u["cores"]}
    owner: dict[int, str] = {}
    for uname, u in base["units"].items():
        uwhere = f"{where}.units.{uname}"
        try:
            backend = backend_class(u["backend"])
        except EdgecError as exc:
            raise EdgecError(f"{uwhere}.backend: {exc.message}", where=path) from None
        if u["kind"] not in backend.unit_kinds:
            fits = ", ".join(f"'{n}'" for n in backend_names() if u["kind"] in backend_class(n).unit_kinds)
            raise EdgecError(f"{uwhere}.backend: the '{u['backend']}' backend runs {'/'.join(backend.unit_kinds)} "
                             f"units, not a {u['kind']} unit; a {u['kind']} unit runs {fits or 'no backend'}",
                             where=path)
        if u["kind"] != "cpu":
            continue  # a GPU's cores are the host cores that drive it
        cores = list(u["cores"])
        if len(set(cores)) != len(cores):
            raise EdgecError(f"{uwhere}.cores: core {next(c for c in cores if cores.count(c) > 1)} is listed twice",
                             where=path)
        for c in cores:
            if dtype != "host" and c not in board_cores:
                raise EdgecError(f"{uwhere}.cores: a '{dtype}' has cores {min(board_cores)}-{max(board_cores)}, "
                                 f"not {c}", where=path)
            if c in owner:
                raise EdgecError(f"{uwhere}.cores: core {c} belongs to unit '{owner[c]}' too; the units of a "
                                 f"board run side by side, on cores of their own", where=path)
            owner[c] = uname


def _json_path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _schema_message(err: jsonschema.ValidationError) -> str:
    if err.validator == "required":
        return f"missing field: {err.message.split(' is a required')[0]}"
    if err.validator == "exclusiveMinimum":
        return f"must be greater than {err.validator_value}, got {err.instance}"
    if err.validator == "minimum":
        return f"must be at least {err.validator_value}, got {err.instance}"
    if err.validator == "additionalProperties":
        return f"{err.message}; see the schema: edgec schema cluster"
    return err.message
