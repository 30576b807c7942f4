"""The stage pipeline a runtime executes: the manifest's stages grouped into segments, per device.

Stages run in manifest order. Consecutive stages on one device form a
*segment*: one process per device runs its segments, and the stages of a
segment are chained in-process. Segment k receives what its first stage
`receives` and sends what its last stage `sends` (relayed tensors included).
A `Pipeline` is a view of the one manifest model (edgec.manifest); it is not
the compiler's pass pipeline (edgec.pipeline) nor the partitioner's Plan.
Python 3.6 syntax, standard library only: it runs on the boards.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgec.jsonfile import PathLike
from edgec.manifest import Manifest, StageSpec, TensorSpec, read_manifest


@dataclass(frozen=True)
class Segment:
    index: int  # position in the pipeline
    device: str
    stages: Tuple[StageSpec, ...]

    @property
    def receives(self) -> Tuple[str, ...]:
        return tuple(self.stages[0].receives)

    @property
    def sends(self) -> Tuple[str, ...]:
        return tuple(self.stages[-1].sends)

    @property
    def names(self) -> str:
        return ",".join(s.name for s in self.stages)


class Pipeline:
    """The manifest in `out_dir`, as the runtime runs it."""

    def __init__(self, out_dir: PathLike, manifest: Manifest) -> None:
        self.out_dir = os.fspath(out_dir)
        self.manifest = manifest
        self.segments: List[Segment] = []
        run: List[StageSpec] = []
        for st in manifest.stages:
            if run and run[-1].device != st.device:
                self.segments.append(Segment(len(self.segments), run[0].device, tuple(run)))
                run = []
            run.append(st)
        if run:
            self.segments.append(Segment(len(self.segments), run[0].device, tuple(run)))
        # every tensor that crosses a boundary: graph inputs and stage outputs
        self.tensors: Dict[str, TensorSpec] = {t.name: t for t in manifest.inputs}
        for st in manifest.stages:
            for t in st.inputs:
                self.tensors.setdefault(t.name, t)
            for t in st.outputs:
                self.tensors[t.name] = t

    @property
    def inputs(self) -> List[TensorSpec]:
        return self.manifest.inputs

    @property
    def outputs(self) -> List[TensorSpec]:
        return self.manifest.outputs

    @property
    def stages(self) -> List[StageSpec]:
        return self.manifest.stages

    @property
    def cluster(self) -> Dict[str, Any]:
        return self.manifest.cluster

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
        """name -> (dtype, shape) of tensors crossing a boundary, as the wire checks them."""
        return {n: (self.tensors[n].dtype, tuple(self.tensors[n].shape)) for n in names}

    def device_spec(self, device: str) -> Dict[str, Any]:
        """The device's entry in the cluster spec the plan was compiled for ({} if none)."""
        for d in self.cluster.get("devices", []):
            if isinstance(d, dict) and d.get("name") == device:
                return d
        return {}

    def cores(self, device: str) -> Optional[List[int]]:
        """Cores of the units the device's stages run on, from the manifest; None if a stage names none."""
        cores: List[int] = []
        for stage in (st for seg in self.segments_of(device) for st in seg.stages):
            if not stage.cores:
                return None
            cores.extend(c for c in stage.cores if c not in cores)
        return sorted(cores) or None


def read_pipeline(out_dir: PathLike) -> Pipeline:
    """The pipeline of out_dir/manifest.json; errors name the file and the JSON path."""
    return Pipeline(out_dir, read_manifest(out_dir))
