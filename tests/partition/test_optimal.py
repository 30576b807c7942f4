"""The partition problem model and the optimal partitioner, checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgec.errors import EdgecError
from edgec.passes.partition.optimal import Infeasible, device_classes, solve, state_count
from edgec.passes.partition.problem import PartitionProblem, Plan, Segment, Tensor, evaluate

RTOL = 1e-9


def random_problem(seed: int, n: int, nd: int, *, integer: bool, alike: bool = False) -> PartitionProblem:
    """A small random problem: a random DAG of tensors (graph inputs read late, outputs made early),
    memories that rule out some plans, links some of which are missing. ``integer``: whole-number
    costs, so sums are exact and ties frequent. ``alike``: devices copy one of two types and share
    one switch, so some are interchangeable."""
    rng = np.random.default_rng(seed)
    tensors = []
    for i in range(n):
        readers = set(int(c) for c in rng.integers(i + 1, n + 1, size=rng.integers(1, 3)))
        tensors.append(Tensor(f"t{i}", int(rng.integers(0, 50)), i, tuple(sorted(readers))))
    for j in range(int(rng.integers(0, 3))):
        readers = set(int(c) for c in rng.integers(0, n + 1, size=rng.integers(1, 3)))
        tensors.append(Tensor(f"in{j}", int(rng.integers(1, 50)), -1, tuple(sorted(readers))))
    compute = rng.integers(0, 10, size=(n, nd)).astype(float) if integer else rng.random((n, nd)) * 10
    compute[rng.random((n, nd)) < 0.1] = np.inf
    memory = rng.integers(50, 400, size=nd).astype(float)
    bandwidth = np.where(rng.random((nd, nd)) < 0.2, 0.0, 1000.0 if integer else rng.random((nd, nd)) * 1000 + 10)
    latency = rng.integers(0, 3, size=(nd, nd)).astype(float) if integer else rng.random((nd, nd))
    source, sink = int(rng.integers(nd)), int(rng.integers(nd))
    if alike:
        kind = rng.integers(0, 2, size=nd)
        compute, memory = compute[:, kind], memory[kind]
        bandwidth = np.full((nd, nd), 1000.0 if integer else 500.0)
        if rng.random() < 0.3:  # the source has no link to one kind
            bandwidth[source, kind == kind[0]] = bandwidth[kind == kind[0], source] = 0.0
        latency = np.ones((nd, nd))
    return PartitionProblem(tuple(f"g{i}" for i in range(n)), tuple(f"d{k}" for k in range(nd)), compute,
                            rng.integers(0, 100, size=n), rng.integers(0, 50, size=n), memory, bandwidth,
                            latency, tuple(tensors), source, sink)


def all_feasible_plans(problem: PartitionProblem) -> list[Plan]:
    """Every contiguous plan over every ordered subset of distinct devices that is feasible."""
    n, nd = problem.n, len(problem.devices)
    plans = []
    for k in range(1, min(n, nd) + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = (0, *cuts, n)
            for devices in itertools.permutations(range(nd), k):
                plan = evaluate(problem, [(bounds[i], bounds[i + 1], devices[i]) for i in range(k)])
                if plan.feasible:
                    plans.append(plan)
    return plans


def best_key(plans: list[Plan], objective: str, comm_only: bool) -> tuple[float, float]:
    """The lexicographic optimum, ties on the first value taken within RTOL."""
    def key(p: Plan) -> tuple[float, float]:
        bottleneck = max(p.transfer_ms) if comm_only else p.bottleneck_ms
        return (bottleneck, p.latency_ms) if objective == "throughput" else (p.latency_ms, bottleneck)

    keys = [key(p) for p in plans]
    first = min(k[0] for k in keys)
    return first, min(k[1] for k in keys if k[0] <= first + RTOL * abs(first))


def assert_same_key(got: tuple[float, float], want: tuple[float, float]) -> None:
    assert got == pytest.approx(want, rel=RTOL, abs=1e-12)


problem_args = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 7), st.integers(1, 4), st.booleans())
CHECKS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the problem model -----------------------------------------------------------------------

def chain_problem(**overrides) -> PartitionProblem:
    """Three items on two devices; g0 -> g1 -> g2, input read by g0 and g2, g1's output also a graph output."""
    args = dict(
        items=("g0", "g1", "g2"), devices=("a", "b"),
        compute_ms=np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]),
        weight_bytes=np.array([10, 20, 30]), workspace_bytes=np.array([5, 5, 5]),
        memory_bytes=np.array([100.0, 100.0]),
        bandwidth_Bps=np.array([[0.0, 1000.0], [1000.0, 0.0]]), latency_ms=np.zeros((2, 2)),
        tensors=(Tensor("x", 7, -1, (0, 2)), Tensor("y0", 11, 0, (1,)), Tensor("y1", 13, 1, (2, 3)),
                 Tensor("y2", 17, 2, (3,))),
        source=0, sink=1)
    args.update(overrides)
    return PartitionProblem(**args)


