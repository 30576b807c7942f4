"""Baseline partitioners, to measure the optimal one against.

All share one signature, ``(problem, objective, seed=0, *, comm_only=False) -> Plan``, return a
feasible plan or raise :class:`Infeasible`, and are listed in ``STRATEGIES``:

* ``random``: Parthasarathy & Krishnamachari's random baseline (ITNAC 2022): a random device order
  and, walking it, a random memory-feasible cut for each device. One draw per call (``seed``);
  a draw that leaves items over or needs a missing link is redrawn, at most ``attempts`` times.
* ``greedy``: a joint partition and placement after their greedy baseline: from the source,
  repeatedly take the unused device with the highest bandwidth from the current one (the current
  device itself counts as infinitely close) that can run the next item, and give it the longest
  prefix that fits its memory.
* ``even``: equal compute per device (each item's median time over the devices that can run it),
  on the first k devices in cluster order; the best k is kept.
* ``single``: the best single device that holds the whole model.
* ``two-way``: one split between two devices, Neurosurgeon style: the best split point and ordered
  device pair, single-device plans included as the degenerate splits.

``objective`` picks among the candidates a baseline considers (``even``, ``single``, ``two-way``);
``random`` and ``greedy`` build one plan and ignore it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgec.passes.partition.optimal import Infeasible
from edgec.passes.partition.problem import Objective, PartitionProblem, Plan, check_objective, evaluate


def random_partition(problem: PartitionProblem, objective: Objective = "throughput", seed: int = 0, *,
                     comm_only: bool = False, attempts: int = 1000) -> Plan:
    check_objective(objective)
    rng = np.random.default_rng(seed)
    n = problem.n
    for _ in range(attempts):
        segments, start = [], 0
        for d in rng.permutation(len(problem.devices)):
            end = _longest(problem, int(d), start)
            if end > start:
                cut = int(rng.integers(start + 1, end + 1))
                segments.append((start, cut, int(d)))
                start = cut
            if start == n:
                plan = evaluate(problem, segments, comm_only)
                if plan.feasible:
                    return plan
                break
    raise Infeasible(f"random: no feasible plan in {attempts} draws")


def greedy_partition(problem: PartitionProblem, objective: Objective = "throughput", seed: int = 0, *,
                     comm_only: bool = False) -> Plan:
    check_objective(objective)
    segments, start, current, unused = [], 0, problem.source, set(range(len(problem.devices)))
    while start < problem.n:
        linked = [d for d in sorted(unused) if _longest(problem, d, start) > start
                  and (d == current or problem.cut_bytes(start) == 0 or problem.bandwidth_Bps[current, d] > 0)]
        if not linked:
            raise Infeasible(f"greedy: no unused device linked to {problem.devices[current]} can run "
                             f"{problem.items[start]}")
        d = max(linked, key=lambda k: np.inf if k == current else problem.bandwidth_Bps[current, k])
        end = _longest(problem, d, start)
        segments.append((start, end, d))
        unused.discard(d)
        start, current = end, d
    return _feasible("greedy", evaluate(problem, segments, comm_only))


def even_partition(problem: PartitionProblem, objective: Objective = "throughput", seed: int = 0, *,
                   comm_only: bool = False) -> Plan:
    check_objective(objective)
    work = np.array([np.median(row[np.isfinite(row)]) if np.isfinite(row).any() else 0.0
                     for row in problem.compute_ms])
    if work.sum() == 0:
        work = np.ones(problem.n)
    share = np.cumsum(work) / work.sum()
    plans = []
    for k in range(1, min(len(problem.devices), problem.n) + 1):
        cuts = [0] + [int(np.searchsorted(share, j / k - 1e-12) + 1) for j in range(1, k)] + [problem.n]
        for j in range(1, k + 1):  # strictly increasing: every device gets at least one item
            cuts[j] = min(max(cuts[j], cuts[j - 1] + 1), problem.n - (k - j))
        plans.append(evaluate(problem, [(cuts[j], cuts[j + 1], j) for j in range(k)], comm_only))
    return _best("even", plans, objective)


def single_device(problem: PartitionProblem, objective: Objective = "throughput", seed: int = 0, *,
                  comm_only: bool = False) -> Plan:
    check_objective(objective)
    plans = [evaluate(problem, [(0, problem.n, d)], comm_only) for d in range(len(problem.devices))]
    return _best("single", plans, objective)


def two_way_split(problem: PartitionProblem, objective: Objective = "throughput", seed: int = 0, *,
                  comm_only: bool = False) -> Plan:
    check_objective(objective)
    n, nd = problem.n, len(problem.devices)
    prefix, lo, table = problem.compute_prefix, problem.window_start, problem.transfer_table
    p = np.arange(1, n)[:, None, None]  # split point; axes: (p, first device a, second device b)
    a, b = np.arange(nd)[None, :, None], np.arange(nd)[None, None, :]
    first = np.where(lo[a, p] == 0, prefix[p, a] - prefix[0, a], np.inf)
    second = np.where(lo[b, n] <= p, prefix[n, b] - prefix[p, b], np.inf)
    t0, t1, t2 = table[0, problem.source][a], table[p, a, b], table[n, b, problem.sink]
    latency = (t0 + (first + t1)) + (second + t2)  # the order evaluate() adds them in
    comm = np.maximum(np.maximum(t0, t1), t2)
    bottleneck = comm if comm_only else np.maximum(comm, np.maximum(first, second))
    usable = np.isfinite(latency) & (a != b)
    keys = (bottleneck, latency) if objective == "throughput" else (latency, bottleneck)
    plans = [single_device(problem, objective, comm_only=comm_only)] if _any_single(problem) else []
    if usable.any():
        primary, secondary = (np.where(usable, k, np.inf).ravel() for k in keys)
        i = np.lexsort((secondary, primary))[0]
        split, da, db = np.unravel_index(i, usable.shape)
        plans.append(evaluate(problem, [(0, split + 1, da), (split + 1, n, db)], comm_only))
    return _best("two-way", plans, objective)


STRATEGIES: dict[str, Callable[..., Plan]] = {
    "random": random_partition,
    "greedy": greedy_partition,
    "even": even_partition,
    "single": single_device,
    "two-way": two_way_split,
}


def _longest(problem: PartitionProblem, device: int, start: int) -> int:
    """Furthest end e with [start, e) fitting ``device``'s memory and runnable there; start if none."""
    fits = np.nonzero(problem.window_start[device, start + 1:] <= start)[0]
    return start + 1 + int(fits[-1]) if len(fits) else start


def _any_single(problem: PartitionProblem) -> bool:
    return bool((problem.window_start[:, problem.n] == 0).any())


def _best(name: str, plans: list[Plan], objective: Objective) -> Plan:
    feasible = [p for p in plans if p.feasible]
    if not feasible:
        raise Infeasible(f"{name}: no feasible plan" + (f" ({plans[0].violations[0]})" if plans else ""))
    return min(feasible, key=lambda p: p.key(objective))


def _feasible(name: str, plan: Plan) -> Plan:
    if not plan.feasible:
        raise Infeasible(f"{name}: {'; '.join(plan.violations)}")
    return plan
