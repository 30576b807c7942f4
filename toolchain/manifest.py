"""manifest.json: the artefact schema that ties out/ together.

The manifest is what a runtime, `verify` and `inspect` read: the stages in
execution order with their sub-models (path relative to out/ and sha256),
the tensors each one reads and writes, what crosses each boundary, and the
predictions. Its JSON Schema is published in ``schemas/manifest.schema.json``
and checked whenever a manifest is read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from edgec.errors import EdgecError

SCHEMA_VERSION = 1


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: list[int]


@dataclass
class StageSpec:
    name: str
    device: str
    unit: str
    backend: str
    variant: str
    model: str  # path relative to out/
    sha256: str
    inputs: list[TensorSpec]  # what the sub-model reads
    outputs: list[TensorSpec]  # what the sub-model writes
    receives: list[str]  # everything live at the boundary before this stage
    sends: list[str]  # everything live at the boundary after it (relayed tensors included)
    predicted_ms: float
    memory_bytes: int
    session: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransferSpec:
    src: str  # stage name, or "source"
    dst: str  # stage name, or "sink"
    src_device: str
    dst_device: str
    tensors: list[str]
    bytes: int
    predicted_ms: float


@dataclass
class Manifest:
    source_model: dict[str, Any]
    cluster: dict[str, Any]
    objective: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    stages: list[StageSpec]
    transfers: list[TransferSpec]
    predicted: dict[str, Any]
    passes: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, str]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    edgec_version: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for t in data["transfers"]:
            t["from"], t["to"] = t.pop("src"), t.pop("dst")
        return data

    def write(self, path: Path) -> None:
        data = self.to_json()
        jsonschema.validate(data, schema())  # a bug if this fails: we wrote something off-schema
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        data = dict(data)
        data["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
        data["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
        stages = []
        for s in data["stages"]:
            s = dict(s)
            s["inputs"] = [TensorSpec(**t) for t in s["inputs"]]
            s["outputs"] = [TensorSpec(**t) for t in s["outputs"]]
            stages.append(StageSpec(**s))
        data["stages"] = stages
        transfers = []
        for t in data["transfers"]:
            t = dict(t)
            t["src"], t["dst"] = t.pop("from"), t.pop("to")
            transfers.append(TransferSpec(**t))
        data["transfers"] = transfers
        return cls(**data)

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


def schema() -> dict[str, Any]:
    """The published JSON Schema of manifest.json."""
    return json.loads(resources.files("edgec").joinpath("schemas/manifest.schema.json").read_text())


def read_manifest(out_dir: str | Path) -> Manifest:
    """Read and validate out/manifest.json, naming the file and the JSON path on error."""
    path = Path(out_dir) / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgecError("no manifest.json here; pass the folder `edgec compile -o` wrote", where=str(out_dir)) from None
    except json.JSONDecodeError as exc:
        raise EdgecError(f"not valid JSON (line {exc.lineno}): {exc.msg}", where=str(path)) from None
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(data), key=lambda e: list(map(str, e.path)))
    if errors:
        err = errors[0]
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        raise EdgecError(f"{where}: {err.message}", where=str(path))
    if data["schema_version"] != SCHEMA_VERSION:
        raise EdgecError(f"schema_version {data['schema_version']} is not {SCHEMA_VERSION}; "
                         f"recompile with this edgec", where=str(path))
    return Manifest.from_json(data)
