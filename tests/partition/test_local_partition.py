"""The local split of a board's segment over its units equals the brute-force optimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgec.passes.partition.local_partition import Run, split_segment


def brute_force(ms: np.ndarray, switch: np.ndarray) -> float:
    m, nu = ms.shape
    best = np.inf
    for units in itertools.product(range(nu), repeat=m):
        total = sum(ms[i, u] for i, u in enumerate(units))
        total += sum(switch[i, units[i - 1], units[i]] for i in range(1, m) if units[i] != units[i - 1])
        best = min(best, total)
    return best


@st.composite
def segments(draw):
    m = draw(st.integers(1, 6))
    nu = draw(st.integers(1, 3))
    ms = np.array(draw(st.lists(st.lists(st.floats(0.0, 10.0) | st.just(np.inf), min_size=nu, max_size=nu),
                                min_size=m, max_size=m)))
    for i in range(m):  # every item runs somewhere
        if np.isinf(ms[i]).all():
            ms[i, draw(st.integers(0, nu - 1))] = draw(st.floats(0.0, 10.0))
    switch = np.array(draw(st.lists(st.floats(0.0, 3.0), min_size=m * nu * nu, max_size=m * nu * nu)))
    return ms, switch.reshape(m, nu, nu)


@settings(max_examples=300, deadline=None)
@given(segments())
def test_split_equals_brute_force(case):
    ms, switch = case
    total, runs = split_segment(ms, switch)
    assert total == pytest.approx(brute_force(ms, switch), abs=1e-9)
    # the runs cover the segment, each on a unit that can run its items, and cost what was reported
    assert runs[0].start == 0 and runs[-1].end == len(ms)
    assert all(a.end == b.start and a.unit != b.unit for a, b in zip(runs, runs[1:]))
    assert all(np.isfinite(ms[r.start:r.end, r.unit]).all() for r in runs)
    cost = sum(ms[r.start:r.end, r.unit].sum() for r in runs)
    cost += sum(switch[b.start, a.unit, b.unit] for a, b in zip(runs, runs[1:]))
    assert cost == pytest.approx(total, abs=1e-9)


def test_a_unit_comes_back_after_an_item_it_cannot_run():
    inf = np.inf
    gpu_cpu = np.array([[1.0, 5.0], [1.0, 5.0], [inf, 2.0], [1.0, 5.0]])
    total, runs = split_segment(gpu_cpu, np.full((4, 2, 2), 0.5))
    assert runs == [Run(0, 2, 0), Run(2, 3, 1), Run(3, 4, 0)]
    assert total == pytest.approx(1 + 1 + 2 + 1 + 0.5 + 0.5)


def test_ties_go_to_fewer_runs():
    total, runs = split_segment(np.ones((5, 2)), np.zeros((5, 2, 2)))
    assert total == 5 and len(runs) == 1


def test_an_item_no_unit_runs_is_refused():
    with pytest.raises(ValueError, match="item 1"):
        split_segment(np.array([[1.0], [np.inf]]), np.zeros((2, 1, 1)))