def test_cut_bytes_count_inputs_read_late_and_outputs_made_early():
    p = chain_problem()
    assert [p.cut_bytes(q) for q in range(4)] == [7, 7 + 11, 7 + 13, 13 + 17]


def test_segment_memory_counts_weights_and_peak_of_workspace_plus_pass_through():
    p = chain_problem()
    # g1 runs while x passes through it untouched
    assert p.segment_memory(1, 2) == 20 + 5 + 7
    assert p.segment_memory(0, 3) == 60 + 5 + 7
    for s in range(3):
        for e in range(s + 1, 3):
            assert p.segment_memory(s, e) <= p.segment_memory(s, e + 1)
            if s:
                assert p.segment_memory(s, e) <= p.segment_memory(s - 1, e)


def test_transfer_ms():
    p = chain_problem(latency_ms=np.full((2, 2), 0.5))
    assert p.transfer_ms(0, 0, 1) == 0.0
    assert p.transfer_ms(100, 1, 1) == 0.0
    assert p.transfer_ms(100, 0, 1) == 0.5 + 100.0
    assert p.transfer_ms(100, 0, 0) == 0.0
    q = chain_problem(bandwidth_Bps=np.zeros((2, 2)))
    assert q.transfer_ms(1, 0, 1) == float("inf")


@pytest.mark.parametrize("field, value, message", [
    ("compute_ms", np.ones((2, 2)), "compute_ms has shape"),
    ("weight_bytes", np.array([1, 2]), "weight_bytes has shape"),
    ("memory_bytes", np.array([1.0, -1.0]), "non-negative"),
    ("latency_ms", np.full((2, 2), np.inf), "must be finite"),
    ("weight_bytes", np.array([1.5, 2, 3]), "whole bytes"),
    ("source", 2, "source 2 is not a device index"),
    ("tensors", (Tensor("t", 1, 1, (1,)),), "consumer 1 must lie after"),
    ("tensors", (Tensor("t", 1, 0, (4,)),), "at most 3"),
    ("items", ("g0", "g0", "g1"), "unique"),
])
def test_inconsistent_problems_are_rejected(field, value, message):
    with pytest.raises(ValueError, match=message):
        chain_problem(**{field: value})


def test_evaluate_rejects_malformed_plans():
    p = chain_problem()
    for segments in ([(0, 2, 0)], [(0, 1, 0), (2, 3, 1)], [(0, 2, 0), (2, 3, 0)], [(0, 0, 0), (0, 3, 1)],
                     [(0, 3, 5)]):
        with pytest.raises(ValueError):
            evaluate(p, segments)


def test_evaluate_costs_every_hand_off():
    p = chain_problem()
    plan = evaluate(p, [Segment(0, 1, 1), Segment(1, 3, 0)])
    assert plan.stage_ms == (2.0, 2.0)
    # source a -> b carries x; b -> a carries x and y0; a -> sink b carries y1 and y2
    assert plan.transfer_ms == (7.0, 18.0, 30.0)
    assert plan.bottleneck_ms == 30.0 and plan.latency_ms == 59.0
    assert evaluate(p, plan.segments, comm_only=True).bottleneck_ms == 30.0
    assert plan.feasible


def test_evaluate_reports_why_a_plan_is_infeasible():
    p = chain_problem(memory_bytes=np.array([40.0, 100.0]),
                      compute_ms=np.array([[1.0, np.inf], [1.0, 2.0], [1.0, 2.0]]))
    plan = evaluate(p, [(0, 1, 1), (1, 3, 0)])
    assert not plan.feasible
    assert any("b cannot run g0" in v for v in plan.violations)
    assert any("62 bytes on a" in v and "22 missing" in v for v in plan.violations)
    assert plan.stage_ms[0] == float("inf")


# --- exact search against brute force ------------------------------------------------------

