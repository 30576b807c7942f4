"""The pipeline timeline of a plan: a few frames scheduled on its units and links, for `edgec report`'s Gantt.

A list-scheduling replay of the manifest, not a second cost model: each
stage takes its predicted (or measured) ms on its unit, each transfer its
predicted ms on its link, a unit or link does one thing at a time, and a
stage starts once every tensor it receives has arrived; frames are placed
in order, each thing in the earliest gap its unit or link has. Frames enter
together, so the picture shows the pipeline filling and its bottleneck.
Stages that share a `step` run at once: `parallel: "replica"` stages take
turns on frames in proportion to their `weight` (smooth weighted
round-robin), slices and plain stages all compute every frame.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

SOURCE, SINK = "source", "sink"


@dataclass(frozen=True)
class Bar:
    row: str  # "xu4.big", or a link "xu4 -> nano"
    kind: str  # "stage" or "transfer"
    name: str  # the stage, or "s0 -> s1"
    frame: int
    start_ms: float
    end_ms: float


def link_row(src_device: str, dst_device: str) -> str:
    return f"{src_device} -> {dst_device}" if src_device != dst_device else f"{src_device} (between units)"


def steps(stages: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The stages grouped by pipeline step, in step order (no `step`: each stage is its own, in list order)."""
    keyed: dict[Any, list[Mapping[str, Any]]] = {}
    for index, st in enumerate(stages):
        step = st.get("step")
        keyed.setdefault(step if isinstance(step, int) else ("own", index), []).append(st)
    order = sorted(keyed, key=lambda k: min(i for i, st in enumerate(stages) if st in keyed[k]))
    return [keyed[k] for k in order]


class _Dealer:
    """Smooth weighted round-robin over a step's replicas: frame by frame, each gets its weight's share."""

    def __init__(self, replicas: Sequence[Mapping[str, Any]]) -> None:
        self.replicas = list(replicas)
        self.weights = [float(r.get("weight") or 1.0) for r in self.replicas]
        self.current = [0.0] * len(self.replicas)

    def next(self) -> Mapping[str, Any]:
        total = sum(self.weights)
        self.current = [c + w for c, w in zip(self.current, self.weights)]
        best = max(range(len(self.current)), key=lambda i: self.current[i])
        self.current[best] -= total
        return self.replicas[best]


def schedule(stages: Sequence[Mapping[str, Any]], transfers: Sequence[Mapping[str, Any]], frames: int = 4,
             stage_ms: Mapping[str, float] | None = None) -> list[Bar]:
    """Bars for `frames` frames; `stage_ms` overrides a stage's predicted ms (measured times)."""
    durations = {st["name"]: float(st.get("predicted_ms", 0.0)) for st in stages}
    durations.update(stage_ms or {})
    unit_of = {st["name"]: f"{st['device']}.{st['unit']}" for st in stages}
    into: dict[str, list[Mapping[str, Any]]] = {}
    for t in transfers:
        into.setdefault(t["to"], []).append(t)
    plan = steps(stages)
    dealers = [_Dealer(step) if any(st.get("parallel") == "replica" for st in step) else None for step in plan]
    busy: dict[str, list[tuple[float, float]]] = {}  # per unit or link, its reserved spans in time order
    bars: list[Bar] = []
    for frame in range(frames):
        done: dict[str, float] = {SOURCE: 0.0}  # what has finished for this frame, and when

        def arrive(target: str) -> float:
            ready = 0.0
            for t in into.get(target, []):
                if t["from"] not in done:
                    continue  # another replica's, or a stage this frame skips
                row = link_row(t["src_device"], t["dst_device"])
                start = _reserve(busy.setdefault(row, []), done[t["from"]], float(t.get("predicted_ms", 0.0)))
                end = start + float(t.get("predicted_ms", 0.0))
                bars.append(Bar(row, "transfer", f"{t['from']} -> {t['to']}", frame, start, end))
                ready = max(ready, end)
            return ready

        for step, dealer in zip(plan, dealers):
            active = [dealer.next()] if dealer is not None else step
            previous = max(done.values())
            for st in active:
                ready = arrive(st["name"]) if st["name"] in into else previous
                row = unit_of[st["name"]]
                start = _reserve(busy.setdefault(row, []), ready, durations[st["name"]])
                end = start + durations[st["name"]]
                bars.append(Bar(row, "stage", st["name"], frame, start, end))
                done[st["name"]] = end
        arrive(SINK)
    return bars


def _reserve(spans: list[tuple[float, float]], ready: float, duration: float) -> float:
    """The earliest start at or after `ready` where `duration` fits between the row's spans; reserves it."""
    start = ready
    for a, b in spans:
        if start + duration <= a:
            break
        start = max(start, b)
    bisect.insort(spans, (start, start + duration))
    return start


def rows(bars: Sequence[Bar]) -> list[str]:
    """Unit rows first, then links, each in order of first use."""
    units = [b.row for b in bars if b.kind == "stage"]
    links = [b.row for b in bars if b.kind == "transfer"]
    return list(dict.fromkeys(units)) + [r for r in dict.fromkeys(links) if r not in units]
