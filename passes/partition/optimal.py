"""Optimal global partition: contiguous segments over any subset and order of distinct devices.

The search is a dynamic programme over states (S, d, q): the set S of devices
used so far, the last of them d, and the position q where d's segment ends.
States are built layer by layer (|S| = 1, 2, ...); each layer holds one row of
values over q per pair (S, d) and is computed in a few batched numpy calls:

* expand: every stored (S', d') sends its row to each unused device e,
  adding (latency) or max-ing (bottleneck) the transfer d' -> e at each cut
  position p; rows with the same (S' + {e}, e) are reduced by min;
* advance: the segment [p, q) on e. Memory and runnability are monotone,
  so the feasible starts for q form an interval [lo(e, q), q-1]:
  - latency:    f[q] = P[q] + min_{p in window} (h[p] - P[p])  (P = prefix compute
    times), one range-minimum query per q on a sparse table;
  - bottleneck: f[q] = min_p max(h[p], P[q] - P[p]) equals min_p max(m(p), P[q] - P[p])
    with m(p) = min h[p..q-1] non-decreasing and P[q] - P[p] non-increasing in p,
    so a vectorised binary search for their crossing (log n range-minimum
    queries) finds it.

Objectives are lexicographic. "throughput": the bottleneck DP gives the optimal
bottleneck B*, then the latency DP restricted to stages and transfers <= B*
picks the lowest latency among those plans. "latency": the latency DP gives L*;
ties (within a relative 1e-9) are broken by the least bottleneck through a
binary search over the candidate cost values B for the smallest B whose
restricted latency is still L*; one extra DP when no tie improves the plan.

Interchangeable devices (same compute times, memory and links, e.g. identical
boards on one switch; see ``device_classes``) are counted rather than named:
S is a vector of counts per class, so k identical boards cost k + 1 states
instead of 2^k, and a plan's class sequence is mapped back to distinct boards.

Cost, for D devices in pairwise different classes: sum_k C(D, k) k (D - k)
row expansions of length n + 1, i.e. O(D^2 2^D n) time (times log n in the
bottleneck DP) and O(D 2^D n) memory for the layers kept to trace the plan
back. Partial plans already worse than the best complete one are dropped.
Measured on one core, n = 200, all devices different (throughput; latency
about half): D = 8 0.08 s, D = 10 0.3 s, D = 12 2.5 s, D = 16 100 s and 6 GB.
Sixteen boards of three kinds on one switch (420 device sets) take 0.07 s.

Beyond ``max_exact_devices`` (more than 2^max_exact_devices device sets) the
same DP runs as a beam search: for every (class, position) only the
``beam_width`` best device sets are kept, both where segments start and where
they end. It is a heuristic: it may miss the optimum (on random 8-device
problems at width 4: 0.6% above it on average, 7% at worst) and, in rare
cases, every feasible plan. n = 200, D = 16 all different: 1.5 s, 3-4% above
the exact optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.errors import EdgecError
from edgec.passes.partition.problem import Objective, PartitionProblem, Plan, Segment, check_objective, evaluate

INF = float("inf")
TIE_RTOL = 1e-9


class Infeasible(EdgecError):
    """No plan meets the memory, compute and link constraints; ``reason`` says what is missing."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def solve(problem: PartitionProblem, objective: Objective = "throughput", *, comm_only: bool = False,
          max_exact_devices: int = 12, beam_width: int = 4) -> Plan:
    """The best plan for ``objective`` ("throughput": least bottleneck, then least latency; "latency":
    the reverse). Exact up to 2^max_exact_devices device sets (D devices when all differ), a beam
    search of ``beam_width`` beyond. ``comm_only``: the bottleneck counts transfers only."""
    check_objective(objective)
    beam = None if state_count(problem) <= 2 ** max_exact_devices else beam_width
    if objective == "throughput":
        best, segments, _ = _Search(problem, "max", comm_only, beam=beam).run()
        if segments is None:
            raise Infeasible(_diagnose(problem, comm_only, beam))
        _, tied, _ = _Search(problem, "sum", comm_only, threshold=best, beam=beam).run()
        segments = tied or segments
    else:
        best, segments, _ = _Search(problem, "sum", comm_only, beam=beam).run()
        if segments is None:
            raise Infeasible(_diagnose(problem, comm_only, beam))
        segments = _least_bottleneck(problem, comm_only, beam, best, segments)
    return evaluate(problem, segments, comm_only)


