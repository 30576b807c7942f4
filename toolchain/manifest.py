"""manifest.json: the artefact model that ties out/ together, shared by the compiler and the board runtime.

The manifest is what `verify`, `inspect` and the runtime read: the stages in
execution order with their sub-models (path relative to out/ and sha256), the
cores of each stage's compute unit, the tensors each one reads and writes,
what crosses each boundary, and the predictions.

This module is the one model of that file on both sides, so it needs only the
standard library and keeps to Python 3.6 syntax (the Jetson Nano's JetPack 4.6;
there `dataclasses` is the PyPI backport). Reading checks the structure by hand
and names the file and the JSON path of the first problem. The published JSON
Schema (schemas/manifest.schema.json) is checked on the compiler side
(edgec.manifest_schema) when a compile writes a manifest.
"""

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from edgec.errors import EdgecError
from edgec.jsonfile import PathLike, json_path, read_json

SCHEMA_VERSION = 1
OBJECTIVES = ("throughput", "latency", "energy")
# how the stages of one step share the work: each computes the whole step on a share of the frames
# ("replica", its `weight` the share), or each computes one spatial slice of every frame ("slice")
PARALLEL_MODES = ("replica", "slice")


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: List[int]


@dataclass
class StageSpec:
    name: str
    device: str
    unit: str
    backend: str
    variant: str
    model: str  # path relative to out/
    sha256: str
    inputs: List[TensorSpec]  # what the sub-model reads
    outputs: List[TensorSpec]  # what the sub-model writes
    receives: List[str]  # everything live at the boundary before this stage
    sends: List[str]  # everything live at the boundary after it (relayed tensors included)
    predicted_ms: float
    memory_bytes: int
    session: Dict[str, Any] = field(default_factory=dict)
    cores: List[int] = field(default_factory=list)  # the compute unit's 0-based Linux CPU ids (a GPU's: its host's)
    # the sub-model's weights file beside it, {"path": relative to out/, "sha256": ...}; None: weights inside
    external_data: Optional[Dict[str, str]] = None
    # the stage's pipeline step: stages sharing a step run at once on different units; None: each stage is its
    # own step, in list order
    step: Optional[int] = None
    parallel: Optional[str] = None  # None (the step's only stage), "replica" or "slice" (PARALLEL_MODES)
    weight: Optional[float] = None  # replicas: the share of the frames dealt to this stage; a step's sum to 1
    # a slice's band: {"tensor", "axis", "rows": [lo, hi), "of", "input", "input_rows", "halo_rows": [above,
    # below], "flops", "redundant_flops"}; the next step reads the union of the step's sends
    slice: Optional[Dict[str, Any]] = None
    # the plan's accuracy metric measured with this stage alone in its variant (None: not measured)
    accuracy: Optional[float] = None


@dataclass
class TransferSpec:
    src: str  # stage name, or "source"
    dst: str  # stage name, or "sink"
    src_device: str
    dst_device: str
    tensors: List[str]
    bytes: int
    predicted_ms: float


