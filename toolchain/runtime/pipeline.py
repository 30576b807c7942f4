"""The stage pipeline a runtime executes: the manifest's stages grouped into segments and steps.

Stages run in manifest order. Consecutive stages on one compute unit of one
device form a *segment*: the stages of a segment are chained in-process, and
every segment of a device is its own worker (a thread pinned to its unit's
cores), so the units of one board work on different frames at once. Segment k
receives what its first stage `receives` and sends what its last stage `sends`
(relayed tensors included).

Segments form *steps* (``Step``): a step of one segment is a link of the chain;
a step of several is parallel, as the manifest's `step`/`parallel` say. How a
frame crosses from one step into the next is the step's *routing*:

    fan-out (into the step)   "one": its only segment; "replica": one segment, dealt by weight
                              (edgec.runtime.dealing); "slice": every segment
    fan-in (out of the step)  "chain": in order; "reorder": frames leave in any order and the
                              sink restores it; "gather": all slices of a frame are joined first

The segment after a step of slices joins each frame's slices (edgec.runtime.gather).
A `Pipeline` is a view of the one manifest model (edgec.manifest); it is not
the compiler's pass pipeline (edgec.pipeline) nor the partitioner's Plan.
Python 3.6 syntax, standard library only: it runs on the boards.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgec.errors import EdgecError
from edgec.jsonfile import PathLike
from edgec.manifest import Manifest, StageSpec, TensorSpec, read_manifest


ROUTES = {None: ("one", "chain"), "replica": ("replica", "reorder"), "slice": ("slice", "gather")}
RUNNABLE_FAN_OUT = ("one", "replica", "slice")


@dataclass(frozen=True)
class Segment:
    index: int  # position in the pipeline
    device: str
    stages: Tuple[StageSpec, ...]
    step: int = 0  # index into Pipeline.steps

    @property
    def unit(self) -> str:
        return self.stages[0].unit

    @property
    def weight(self) -> float:
        """A replica's share of the frames (1 for a segment alone in its step)."""
        w = self.stages[0].weight
        return 1.0 if w is None else float(w)

    @property
    def receives(self) -> Tuple[str, ...]:
        return tuple(self.stages[0].receives)

    @property
    def sends(self) -> Tuple[str, ...]:
        return tuple(self.stages[-1].sends)

    @property
    def names(self) -> str:
        return ",".join(s.name for s in self.stages)


@dataclass(frozen=True)
class Step:
    index: int
    segments: Tuple[Segment, ...]
    parallel: Optional[str] = None  # None, "replica" or "slice"

    @property
    def fan_out(self) -> str:
        return ROUTES[self.parallel][0]

    @property
    def fan_in(self) -> str:
        return ROUTES[self.parallel][1]


def _step_keys(stages: Sequence[StageSpec]) -> List[Tuple[int, Optional[str]]]:
    """Per stage: (its step, its parallel mode); stages without `step` are each their own step."""
    if any(st.step is not None for st in stages):
        return [(int(st.step or 0), st.parallel) for st in stages]
    return [(k, None) for k in range(len(stages))]


class Pipeline:
    """The manifest in `out_dir`, as the runtime runs it."""

    def __init__(self, out_dir: PathLike, manifest: Manifest) -> None:
        self.out_dir = os.fspath(out_dir)
        self.manifest = manifest
        self.segments: List[Segment] = []
        self.steps: List[Step] = []
        keys = _step_keys(manifest.stages)
        groups: List[Tuple[Optional[str], List[List[StageSpec]]]] = []  # per step: mode, its segments' stages
        for k, st in enumerate(manifest.stages):
            step, mode = keys[k]
            parallel = mode is not None
            same_step = k > 0 and keys[k - 1][0] == step
            prev = manifest.stages[k - 1] if k > 0 else None
            chained = (prev is not None and not parallel and groups and groups[-1][0] is None
                       and prev.device == st.device and prev.unit == st.unit)
            if parallel and same_step:
                groups[-1][1].append([st])
            elif chained:
                groups[-1][1][-1].append(st)
            else:
                groups.append((mode, [[st]]))
        for mode, members in groups:
            if mode is not None and ROUTES[mode][0] not in RUNNABLE_FAN_OUT:
                raise EdgecError("stage {}: this runtime cannot run a step of '{}' stages; run it with an edgec "
                                 "whose runtime joins them".format(members[0][0].name, mode), where=self.out_dir)
            segs = []
            for run in members:
                segs.append(Segment(len(self.segments), run[0].device, tuple(run), len(self.steps)))
                self.segments.append(segs[-1])
            self.steps.append(Step(len(self.steps), tuple(segs), mode if len(segs) > 1 else None))
        if self.steps and self.steps[-1].parallel == "slice":
            raise EdgecError("stage {}: the last step is a step of slices, and the sink takes whole frames; a "
                             "stage after the slices joins them".format(self.steps[-1].segments[0].names),
                             where=self.out_dir)
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

    @property
    def first(self) -> Step:
        return self.steps[0]

    @property
    def last(self) -> Step:
        return self.steps[-1]

    def next_step(self, segment: Segment) -> Optional[Step]:
        """Where a segment's frames go: the following step, or None for the sink."""
        return self.steps[segment.step + 1] if segment.step + 1 < len(self.steps) else None

    def upstream(self, segment: Segment) -> Optional[Step]:
        """Where a segment's frames come from: the step before it, or None for the source."""
        return self.steps[segment.step - 1] if segment.step > 0 else None

    def final_segments(self, device: str) -> List[Segment]:
        """The device's segments that send to the sink."""
        return [s for s in self.last.segments if s.device == device]

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

    def replicas_of(self, device: str) -> Optional[List[Segment]]:
        """The device's segments if each is a replica with a sibling on another device (losing the device
        loses no step); else None."""
        mine = self.segments_of(device)
        for seg in mine:
            step = self.steps[seg.step]
            if step.parallel != "replica" or all(o.device == device for o in step.segments):
                return None
        return mine

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