def _least_bottleneck(problem: PartitionProblem, comm_only: bool, beam: int | None, latency: float,
                      segments: list[Segment]) -> list[Segment]:
    """Among plans of latency ``latency`` (within TIE_RTOL), one with the least bottleneck."""
    bottleneck = evaluate(problem, segments, comm_only).bottleneck_ms
    values = candidate_values(problem, comm_only)
    values = values[values < bottleneck]
    limit = latency + TIE_RTOL * abs(latency)

    def attempt(b: float) -> list[Segment] | None:
        value, found, _ = _Search(problem, "sum", comm_only, threshold=b, beam=beam).run()
        return found if found is not None and value <= limit else None

    if values.size == 0 or (best := attempt(values[-1])) is None:
        return segments
    lo, hi = 0, values.size - 1
    while lo < hi:
        mid = (lo + hi) // 2
        found = attempt(values[mid])
        if found is None:
            lo = mid + 1
        else:
            hi, best = mid, found
    return best


def candidate_values(problem: PartitionProblem, comm_only: bool) -> np.ndarray:
    """Every value a plan's bottleneck can take, sorted: feasible stage times and finite transfers."""
    transfers = problem.transfer_table
    parts = [np.zeros(1), transfers[np.isfinite(transfers)]]
    if not comm_only:
        prefix, n = problem.compute_prefix, problem.n
        p, q = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        for d in range(len(problem.devices)):
            ok = (p >= problem.window_start[d][q]) & (p < q)
            parts.append((prefix[q, d] - prefix[p, d])[ok])
    return np.unique(np.concatenate(parts))


def device_classes(problem: PartitionProblem) -> list[list[int]]:
    """Devices grouped into interchangeable classes: same compute times and memory, and the same links
    to every other device, so swapping two of them changes no plan's cost. The source and the sink
    stay alone. A cluster of identical boards on one switch collapses to one class."""
    compute, memory = problem.compute_ms, problem.memory_bytes
    links = np.stack([problem.bandwidth_Bps, problem.latency_ms])
    classes: list[list[int]] = []
    for d in range(len(problem.devices)):
        for members in classes:
            rep = members[0]
            if {d, rep} & {problem.source, problem.sink} or memory[d] != memory[rep]:
                continue
            others = [k for k in range(len(problem.devices)) if k not in (d, rep)]
            if (np.array_equal(compute[:, d], compute[:, rep])
                    and np.array_equal(links[:, d, others], links[:, rep, others])
                    and np.array_equal(links[:, others, d], links[:, others, rep])
                    and np.array_equal(links[:, d, rep], links[:, rep, d])):
                members.append(d)
                break
        else:
            classes.append([d])
    return classes


def state_count(problem: PartitionProblem) -> int:
    """Number of distinct device sets the exact search distinguishes: prod(class size + 1)."""
    return int(np.prod([len(c) + 1 for c in device_classes(problem)], dtype=object))


@dataclass
class _Layer:
    masks: np.ndarray    # device set of each state: counts per class in mixed radix
    classes: np.ndarray  # class of the last device of each state
    vals: np.ndarray     # (states, n + 1): best cost of a plan covering [0, q)