@dataclass
class Manifest:
    source_model: Dict[str, Any]
    cluster: Dict[str, Any]
    objective: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    stages: List[StageSpec]
    transfers: List[TransferSpec]
    predicted: Dict[str, Any]
    passes: List[Dict[str, Any]] = field(default_factory=list)
    files: List[Dict[str, str]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    edgec_version: str = ""
    # how the stages' variants were chosen: metric, floor, calibration file, rule, user variant run (see
    # edgec.passes.variants); None in manifests written before variants were chosen
    accuracy: Optional[Dict[str, Any]] = None

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        for s in data["stages"]:
            for key in ("external_data", "step", "parallel", "weight", "slice", "accuracy"):
                if s[key] is None:
                    del s[key]
        if data["accuracy"] is None:
            del data["accuracy"]
        for t in data["transfers"]:
            t["from"], t["to"] = t.pop("src"), t.pop("dst")
        return data

    def steps(self) -> List[List[StageSpec]]:
        """The stages grouped by step, in step order (a stage without a step is a step of its own)."""
        steps: Dict[int, List[StageSpec]] = {}
        for k, stage in enumerate(self.stages):
            steps.setdefault(stage.step if stage.step is not None else k, []).append(stage)
        return [steps[i] for i in sorted(steps)]

    def write(self, path: PathLike) -> None:
        with open(os.fspath(path), "w", encoding="utf-8") as f:
            f.write(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest.json") -> "Manifest":
        """The manifest in decoded JSON, checked first; an error names `where` and the JSON path."""
        check_manifest(data, where)

        def tensors(items: Sequence[Mapping[str, Any]]) -> List[TensorSpec]:
            return [TensorSpec(t["name"], t["dtype"], list(t["shape"])) for t in items]

        stages = []
        for s in data["stages"]:
            kw = {k: s[k] for k in _STAGE if k not in ("inputs", "outputs")}
            kw.update({k: s[k] for k in _STAGE_OPTIONAL if k in s})
            stages.append(StageSpec(inputs=tensors(s["inputs"]), outputs=tensors(s["outputs"]), **kw))
        transfers = [TransferSpec(t["from"], t["to"], t["src_device"], t["dst_device"], list(t["tensors"]),
                                  t["bytes"], t["predicted_ms"]) for t in data["transfers"]]
        return cls(source_model=data["source_model"], cluster=data["cluster"], objective=data["objective"],
                   inputs=tensors(data["inputs"]), outputs=tensors(data["outputs"]), stages=stages,
                   transfers=transfers, predicted=data["predicted"], passes=list(data.get("passes", [])),
                   files=list(data.get("files", [])), schema_version=data["schema_version"],
                   edgec_version=data.get("edgec_version", ""), accuracy=data.get("accuracy"))

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


def read_manifest(out_dir: PathLike) -> Manifest:
    """Read and check out/manifest.json; an error names the file and the JSON path."""
    folder = os.fspath(out_dir)
    if not os.path.isdir(folder):
        raise EdgecError("no such folder; pass the folder `edgec compile -o` wrote", where=folder)
    path = os.path.join(folder, "manifest.json")
    data = read_json(path, missing="no manifest.json here; pass the folder `edgec compile -o` wrote")
    return Manifest.from_json(data, path)


# --- checking decoded JSON by hand (the runtime has no jsonschema) ----------------------------------------

JsonPath = List[Union[str, int]]
Check = Callable[[Any, JsonPath, str], None]


def _fail(path: JsonPath, what: str, where: str) -> None:
    raise EdgecError("{}: {}".format(json_path(path), what), where=where)


def _got(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _string(v: Any, path: JsonPath, where: str) -> None:
    if not isinstance(v, str):
        _fail(path, "expected a string, got {}".format(_got(v)), where)


def _sha256(v: Any, path: JsonPath, where: str) -> None:
    if not isinstance(v, str) or not re.match(r"^[0-9a-f]{64}$", v):
        _fail(path, "expected a sha256 (64 hex digits), got {}".format(_got(v)), where)


def _integer(v: Any, path: JsonPath, where: str) -> None:
    if not isinstance(v, int) or isinstance(v, bool):
        _fail(path, "expected an integer, got {}".format(_got(v)), where)


def _count(v: Any, path: JsonPath, where: str) -> None:
    _integer(v, path, where)
    if v < 0:
        _fail(path, "must be at least 0, got {}".format(v), where)


def _number(v: Any, path: JsonPath, where: str) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        _fail(path, "expected a number, got {}".format(_got(v)), where)


def _ms(v: Any, path: JsonPath, where: str) -> None:
    _number(v, path, where)
    if v < 0:
        _fail(path, "must be at least 0, got {}".format(v), where)


def _object(v: Any, path: JsonPath, where: str) -> None:
    if not isinstance(v, dict):
        _fail(path, "expected an object, got {}".format(_got(v)), where)


def _list_of(item: Check, what: str) -> Check:
    def check(v: Any, path: JsonPath, where: str) -> None:
        if not isinstance(v, list):
            _fail(path, "expected a list of {}, got {}".format(what, _got(v)), where)
        for i, x in enumerate(v):
            item(x, path + [i], where)
    return check


def _ints(v: Any, path: JsonPath, where: str) -> None:
    if not isinstance(v, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in v):
        _fail(path, "expected a list of ints, got {}".format(_got(v)), where)
    for i, d in enumerate(v):
        _count(d, path + [i], where)


def _fields(required: Mapping[str, Check], optional: Optional[Mapping[str, Check]] = None,
            closed: bool = True) -> Check:
    """An object with these fields (and, when closed, no others)."""
    optional = optional or {}

    def check(v: Any, path: JsonPath, where: str) -> None:
        _object(v, path, where)
        for key in required:
            if key not in v:
                _fail(path, "missing field '{}'".format(key), where)
        for key, value in v.items():
            sub = required.get(key) or optional.get(key)
            if sub is not None:
                sub(value, path + [key], where)
            elif closed:
                _fail(path + [key], "unknown field; is this manifest from another edgec version?", where)
    return check


def _one_of(*choices: str) -> Check:
    def check(v: Any, path: JsonPath, where: str) -> None:
        if v not in choices:
            _fail(path, "expected one of {}, got {}".format(", ".join(choices), _got(v)), where)
    return check


def _nullable(sub: Check) -> Check:
    def check(v: Any, path: JsonPath, where: str) -> None:
        if v is not None:
            sub(v, path, where)
    return check


_TENSOR = _fields({"name": _string, "dtype": _string, "shape": _ints})
_TENSORS = _list_of(_TENSOR, "tensors")
_STRINGS = _list_of(_string, "strings")
_STAGE = {"name": _string, "device": _string, "unit": _string, "backend": _string, "variant": _string,
          "model": _string, "sha256": _sha256, "inputs": _TENSORS, "outputs": _TENSORS, "receives": _STRINGS,
          "sends": _STRINGS, "predicted_ms": _ms, "memory_bytes": _count}
def _share(v: Any, path: JsonPath, where: str) -> None:
    _number(v, path, where)
    if not 0 < v <= 1:
        _fail(path, "a replica's share of the frames lies in (0, 1], got {}".format(_got(v)), where)


_SLICE = _fields({"tensor": _string, "axis": _count, "rows": _ints, "of": _count, "input": _string,
                  "input_rows": _ints, "halo_rows": _ints, "flops": _number, "redundant_flops": _number})
_STAGE_OPTIONAL = {"session": _object, "cores": _ints,
                   "external_data": _fields({"path": _string, "sha256": _sha256}),
                   "step": _count, "parallel": _one_of(*PARALLEL_MODES), "weight": _share,
                   "slice": _SLICE, "accuracy": _nullable(_number)}
_TRANSFER = _fields({"from": _string, "to": _string, "src_device": _string, "dst_device": _string,
                     "tensors": _STRINGS, "bytes": _count, "predicted_ms": _ms})
_MANIFEST = _fields(
    {"schema_version": _integer,
     "source_model": _fields({"path": _string, "sha256": _sha256, "opset": _integer}, closed=False),
     "cluster": _object, "objective": _one_of(*OBJECTIVES), "inputs": _TENSORS, "outputs": _TENSORS,
     "stages": _list_of(_fields(_STAGE, _STAGE_OPTIONAL), "stages"),
     "transfers": _list_of(_TRANSFER, "transfers"),
     "predicted": _fields({"latency_ms": _number, "bottleneck_ms": _number, "throughput_fps": _number},
                          {"accuracy": _nullable(_number), "energy_mj": _nullable(_number)}, closed=False)},
    {"edgec_version": _string,
     "passes": _list_of(_fields({"name": _string, "ms": _number}, closed=False), "objects"),
     "files": _list_of(_fields({"path": _string, "sha256": _sha256}, closed=False), "objects"),
     "accuracy": _nullable(_fields({"rule": _string}, {"floor": _nullable(_number), "metric": _nullable(_string)},
                                   closed=False))},
    closed=False)


def check_manifest(data: Any, where: str = "manifest.json") -> None:
    """Raise an EdgecError naming `where` and the JSON path unless `data` is a manifest this edgec reads."""
    _object(data, [], where)
    if "schema_version" not in data:
        _fail([], "missing field 'schema_version'; is this an edgec manifest?", where)
    version = data["schema_version"]
    _integer(version, ["schema_version"], where)
    if version != SCHEMA_VERSION:
        _fail(["schema_version"], "{}, but this edgec reads version {}; recompile with this edgec".format(
            version, SCHEMA_VERSION), where)
    _MANIFEST(data, [], where)
    if not data["stages"]:
        _fail(["stages"], "expected at least one stage", where)
    made = {t["name"] for t in data["inputs"]} | {t["name"] for s in data["stages"] for t in s["outputs"]}
    for i, s in enumerate(data["stages"]):
        for key in ("receives", "sends"):
            for j, name in enumerate(s[key]):
                if name not in made:
                    _fail(["stages", i, key, j], "tensor '{}' crosses a boundary but is neither a graph input "
                          "nor made by a stage".format(name), where)
    _check_steps(data["stages"], where)
    _check_slices(data["stages"], where)


def _check_steps(stages: Sequence[Mapping[str, Any]], where: str) -> None:
    """Steps: all stages carry one or none; steps never go back; the stages of a step share one parallel mode
    (a step of one stage needs none); the weights of a replicated step sum to 1."""
    if not any("step" in s for s in stages):
        return
    steps: Dict[int, List[int]] = {}
    last = -1
    for i, s in enumerate(stages):
        if "step" not in s:
            _fail(["stages", i], "missing field 'step' (another stage has one: give every stage its step)", where)
        if s["step"] < last:
            _fail(["stages", i, "step"], "step {} comes after step {}; stages are listed in step order".format(
                s["step"], last), where)
        if s["step"] != last and s["step"] in steps:
            _fail(["stages", i, "step"], "step {} is split by another step".format(s["step"]), where)
        last = s["step"]
        steps.setdefault(s["step"], []).append(i)
    for step, members in steps.items():
        modes = {stages[i].get("parallel") for i in members}
        if len(members) > 1 and (len(modes) != 1 or None in modes):
            _fail(["stages", members[0]], "the {} stages of step {} need one shared 'parallel' mode ({})".format(
                len(members), step, " or ".join(PARALLEL_MODES)), where)
        if modes == {"replica"}:
            for i in members:
                if "weight" not in stages[i]:
                    _fail(["stages", i], "missing field 'weight' (a replica's share of the frames)", where)
            for i in members[1:]:
                for key in ("receives", "sends"):
                    if stages[i][key] != stages[members[0]][key]:
                        _fail(["stages", i, key], "replicas of step {} compute the same step: their '{}' must "
                              "match stage {}'s".format(step, key, stages[members[0]]["name"]), where)
            total = sum(stages[i]["weight"] for i in members)
            if abs(total - 1.0) > 1e-6:
                _fail(["stages", members[0], "weight"], "the weights of step {} sum to {:.6g}; they must sum "
                      "to 1".format(step, total), where)


def _check_slices(stages: Sequence[Mapping[str, Any]], where: str) -> None:
    """A step of slices: every stage has a `slice`, all of one tensor, axis and height, and their rows
    cover [0, of) in order with no gap or overlap."""
    steps = {}  # type: Dict[int, List[int]]
    for i, s in enumerate(stages):
        if s.get("parallel") == "slice":
            steps.setdefault(s.get("step", -1), []).append(i)
        elif "slice" in s:
            _fail(["stages", i, "slice"], "only a stage with parallel 'slice' has a slice", where)
    for step, members in steps.items():
        first = None
        end = 0
        for i in members:
            sl = stages[i].get("slice")
            if sl is None:
                _fail(["stages", i], "missing field 'slice' (the rows this slice owns)", where)
            key = (sl["tensor"], sl["axis"], sl["of"])
            first = key if first is None else first
            if key != first:
                _fail(["stages", i, "slice"], "slices of step {} cut {} rows of '{}' on axis {}, this one {} of "
                      "'{}' on axis {}".format(step, first[2], first[0], first[1], key[2], key[0], key[1]), where)
            rows = sl["rows"]
            if len(rows) != 2 or rows[0] != end or rows[1] <= rows[0]:
                _fail(["stages", i, "slice", "rows"], "expected rows from {} on (the slices of step {} cover "
                      "their tensor's rows in order), got {}".format(end, step, _got(rows)), where)
            end = rows[1]
        if end != first[2]:
            _fail(["stages", members[-1], "slice", "rows"], "the slices of step {} end at row {} of {}".format(
                step, end, first[2]), where)
