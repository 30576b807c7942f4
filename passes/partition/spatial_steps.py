"""A chain of slice steps: which runs of the group order to slice, one after another, for the least latency.

Slicing one long run makes its halos grow with every window (a band of ResNet-50's 7x7 output reads
most of the 224-row input); slicing each short run on its own keeps the halos small but gathers and
scatters the feature map between runs. A plan is a chain along the group order of

    one unit computing groups [p, q) | a step of slices computing run [a, b) and merging on one unit

and the chain with the least predicted latency is found by dynamic programming over the cuts: the
state is (position, unit holding the whole feature map there, whether a step of slices came yet).
Each step of slices is costed as :meth:`SearchSpace.estimates` costs one (shares that make every unit
finish together, even-band halo overhead); the chosen steps are then materialised one after another,
each costed band by band (edgec.passes.partition.spatial).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from edgec.passes.partition.local_partition import STAGE_CALL_MS
from edgec.passes.partition.spatial_search import SearchSpace, _shares


MAX_RUNS = 1500  # past this many runs (DenseNet's blocks), the greedy rounds alone: the programme grows too slow


@dataclass(frozen=True)
class Step:
    """One step of slices of a chain: the run from tensor `entry` to tensor `exit` over `units` with
    `shares` of the exit's rows, the whole entry on `head` (None: the source's input) and merged on `tail`."""

    entry: str
    exit: str
    units: tuple[str, ...]
    shares: tuple[float, ...]
    head: str | None
    tail: str


def best_chain(space: SearchSpace) -> tuple[float, list[Step]] | None:
    """(estimated ms, steps) of the chain with the least latency and at least one step of slices; None if
    no run can be sliced, or the model has more than MAX_RUNS runs."""
    n = len(space.order)
    cl = space.cluster
    stops = sorted({0, n} | {p for run in space.runs for p in run})
    INF = float("inf")
    # best[p][(unit, sliced)] = (ms, back-pointer); unit None only at 0: the input still at the source
    best: dict[int, dict[tuple[str | None, bool], tuple[float, tuple | None]]] = {p: {} for p in stops}
    best[0][(None, False)] = (0.0, None)

    def offer(p: int, key: tuple[str | None, bool], ms: float, back: tuple) -> None:
        if ms < best[p].get(key, (INF, None))[0]:
            best[p][key] = (ms, back)

    if len(space.runs) > MAX_RUNS:
        return None
    memo: dict = {}
    runs_from: dict[int, list[tuple[int, int]]] = {}
    for a, b in space.runs:
        runs_from.setdefault(a, []).append((a, b))
    for p in stops:
        for (holder, sliced), (ms, _) in list(best[p].items()):
            for q in (s for s in stops if s > p):  # one unit computes [p, q)
                for u in ([holder] if holder is not None else space.units):
                    seq = space.seq_ms(p, q, u)
                    if not np.isfinite(seq):
                        continue
                    start = 0.0 if holder is not None else (
                        space.transfer(space.source_bytes, cl.source, space.device(u)) + STAGE_CALL_MS)
                    offer(q, (u, sliced), ms + start + seq, ("seq", p, holder, sliced, u))
            for a, b in runs_from.get(p, []):
                for cost, units, shares, tail in _slice_steps(space, a, b, holder, memo):
                    offer(b, (tail, True), ms + cost, ("slice", a, holder, sliced, units, shares))
    finals = [(ms + space.transfer(space.output_bytes, space.device(u), cl.sink), (u, True))
              for (u, sliced), (ms, _) in best[n].items() if sliced and u is not None]
    if not finals:
        return None
    total, key = min(finals, key=lambda f: f[0])
    steps: list[Step] = []
    p = n
    while True:
        back = best[p][key][1]
        if back is None:
            break
        if back[0] == "slice":
            _, a, holder, sliced, units, shares = back
            steps.append(Step(space.lives[a][0], space.lives[p][0], units, shares, holder, key[0]))
            p, key = a, (holder, sliced)
        else:
            _, q, holder, sliced, _ = back
            p, key = q, (holder, sliced)
    steps.reverse()
    return total, steps


def _slice_steps(space: SearchSpace, a: int, b: int, head: str | None, memo: dict | None = None):
    """(ms from the whole entry on `head` to the merged exit on the tail, units, shares, tail) of each way
    to slice run [a, b) (head None: the entry is the source's input). `memo` keeps what does not depend
    on the head (the shares and the gather) across calls."""
    key = (a, b)
    if memo is None or key not in memo:
        y_bytes = space.tensor_bytes(b)
        able = [u for u in space.units if np.isfinite(space.seq_ms(a, b, u))]
        best: dict[tuple, tuple] = {}
        for k in range(2, min(len(able), space.exit_height(b)) + 1):
            ov = space.overhead(a, b, k)
            for subset in itertools.combinations(able, k):
                for tail in space.units:
                    shares = _shares([space.seq_ms(a, b, u) * ov for u in subset],
                                     [space.link(y_bytes, space.device(u), space.device(tail)) for u in subset])
                    if shares is None:
                        continue
                    gather = max(s * space.seq_ms(a, b, u) * ov + STAGE_CALL_MS
                                 + space.transfer(int(s * y_bytes), space.device(u), space.device(tail))
                                 for s, u in zip(shares, subset))
                    way = (gather + STAGE_CALL_MS, subset, tuple(shares), tail)
                    devices = frozenset(space.device(u) for u in subset)  # what the scatter costs depends on
                    if (tail, devices) not in best or way[0] < best[tail, devices][0]:
                        best[tail, devices] = way
        ways = list(best.values())
        if memo is None:
            memo = {}
        memo[key] = ways
    here = space.cluster.source if head is None else space.device(head)
    x_bytes = space.tensor_bytes(a)
    for cost, subset, shares, tail in memo[key]:
        scatter = sum(space.transfer(x_bytes, here, d) for d in sorted({space.device(u) for u in subset}) if d != here)
        yield scatter + cost, subset, shares, tail


def find_step(space: SearchSpace, step: Step) -> tuple[int, int] | None:
    """The run [a, b) of `space` that `step` slices (its tensors by name), None if the space has none."""
    for a, b in space.runs:
        if space.lives[a][0] == step.entry and space.lives[b][0] == step.exit:
            return a, b
    return None