class _Search:
    """One DP run over device classes. mode "sum": least latency with every stage (unless comm_only)
    and transfer <= threshold; mode "max": least bottleneck."""

    def __init__(self, problem: PartitionProblem, mode: str, comm_only: bool, *, threshold: float = INF,
                 transfers: np.ndarray | None = None, beam: int | None = None) -> None:
        self.problem, self.mode, self.comm_only, self.beam = problem, mode, comm_only, beam
        n = problem.n
        table = problem.transfer_table if transfers is None else transfers
        if threshold < INF:
            table = np.where(table <= threshold, table, INF)
        self.members = device_classes(problem)
        if np.prod([len(m) + 1 for m in self.members], dtype=object) >= 2**63:
            raise ValueError("over 62 distinguishable devices: device sets no longer fit in 64 bits")
        reps = np.array([m[0] for m in self.members])
        others = np.array([m[-1] for m in self.members])
        self.size = np.array([len(m) for m in self.members], dtype=np.int64)
        self.radix = np.concatenate(([1], np.cumprod(self.size + 1)[:-1])).astype(np.int64)
        by_pair = table.transpose(1, 2, 0)                      # (from, to, position)
        self.transfers = by_pair[reps[:, None], reps[None, :]].copy()
        self.transfers[np.arange(len(reps)), np.arange(len(reps))] = np.where(
            (self.size > 1)[:, None], by_pair[reps, others], INF)  # between two members of one class
        self.from_source = by_pair[problem.source, reps]
        self.to_sink = by_pair[reps, problem.sink]
        self.prefix = np.ascontiguousarray(problem.compute_prefix.T[reps])  # (class, position)
        lo = problem.window_start[reps]
        if threshold < INF and not comm_only:
            lo = np.maximum(lo, self._first_start_within(threshold))
        self.lo = lo
        self.levels = max(1, int(np.ceil(np.log2(n + 1))) + 1)
        self.reach = 0

    def _first_start_within(self, threshold: float) -> np.ndarray:
        """(class, q): the first p with stage time P[q] - P[p] <= threshold, by bisection on the very
        differences the candidate values were taken from."""
        q = np.broadcast_to(np.arange(self.problem.n + 1), self.prefix.shape)
        a, z = np.zeros_like(q), q.copy()
        while (active := a < z).any():
            mid = (a + z) // 2
            ok = self.prefix - np.take_along_axis(self.prefix, mid, axis=1) <= threshold
            z, a = np.where(active & ok, mid, z), np.where(active & ~ok, mid + 1, a)
        return a

    def combine(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b if self.mode == "sum" else np.maximum(a, b)

    def run(self) -> tuple[float, list[Segment] | None, int]:
        """(best value, its segments or None if no plan, furthest position any partial plan reached)."""
        n = self.problem.n
        classes = np.arange(len(self.members))
        masks = self.radix.copy()
        h = np.full((len(classes), n + 1), INF)
        h[:, 0] = self.from_source[:, 0]
        layers: list[_Layer] = []
        best, best_at = INF, None
        while len(classes):
            f = self._advance(h, classes)
            f[f > best] = INF
            alive = np.isfinite(f).any(axis=1)
            masks, classes, f = masks[alive], classes[alive], f[alive]
            if self.beam is not None:
                masks, classes, f = self._prune(masks, classes, f)
            if not len(classes):
                break
            self.reach = max(self.reach, int(np.nonzero(np.isfinite(f).any(axis=0))[0].max()))
            layers.append(_Layer(masks, classes, f))
            total = self.combine(f[:, n], self.to_sink[classes, n])
            i = int(np.argmin(total))
            if total[i] < best:
                best, best_at = float(total[i]), (len(layers) - 1, i)
            used = (masks[:, None] // self.radix[None, :]) % (self.size + 1)[None, :]
            state, new = np.nonzero(used < self.size[None, :])
            if not len(state):
                break
            cand = self.combine(f[state], self.transfers[classes[state], new])
            new_masks = masks[state] + self.radix[new]
            order = np.lexsort((new_masks, new))
            new_masks, new = new_masks[order], new[order]
            first = np.ones(len(order), dtype=bool)
            first[1:] = (new_masks[1:] != new_masks[:-1]) | (new[1:] != new[:-1])
            starts = np.nonzero(first)[0]
            h = np.minimum.reduceat(cand[order], starts, axis=0)
            masks, classes = new_masks[starts], new[starts]
            if self.beam is not None:
                # a state outside the best few at every start p is outside them at every end q too
                masks, classes, h = self._prune(masks, classes, h)
        if best_at is None:
            return INF, None, self.reach
        return best, self._trace(layers, *best_at), self.reach

    def _advance(self, h: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Rows f[q]: best cost covering [0, q) with the last segment [p, q) on classes[row], given h[p]."""
        n = self.problem.n
        q = np.broadcast_to(np.arange(n + 1), h.shape)
        lo = self.lo[classes]
        valid = lo < q
        last = np.where(valid, q - 1, 0)
        lo = np.where(valid, lo, 0)
        prefix = self.prefix[classes]
        if self.mode == "sum":
            table = _SparseMin(h - prefix, self.levels)
            f = table.query(lo, last) + prefix
        elif self.comm_only:
            f = _SparseMin(h, self.levels).query(lo, last)
        else:
            table = _SparseMin(h, self.levels)
            a, z = lo.copy(), np.where(valid, q, lo)
            for _ in range(self.levels):
                active = a < z
                if not active.any():
                    break
                mid = np.where(active, (a + z) // 2, 0)
                tail = np.where(active, last, 0)
                pred = table.query(mid, tail) >= prefix - np.take_along_axis(prefix, mid, axis=1)
                z = np.where(active & pred, mid, z)
                a = np.where(active & ~pred, mid + 1, a)
            right = valid & (a <= last)
            left = valid & (a - 1 >= lo)
            at_a = table.query(np.where(right, a, 0), np.where(right, last, 0))
            before = np.where(left, a - 1, 0)
            at_before = prefix - np.take_along_axis(prefix, before, axis=1)
            f = np.minimum(np.where(right, at_a, INF), np.where(left, at_before, INF))
        return np.where(valid, f, INF)

    def _prune(self, masks: np.ndarray, classes: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, ...]:
        """Keep, for each (class, position), the beam_width best rows of ``f``."""
        assert self.beam is not None
        keep = np.zeros(len(classes), dtype=bool)
        for c in np.unique(classes):
            rows = np.nonzero(classes == c)[0]
            if len(rows) <= self.beam:
                keep[rows] = True
                continue
            sub = f[rows]
            top = np.argsort(sub, axis=0, kind="stable")[: self.beam]
            finite = np.isfinite(np.take_along_axis(sub, top, axis=0))
            keep[rows[top[finite]]] = True
        return masks[keep], classes[keep], f[keep]

    def _trace(self, layers: list[_Layer], k: int, i: int) -> list[Segment]:
        """Walk back from state i of layer k at position n, re-deriving each choice from stored rows,
        then give each segment a distinct member of its class."""
        steps = []
        q = self.problem.n
        while True:
            layer = layers[k]
            c, mask = int(layer.classes[i]), int(layer.masks[i])
            if k == 0:
                steps.append((0, q, c))
                break
            starts = np.arange(self.lo[c, q], q)
            prev = layers[k - 1]
            rows = np.nonzero(prev.masks == mask - self.radix[c])[0]
            cand = self.combine(prev.vals[rows][:, starts], self.transfers[prev.classes[rows], c][:, starts])
            if self.mode == "sum":
                score = cand - self.prefix[c, starts]
            elif self.comm_only:
                score = cand
            else:
                score = np.maximum(cand, self.prefix[c, q] - self.prefix[c, starts])
            r, j = np.unravel_index(int(np.argmin(score)), score.shape)
            p = int(starts[j])
            steps.append((p, q, c))
            i, k, q = int(rows[r]), k - 1, p
        unused = [list(m) for m in self.members]
        return [Segment(p, q, unused[c].pop(0)) for p, q, c in reversed(steps)]


class _SparseMin:
    """Range minimum over each row of a (rows, m) array: O(m log m) to build, O(1) per query."""

    def __init__(self, a: np.ndarray, levels: int) -> None:
        tables = [a]
        width = 1
        while 2 * width <= a.shape[1] and len(tables) < levels:
            prev = tables[-1]
            nxt = prev.copy()
            nxt[:, : prev.shape[1] - width] = np.minimum(prev[:, :-width], prev[:, width:])
            tables.append(nxt)
            width *= 2
        self.flat = np.concatenate([t.ravel() for t in tables])
        self.size = a.size
        self.row_start = (np.arange(a.shape[0]) * a.shape[1])[:, None]
        self.log2 = np.concatenate(([0], np.floor(np.log2(np.arange(1, a.shape[1] + 1))))).astype(np.intp)

    def query(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """min(a[row, lo..hi]) elementwise for (rows, k) index arrays with lo <= hi."""
        level = self.log2[hi - lo + 1]
        base = level * self.size + self.row_start
        return np.minimum(self.flat[base + lo], self.flat[base + hi - np.left_shift(1, level) + 1])


def _diagnose(problem: PartitionProblem, comm_only: bool, beam: int | None) -> str:
    """Why no plan exists, most specific cause first."""
    names, devs, n = problem.items, problem.devices, problem.n
    runnable = np.isfinite(problem.compute_ms)
    orphans = [names[i] for i in range(n) if not runnable[i].any()]
    if orphans:
        return f"no device can run {_listed(orphans)} (compute_ms is inf on every device)"
    too_big = []
    for i in range(n):
        need = problem.segment_memory(i, i + 1)
        able = np.nonzero(runnable[i])[0]
        best = able[np.argmax(problem.memory_bytes[able])]
        if need > problem.memory_bytes[best]:
            too_big.append(f"{names[i]} alone needs {need} bytes but the largest device able to run it, "
                           f"{devs[best]}, has {problem.memory_bytes[best]:.0f} "
                           f"({need - problem.memory_bytes[best]:.0f} missing)")
    if too_big:
        return "; ".join(too_big[:3]) + (f"; and {len(too_big) - 3} more items" if len(too_big) > 3 else "")
    table, lo = problem.transfer_table, problem.window_start
    first = [d for d in range(len(devs)) if lo[d, 1] == 0 and np.isfinite(table[0, problem.source, d])]
    if not first:
        return (f"no device that can run the first item {names[0]} is reachable from the source "
                f"{devs[problem.source]}: add a link from it")
    last = [d for d in range(len(devs)) if lo[d, n] < n and np.isfinite(table[n, d, problem.sink])]
    if not last:
        return (f"the sink {devs[problem.sink]} is unreachable: no device that can run the last item "
                f"{names[-1]} has a link to it")
    relaxed = np.where(np.isinf(table), 0.0, table)
    search = _Search(problem, "max", comm_only, transfers=relaxed, beam=beam)
    _, segments, reach = search.run()
    note = (f" (searched with a beam of width {beam} over {len(devs)} devices; raise max_exact_devices "
            f"for an exact search)") if beam is not None else ""
    if segments is None:
        weights, capacity = int(problem.weight_bytes.sum()), float(problem.memory_bytes.sum())
        where = f"items up to {names[reach - 1]} ({reach} of {n})" if reach else "no item"
        msg = f"the devices cannot hold the model: the best plan covers {where}"
        if weights > capacity:
            msg += (f"; the weights alone need {weights} bytes but all devices together have "
                    f"{capacity:.0f} ({weights - capacity:.0f} missing)")
        else:
            msg += "; add devices or memory, or split the items that follow into smaller groups"
        return msg + note
    plan = evaluate(problem, segments, comm_only)
    missing = [v for v in plan.violations if v.startswith("no link")]
    return ("no chain of linked devices carries the model from the source to the sink; with every link "
            f"present a plan exists, needing: {'; '.join(missing)}" + note)


def _listed(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
