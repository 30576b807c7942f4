"""The global partition problem: items in a fixed order, devices, links; plans and their evaluation.

A model is a sequence of n *items* (fusion groups) in topological order. A plan
cuts it into contiguous segments ``[start, end)`` and runs each on a distinct
device. Every tensor live across a cut is relayed through the chain of devices,
so the bytes sent at position p are ``cut_bytes(p)``, whatever their producer.

Memory of a segment (conservative and monotone: extending a segment never
lowers it) is the sum of its items' weights plus the peak, over its items, of
the item's workspace (its inputs and outputs) plus the bytes of tensors that
pass through the item untouched (produced before it, used after it). Tensors
passing through count even when only relayed, since they are held while the
item runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Literal

import numpy as np

Objective = Literal["throughput", "latency"]
OBJECTIVES: tuple[str, ...] = ("throughput", "latency")


@dataclass(frozen=True)
class Tensor:
    """A tensor between items. ``producer == -1``: a graph input (starts on the source device);
    a consumer equal to the number of items (SINK): a graph output (must reach the sink device)."""

    name: str
    nbytes: int
    producer: int
    consumers: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class PartitionProblem:
    items: tuple[str, ...]
    devices: tuple[str, ...]
    compute_ms: np.ndarray
    weight_bytes: np.ndarray
    workspace_bytes: np.ndarray
    memory_bytes: np.ndarray
    bandwidth_Bps: np.ndarray
    latency_ms: np.ndarray
    tensors: tuple[Tensor, ...]
    source: int
    sink: int

    def __post_init__(self) -> None:
        n, d = len(self.items), len(self.devices)
        if n == 0 or d == 0:
            raise ValueError(f"a partition problem needs at least one item and one device (got {n} items, {d} devices)")
        for what, names in (("item", self.items), ("device", self.devices)):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names must be unique")
        arrays = {
            "compute_ms": ((n, d), np.float64, True),
            "weight_bytes": ((n,), np.int64, False),
            "workspace_bytes": ((n,), np.int64, False),
            "memory_bytes": ((d,), np.float64, True),
            "bandwidth_Bps": ((d, d), np.float64, True),
            "latency_ms": ((d, d), np.float64, False),
        }
        for name, (shape, dtype, inf_ok) in arrays.items():
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"{name} has shape {value.shape}; expected {shape} for {n} items and {d} devices")
            if np.isnan(value).any() or (value < 0).any():
                raise ValueError(f"{name} must be non-negative numbers (no NaN)")
            if not inf_ok and np.isinf(value).any():
                raise ValueError(f"{name} must be finite")
            if dtype is np.int64:
                if (value != np.round(value)).any():
                    raise ValueError(f"{name} must hold whole bytes")
                value = value.astype(np.int64)
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "tensors", tuple(self.tensors))
        for role in ("source", "sink"):
            if not 0 <= getattr(self, role) < d:
                raise ValueError(f"{role} {getattr(self, role)} is not a device index (0..{d - 1})")
        for t in self.tensors:
            if t.nbytes < 0:
                raise ValueError(f"tensor {t.name!r} has negative size {t.nbytes}")
            if not -1 <= t.producer < n:
                raise ValueError(f"tensor {t.name!r}: producer {t.producer} is not an item index or -1")
            for c in t.consumers:
                if not t.producer < c <= n:
                    raise ValueError(f"tensor {t.name!r}: consumer {c} must lie after its producer "
                                     f"{t.producer} and at most {n} (the sink)")

    @property
    def n(self) -> int:
        """Number of items; also the SINK consumer index."""
        return len(self.items)

    @cached_property
    def cuts(self) -> np.ndarray:
        """``cuts[p]`` = bytes live across position p (0..n), see :meth:`cut_bytes`."""
        diff = np.zeros(self.n + 2, dtype=np.int64)
        for t in self.tensors:
            if t.consumers:
                diff[t.producer + 1] += t.nbytes
                diff[max(t.consumers) + 1] -= t.nbytes
        cuts = np.cumsum(diff)[: self.n + 1]
        cuts.setflags(write=False)
        return cuts

    def cut_bytes(self, p: int) -> int:
        """Bytes of tensors produced before position p (inputs before 0) and used at or after p (sink at n)."""
        return int(self.cuts[p])

    @cached_property
    def peak_bytes(self) -> np.ndarray:
        """Per item: workspace plus the bytes of tensors passing through it untouched."""
        diff = np.zeros(self.n + 1, dtype=np.int64)
        for t in self.tensors:
            if not t.consumers:
                continue
            last = max(t.consumers)
            if last - t.producer >= 2:
                diff[t.producer + 1] += t.nbytes
                diff[last] -= t.nbytes
                for c in set(t.consumers):
                    if c < last:
                        diff[c] -= t.nbytes
                        diff[c + 1] += t.nbytes
        peak = self.workspace_bytes + np.cumsum(diff)[: self.n]
        peak.setflags(write=False)
        return peak

    @cached_property
    def memory_table(self) -> np.ndarray:
        """``[s, e]`` = segment_memory(s, e) for s < e; -1 elsewhere. Shape (n+1, n+1)."""
        n = self.n
        table = np.full((n + 1, n + 1), -1, dtype=np.int64)
        w = np.concatenate(([0], np.cumsum(self.weight_bytes)))
        for s in range(n):
            table[s, s + 1:] = w[s + 1:] - w[s] + np.maximum.accumulate(self.peak_bytes[s:])
        table.setflags(write=False)
        return table

    def segment_memory(self, start: int, end: int) -> int:
        """Bytes a device needs to run items [start, end): weights plus peak of workspace + pass-through."""
        return int(self.memory_table[start, end])

    @cached_property
    def compute_prefix(self) -> np.ndarray:
        """(n+1, D) prefix sums of compute_ms with impossible items counted as 0 (see ``blocked_prefix``)."""
        c = np.where(np.isinf(self.compute_ms), 0.0, self.compute_ms)
        prefix = np.vstack([np.zeros(len(self.devices)), np.cumsum(c, axis=0)])
        prefix.setflags(write=False)
        return prefix

    @cached_property
    def blocked_prefix(self) -> np.ndarray:
        """(n+1, D) prefix counts of items a device cannot run."""
        blocked = np.vstack([np.zeros(len(self.devices), dtype=np.int64),
                             np.cumsum(np.isinf(self.compute_ms), axis=0)])
        blocked.setflags(write=False)
        return blocked

    def stage_ms(self, start: int, end: int, device: int) -> float:
        """Compute time of items [start, end) on ``device``; inf if it cannot run one of them."""
        if self.blocked_prefix[end, device] != self.blocked_prefix[start, device]:
            return float("inf")
        return float(self.compute_prefix[end, device] - self.compute_prefix[start, device])

    @cached_property
    def window_start(self) -> np.ndarray:
        """(D, n+1): smallest start s with [s, q) fitting device d's memory and runnable on d; q if none."""
        n, big = self.n, np.iinfo(np.int64).max
        mem = np.where(self.memory_table < 0, big, self.memory_table)
        starts = np.empty((len(self.devices), n + 1), dtype=np.int64)
        q = np.arange(n + 1)
        for d, cap in enumerate(self.memory_bytes):
            fits = mem <= cap
            runnable = self.blocked_prefix[None, :, d] == self.blocked_prefix[:, None, d]
            bad = ~(fits & runnable) & (np.arange(n + 1)[:, None] < q[None, :])
            # infeasible starts form a prefix of [0, q): count them
            starts[d] = bad.sum(axis=0)
        starts.setflags(write=False)
        return starts

    def transfer_ms(self, nbytes: int, a: int, b: int) -> float:
        """Time to send ``nbytes`` from device a to b: 0 if a == b or nothing to send; inf without a link."""
        if a == b or nbytes == 0:
            return 0.0
        bw = self.bandwidth_Bps[a, b]
        if bw == 0:
            return float("inf")
        return float(self.latency_ms[a, b] + nbytes * (1000.0 / bw))  # same arithmetic as transfer_table

    @cached_property
    def transfer_table(self) -> np.ndarray:
        """(n+1, D, D): transfer_ms(cut_bytes(p), a, b) for every position and ordered device pair."""
        d = len(self.devices)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_byte = np.where(self.bandwidth_Bps > 0, 1000.0 / self.bandwidth_Bps, np.inf)
            table = self.latency_ms[None] + self.cuts[:, None, None] * per_byte[None]
        table = np.where(self.bandwidth_Bps[None] > 0, table, np.inf)
        table[self.cuts == 0] = 0.0
        table[:, np.arange(d), np.arange(d)] = 0.0
        table.setflags(write=False)
        return table


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    device: int