def check_against_brute_force(problem: PartitionProblem) -> None:
    plans = all_feasible_plans(problem)
    for objective in ("throughput", "latency"):
        for comm_only in (False, True):
            if not plans:
                with pytest.raises(Infeasible):
                    solve(problem, objective, comm_only=comm_only)
                continue
            plan = solve(problem, objective, comm_only=comm_only)
            assert plan.feasible and plan.comm_only == comm_only
            assert_same_key(plan.key(objective), best_key(plans, objective, comm_only))


@CHECKS
@given(problem_args)
def test_solve_matches_brute_force(args):
    seed, n, nd, integer = args
    check_against_brute_force(random_problem(seed, n, nd, integer=integer))


@CHECKS
@given(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(3, 5), st.booleans()))
def test_solve_matches_brute_force_with_interchangeable_devices(args):
    seed, n, nd, integer = args
    problem = random_problem(seed, n, nd, integer=integer, alike=True)
    check_against_brute_force(problem)


@settings(max_examples=60, deadline=None)
@given(problem_args)
def test_beam_search_plans_are_feasible_and_never_beat_the_optimum(args):
    seed, n, nd, integer = args
    problem = random_problem(seed, n, nd, integer=integer)
    for objective in ("throughput", "latency"):
        try:
            exact = solve(problem, objective)
        except Infeasible:
            continue
        try:
            beam = solve(problem, objective, max_exact_devices=0, beam_width=1)
        except Infeasible:
            continue
        assert beam.feasible
        assert beam.key(objective)[0] >= exact.key(objective)[0] * (1 - RTOL)


# --- hand-built cases ----------------------------------------------------------------------

def two_boards(memory: tuple[float, float], compute: list[list[float]], cut: list[int], **overrides):
    n = len(compute)
    tensors = tuple(Tensor(f"t{i}", cut[i], i, (i + 1,)) for i in range(n))
    args = dict(items=tuple(f"g{i}" for i in range(n)), devices=("a", "b"),
                compute_ms=np.array(compute), weight_bytes=np.full(n, 10), workspace_bytes=np.zeros(n),
                memory_bytes=np.array(memory), bandwidth_Bps=np.full((2, 2), 1000.0),
                latency_ms=np.zeros((2, 2)), tensors=tensors, source=0, sink=0)
    args.update(overrides)
    return PartitionProblem(**args)


def test_memory_forces_a_split_at_the_cheapest_cut():
    # 4 items of 10 bytes each, each board holds 30: the split must fall at 1, 2 or 3; cut 2 is tiny
    p = two_boards((30.0, 30.0), [[1, 1]] * 4, [500, 5, 400, 0])
    for objective in ("throughput", "latency"):
        plan = solve(p, objective)
        assert [(s.start, s.end) for s in plan.segments] == [(0, 2), (2, 4)]
        assert plan.transfer_ms == (0.0, 5.0, 0.0)


def test_throughput_pipelines_while_latency_stays_on_the_fast_board():
    p = two_boards((100.0, 100.0), [[1, 2.5]] * 4, [2, 1, 1, 0])
    latency = solve(p, "latency")
    assert [(s.start, s.end, s.device) for s in latency.segments] == [(0, 4, 0)]
    throughput = solve(p, "throughput")
    assert throughput.bottleneck_ms < latency.bottleneck_ms
    assert [(s.start, s.end, s.device) for s in throughput.segments] == [(0, 3, 0), (3, 4, 1)]


def test_missing_link_forces_the_device_order():
    bandwidth = np.full((3, 3), 1000.0)
    bandwidth[0, 2] = 0.0  # a cannot send to c; c -> b works
    p = PartitionProblem(("g0", "g1", "g2"), ("a", "b", "c"), np.ones((3, 3)), np.full(3, 10), np.zeros(3),
                         np.full(3, 10.0), bandwidth, np.zeros((3, 3)),
                         tuple(Tensor(f"t{i}", 1, i - 1, (i,)) for i in range(4)), 0, 1)
    assert solve(p, "latency").devices == (0, 1, 2)
    assert "no link a -> c" in evaluate(p, [(0, 1, 0), (1, 2, 2), (2, 3, 1)]).violations[0]


def test_ties_on_the_bottleneck_go_to_the_lower_latency():
    # both boards equally fast; moving g1 to b costs nothing at the bottleneck but adds a transfer
    p = two_boards((100.0, 100.0), [[2, 2], [1, 1]], [3, 0])
    plan = solve(p, "throughput")
    assert plan.bottleneck_ms == 3.0 and plan.latency_ms == 3.0 and len(plan.segments) == 1


