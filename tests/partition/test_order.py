"""Item order: always a topological order, deterministic, and cheap to cut in branchy graphs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgec.passes.partition.order import order_items


@st.composite
def dags(draw):
    """A random DAG: edges go forward in a hidden order, names are listed shuffled."""
    n = draw(st.integers(1, 25))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=3 * n, unique=True)) if pairs else []
    sizes = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n))
    shuffle = draw(st.permutations(range(n)))
    names = [f"n{i}" for i in range(n)]
    edges = [(names[i], names[j], sizes[i]) for i, j in chosen]
    return [names[k] for k in shuffle], edges


def live_bytes(order: list[str], edges: list[tuple[str, str, int]]) -> list[int]:
    """Bytes crossing each position of ``order`` (outputs produced before it, read after)."""
    pos = {name: i for i, name in enumerate(order)}
    size: dict[str, int] = {}
    last: dict[str, int] = {}
    for u, v, nbytes in edges:
        size[u] = max(size.get(u, 0), nbytes)
        last[u] = max(last.get(u, -1), pos[v])
    return [sum(size[u] for u in size if pos[u] < p <= last[u]) for p in range(len(order) + 1)]


@settings(max_examples=300, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_always_a_deterministic_topological_order(dag, rnd):
    names, edges = dag
    order = order_items(names, edges)
    assert sorted(order) == sorted(names)
    pos = {name: i for i, name in enumerate(order)}
    assert all(pos[u] < pos[v] for u, v, _ in edges)
    shuffled = list(edges)
    rnd.shuffle(shuffled)
    assert order_items(names, shuffled) == order


def test_a_chain_keeps_its_order():
    names = [f"g{i}" for i in range(6)]
    assert order_items(names, [(a, b, 10) for a, b in zip(names, names[1:])]) == names


def test_independent_towers_are_finished_one_at_a_time():
    names = ["a0", "b0", "a1", "b1", "a2", "b2"]  # listed interleaved, breadth first
    edges = [("a0", "a1", 10), ("a1", "a2", 10), ("b0", "b1", 10), ("b1", "b2", 10)]
    order = order_items(names, edges)
    assert order == ["a0", "a1", "a2", "b0", "b1", "b2"]
    ours, listed = live_bytes(order, edges), live_bytes(names, edges)
    assert all(x <= y for x, y in zip(ours, listed)) and sum(ours) < sum(listed)
    assert 0 in ours[1:-1]  # a free cut between the towers


def test_a_head_runs_right_after_the_feature_map_it_reads():
    # backbone f0 -> f1 -> f2; a small head h0 reads the large f0 and makes a graph output
    names = ["f0", "f1", "f2", "h0"]
    edges = [("f0", "f1", 1000), ("f0", "h0", 1000), ("f1", "f2", 1000)]
    order = order_items(names, edges, cost={"h0": 10})
    assert order == ["f0", "h0", "f1", "f2"]
    assert max(live_bytes(order, edges)) == 1000 < max(live_bytes(names, edges))


def test_unknown_names_and_cycles_are_rejected():
    with pytest.raises(ValueError, match="unknown item 'x'"):
        order_items(["a"], [("a", "x", 1)])
    with pytest.raises(ValueError, match="unknown item 'y'"):
        order_items(["a"], [], cost={"y": 1})
    with pytest.raises(ValueError, match="cycle through a, b"):
        order_items(["a", "b"], [("a", "b", 1), ("b", "a", 1)])
    with pytest.raises(ValueError, match="consumes itself"):
        order_items(["a"], [("a", "a", 1)])
    with pytest.raises(ValueError, match="unique"):
        order_items(["a", "a"], [])


def test_ties_fall_back_to_the_given_order():
    names = ["c", "a", "b"]
    assert order_items(names, []) == names
    assert order_items(list(reversed(names)), []) == list(reversed(names))
