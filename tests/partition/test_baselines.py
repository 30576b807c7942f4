"""Baseline partitioners: feasible or Infeasible, never better than the optimum, exact within their class.

Random problems and the brute-force enumeration come from test_optimal.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_optimal import RTOL, all_feasible_plans, assert_same_key, best_key, random_problem

from edgec.passes.partition.baselines import (STRATEGIES, even_partition, greedy_partition, random_partition,
                                              single_device, two_way_split)
from edgec.passes.partition.optimal import Infeasible, solve
from edgec.passes.partition.problem import PartitionProblem, Tensor


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 7), st.integers(1, 4), st.booleans()))
def test_baselines_are_feasible_and_never_beat_the_optimum(args):
    seed, n, nd, integer = args
    problem = random_problem(seed, n, nd, integer=integer)
    plans = all_feasible_plans(problem)
    for objective in ("throughput", "latency"):
        for comm_only in (False, True):
            for name, strategy in STRATEGIES.items():
                try:
                    plan = strategy(problem, objective, seed, comm_only=comm_only)
                except Infeasible:
                    continue
                assert plan.feasible, name
                assert plans, f"{name} found a plan where none exists"
                optimum = best_key(plans, objective, comm_only)
                assert plan.key(objective)[0] >= optimum[0] * (1 - RTOL) - 1e-12, name
                if name in ("single", "two-way"):
                    limit = 1 if name == "single" else 2
                    own = [p for p in plans if len(p.segments) <= limit]
                    assert_same_key(plan.key(objective), best_key(own, objective, comm_only))
            if not plans:
                with pytest.raises(Infeasible):
                    solve(problem, objective, comm_only=comm_only)


def line(memory: list[float], bandwidth: np.ndarray, n: int = 4, source: int = 0) -> PartitionProblem:
    """n items of 10 weight bytes in a chain with 8-byte activations, on len(memory) devices."""
    nd = len(memory)
    tensors = tuple(Tensor(f"t{i}", 8, i - 1, (i,)) for i in range(n + 1))
    return PartitionProblem(tuple(f"g{i}" for i in range(n)), tuple(f"d{k}" for k in range(nd)),
                            np.ones((n, nd)), np.full(n, 10), np.zeros(n), np.array(memory), bandwidth,
                            np.zeros((nd, nd)), tensors, source, source)


def test_greedy_fills_each_device_and_follows_the_strongest_link():
    bandwidth = np.array([[0, 100, 800, 400], [100, 0, 100, 100], [800, 100, 0, 300], [400, 100, 300, 0.0]])
    plan = greedy_partition(line([20.0, 40.0, 20.0, 40.0], bandwidth, n=6))
    # source d0 takes 2 items, then its strongest link d2 takes 2, then d2's strongest unused d3 the rest
    assert [(s.start, s.end, s.device) for s in plan.segments] == [(0, 2, 0), (2, 4, 2), (4, 6, 3)]


def test_greedy_skips_devices_that_cannot_take_the_next_item():
    bandwidth = np.array([[0, 800, 100], [800, 0, 100], [100, 100, 0.0]])
    plan = greedy_partition(line([20.0, 5.0, 20.0], bandwidth))
    assert plan.devices == (0, 2)


def test_random_is_reproducible_and_memory_feasible():
    problem = line([20.0, 20.0, 20.0, 20.0], np.full((4, 4), 100.0), n=6)
    a, b = random_partition(problem, seed=3), random_partition(problem, seed=3)
    assert a.segments == b.segments and a.feasible
    assert len({random_partition(problem, seed=s).segments for s in range(20)}) > 1


def test_random_gives_up_when_no_draw_is_feasible():
    problem = line([20.0, 20.0], np.zeros((2, 2)))
    with pytest.raises(Infeasible, match="random: no feasible plan in 5 draws"):
        random_partition(problem, attempts=5)


def test_even_splits_compute_equally_in_cluster_order():
    problem = line([100.0, 100.0], np.full((2, 2), 1e6))
    plan = even_partition(problem, "throughput")
    assert [(s.start, s.end, s.device) for s in plan.segments] == [(0, 2, 0), (2, 4, 1)]
    assert even_partition(problem, "latency").segments[0].end == 4


def test_single_and_two_way():
    bandwidth = np.full((3, 3), 1000.0)
    problem = line([100.0, 30.0, 20.0], bandwidth)
    assert single_device(problem).devices == (0,)
    with pytest.raises(Infeasible, match="single: no feasible plan"):
        single_device(line([30.0, 30.0], bandwidth[:2, :2]))
    plan = two_way_split(line([30.0, 30.0], bandwidth[:2, :2]), "throughput")
    assert [(s.start, s.end) for s in plan.segments] in ([(0, 2), (2, 4)], [(0, 1), (1, 4)], [(0, 3), (3, 4)])
    assert len(plan.segments) == 2