def test_ties_on_latency_go_to_the_lower_bottleneck():
    # two equal boards and nothing crosses position 1: splitting there is free and halves the bottleneck
    p = two_boards((100.0, 100.0), [[2, 2], [2, 2]], [0, 0])
    plan = solve(p, "latency")
    assert plan.latency_ms == 4.0
    assert plan.bottleneck_ms == 2.0 and len(plan.segments) == 2


def test_comm_only_bottleneck_ignores_compute():
    p = two_boards((10.0, 10.0), [[100, 100], [1, 1]], [2, 0])
    plan = solve(p, "throughput", comm_only=True)
    assert plan.bottleneck_ms == 2.0
    assert solve(p, "throughput").bottleneck_ms == 100.0


def test_identical_boards_on_one_switch_form_one_class():
    p = random_problem(7, 6, 6, integer=True, alike=True)
    classes = device_classes(p)
    assert sorted(d for c in classes for d in c) == list(range(6))
    assert [p.source] in classes and [p.sink] in classes
    assert state_count(p) == int(np.prod([len(c) + 1 for c in classes]))
    assert state_count(p) < 2**6


def test_large_problem_exact_and_beam_agree_on_feasibility():
    rng = np.random.default_rng(0)
    n, nd = 200, 8
    tensors = [Tensor("x", 600_000, -1, (0,))] + [
        Tensor(f"t{i}", int(rng.integers(10_000, 3_000_000)), i, (i + 1,) if i + 1 < n else (n,)) for i in range(n)]
    weights = rng.integers(0, 5_000_000, size=n)
    p = PartitionProblem(tuple(f"g{i}" for i in range(n)), tuple(f"d{k}" for k in range(nd)),
                         rng.random((n, nd)) * 5, weights, rng.integers(0, 4_000_000, size=n),
                         np.full(nd, weights.sum() * 0.3), rng.uniform(5e6, 1.2e8, size=(nd, nd)),
                         np.full((nd, nd), 0.2), tuple(tensors), 0, 0)
    exact = solve(p, "throughput")
    beam = solve(p, "throughput", max_exact_devices=4)
    assert exact.feasible and beam.feasible
    assert exact.bottleneck_ms <= beam.bottleneck_ms


# --- infeasibility is explained ------------------------------------------------------------

def test_infeasible_names_an_item_no_device_can_run():
    p = two_boards((100.0, 100.0), [[1, 1], [np.inf, np.inf]], [1, 0])
    with pytest.raises(Infeasible, match="no device can run g1"):
        solve(p)


def test_infeasible_says_how_many_bytes_an_item_misses():
    p = two_boards((100.0, 8.0), [[1, np.inf], [1, 1]], [1, 0], memory_bytes=np.array([5.0, 8.0]))
    with pytest.raises(Infeasible, match=r"g0 alone needs 10 bytes .* a, has 5 \(5 missing\)"):
        solve(p)


def test_infeasible_says_when_all_devices_together_lack_memory():
    p = two_boards((20.0, 20.0), [[1, 1]] * 5, [1] * 5)
    with pytest.raises(Infeasible, match=r"weights alone need 50 bytes .* have 40 \(10 missing\)") as err:
        solve(p)
    assert isinstance(err.value, EdgecError)


def test_infeasible_says_the_sink_is_unreachable():
    p = two_boards((100.0, 100.0), [[1, np.inf]], [5], bandwidth_Bps=np.zeros((2, 2)), sink=1)
    with pytest.raises(Infeasible, match="sink b is unreachable"):
        solve(p)


def test_infeasible_says_the_source_reaches_no_device():
    p = two_boards((100.0, 100.0), [[np.inf, 1]], [0], bandwidth_Bps=np.zeros((2, 2)),
                   tensors=(Tensor("x", 4, -1, (0,)),))
    with pytest.raises(Infeasible, match="reachable from the source a"):
        solve(p)


def test_infeasible_lists_the_missing_links():
    # the model needs both boards but no link joins them
    p = two_boards((20.0, 20.0), [[1, 1]] * 3, [1, 1, 0], bandwidth_Bps=np.zeros((2, 2)))
    with pytest.raises(Infeasible, match="no link"):
        solve(p)