@dataclass(frozen=True)
class Plan:
    """Segments with their predicted costs. ``transfer_ms`` has one entry per hand-off: source to the
    first device, between consecutive segments, last device to sink. ``violations`` is empty iff feasible."""

    segments: tuple[Segment, ...]
    stage_ms: tuple[float, ...]
    transfer_ms: tuple[float, ...]
    memory_bytes: tuple[int, ...]
    bottleneck_ms: float
    latency_ms: float
    comm_only: bool
    violations: tuple[str, ...] = field(default=())

    @property
    def feasible(self) -> bool:
        return not self.violations

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(s.device for s in self.segments)

    def key(self, objective: Objective) -> tuple[float, float]:
        """What the objective minimises, in order: (bottleneck, latency) or (latency, bottleneck)."""
        check_objective(objective)
        if objective == "throughput":
            return (self.bottleneck_ms, self.latency_ms)
        return (self.latency_ms, self.bottleneck_ms)


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")


def evaluate(problem: PartitionProblem, segments: Iterable[Segment | tuple[int, int, int]],
             comm_only: bool = False) -> Plan:
    """Cost a plan. Malformed segments (gaps, overlaps, reused devices) raise ValueError; a plan that
    is well formed but infeasible comes back with ``violations`` saying why, and infinite costs
    where an item cannot run or a link is missing."""
    segs = tuple(_segment(s) for s in segments)
    n, nd = problem.n, len(problem.devices)
    if not segs or segs[0].start != 0 or segs[-1].end != n:
        raise ValueError(f"segments must cover items 0..{n}")
    for a, b in zip(segs, segs[1:]):
        if a.end != b.start:
            raise ValueError(f"segments [{a.start},{a.end}) and [{b.start},{b.end}) are not contiguous")
    for s in segs:
        if s.start >= s.end:
            raise ValueError(f"segment [{s.start},{s.end}) is empty")
        if not 0 <= s.device < nd:
            raise ValueError(f"segment [{s.start},{s.end}) has no device {s.device}")
    if len({s.device for s in segs}) != len(segs):
        raise ValueError("a device may run at most one segment")
    names, devs = problem.items, problem.devices
    violations: list[str] = []
    stages, memory = [], []
    for s in segs:
        stage = problem.stage_ms(s.start, s.end, s.device)
        mem = problem.segment_memory(s.start, s.end)
        cap = problem.memory_bytes[s.device]
        if np.isinf(stage):
            bad = [names[i] for i in range(s.start, s.end) if np.isinf(problem.compute_ms[i, s.device])]
            violations.append(f"{devs[s.device]} cannot run {', '.join(bad)}")
        if mem > cap:
            violations.append(f"items {names[s.start]}..{names[s.end - 1]} need {mem} bytes on "
                              f"{devs[s.device]}, which has {cap:.0f} ({mem - cap:.0f} missing)")
        stages.append(stage)
        memory.append(mem)
    chain = [problem.source, *(s.device for s in segs), problem.sink]
    positions = [0, *(s.end for s in segs[:-1]), n]
    transfers = []
    for k, p in enumerate(positions):
        ms = problem.transfer_ms(problem.cut_bytes(p), chain[k], chain[k + 1])
        if np.isinf(ms):
            violations.append(f"no link {devs[chain[k]]} -> {devs[chain[k + 1]]} for the "
                              f"{problem.cut_bytes(p)} bytes live at position {p}")
        transfers.append(ms)
    latency = transfers[0]
    for stage, transfer in zip(stages, transfers[1:]):
        latency += stage + transfer
    bottleneck = max(transfers) if comm_only else max(max(stages), max(transfers))
    return Plan(segs, tuple(stages), tuple(transfers), tuple(memory), float(bottleneck), float(latency),
                comm_only, tuple(violations))


def _segment(s: Segment | tuple[int, int, int]) -> Segment:
    start, end, device = (s.start, s.end, s.device) if isinstance(s, Segment) else s
    return Segment(int(start), int(end), int(device))
