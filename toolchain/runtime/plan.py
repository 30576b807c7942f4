"""The plan a runtime executes, read from out/manifest.json with plain json.

Stages run in manifest order. Consecutive stages on one device form a
*segment*: one process per device runs its segments, and the stages of a
segment are chained in-process. Segment k receives what its first stage
`receives` and sends what its last stage `sends` (relayed tensors included).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgec.errors import EdgecError


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: Tuple[int, ...]


@dataclass(frozen=True)
class StagePlan:
    name: str
    device: str
    unit: str
    backend: str
    model: str  # path relative to out/
    sha256: str
    inputs: Tuple[Tensor, ...]
    outputs: Tuple[Tensor, ...]
    receives: Tuple[str, ...]
    sends: Tuple[str, ...]
    session: Dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Segment:
    index: int  # position in the pipeline
    device: str
    stages: Tuple[StagePlan, ...]

    @property
    def receives(self) -> Tuple[str, ...]:
        return self.stages[0].receives

    @property
    def sends(self) -> Tuple[str, ...]:
        return self.stages[-1].sends

    @property
    def names(self) -> str:
        return ",".join(s.name for s in self.stages)


@dataclass
class Plan:
    out_dir: str
    inputs: List[Tensor]
    outputs: List[Tensor]
    stages: List[StagePlan]
    segments: List[Segment]
    tensors: Dict[str, Tensor]  # every tensor that crosses a boundary: graph inputs and stage outputs
    cluster: Dict[str, Any]

    @property
    def devices(self) -> List[str]:
        """Devices that run stages, in pipeline order of first appearance."""
        seen: List[str] = []
        for seg in self.segments:
            if seg.device not in seen:
                seen.append(seg.device)
        return seen

    def segments_of(self, device: str) -> List[Segment]:
        return [s for s in self.segments if s.device == device]

    def stage_names(self, device: str) -> List[str]:
        return [st.name for seg in self.segments_of(device) for st in seg.stages]

    def expect(self, names: Sequence[str]) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
        return {n: (self.tensors[n].dtype, self.tensors[n].shape) for n in names}

    def device_spec(self, device: str) -> Dict[str, Any]:
        for d in self.cluster.get("devices", []):
            if d.get("name") == device:
                return d
        return {}


def read_plan(out_dir: str) -> Plan:
    """Read out/manifest.json; errors name the file and what is wrong."""
    path = os.path.join(out_dir, "manifest.json")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise EdgecError("no manifest.json here; pass the folder `edgec compile -o` wrote", where=out_dir) from None
    except ValueError as exc:
        raise EdgecError(f"not valid JSON: {exc}", where=path) from None
    try:
        return _plan(out_dir, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgecError(f"not a manifest this runtime can run ({type(exc).__name__}: {exc}); "
                         f"recompile with this edgec", where=path) from None


def _tensor(t: Dict[str, Any]) -> Tensor:
    return Tensor(str(t["name"]), str(t["dtype"]), tuple(int(d) for d in t["shape"]))


def _plan(out_dir: str, data: Dict[str, Any]) -> Plan:
    if data.get("schema_version") != 1:
        raise ValueError(f"schema_version {data.get('schema_version')!r}")
    inputs = [_tensor(t) for t in data["inputs"]]
    outputs = [_tensor(t) for t in data["outputs"]]
    stages = []
    for s in data["stages"]:
        stages.append(StagePlan(
            name=s["name"], device=s["device"], unit=s["unit"], backend=s["backend"], model=s["model"],
            sha256=s["sha256"], inputs=tuple(_tensor(t) for t in s["inputs"]),
            outputs=tuple(_tensor(t) for t in s["outputs"]), receives=tuple(s["receives"]),
            sends=tuple(s["sends"]), session=dict(s.get("session") or {})))
    if not stages:
        raise ValueError("no stages")
    tensors = {t.name: t for t in inputs}
    for st in stages:
        for t in st.inputs:
            tensors.setdefault(t.name, t)
        for t in st.outputs:
            tensors[t.name] = t
    for st in stages:
        for name in st.receives + st.sends:
            if name not in tensors:
                raise ValueError(f"stage {st.name}: tensor '{name}' crosses a boundary but no stage makes it")
    segments: List[Segment] = []
    run: List[StagePlan] = []
    for st in stages:
        if run and run[-1].device != st.device:
            segments.append(Segment(len(segments), run[0].device, tuple(run)))
            run = []
        run.append(st)
    segments.append(Segment(len(segments), run[0].device, tuple(run)))
    return Plan(out_dir, inputs, outputs, stages, segments, tensors, dict(data.get("cluster") or {}))


def device_cores(plan: Plan, device: str) -> Optional[List[int]]:
    """Core ids of the units the device's stages run on, as the cluster spec in the manifest declares them.

    Only units overridden in the manifest's cluster spec are known here; None when
    the spec does not say (the catalog's defaults live on the compiler side).
    """
    spec = plan.device_spec(device).get("units") or {}
    cores: List[int] = []
    for seg in plan.segments_of(device):
        for st in seg.stages:
            unit = spec.get(st.unit) or {}
            if "cores" not in unit:
                return None
            cores.extend(int(c) for c in unit["cores"] if int(c) not in cores)
    return sorted(cores) if cores else None
