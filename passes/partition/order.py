"""Item order: the topological order in which a DAG of groups is laid out for contiguous cuts.

A plan cuts the item sequence at positions; the bytes sent at a cut are the
outputs still waiting for a consumer. In Inception- or DenseNet-style blocks,
and in graphs with parallel towers, a breadth-first order keeps every branch
open at once, so no position inside them is cheap to cut. The order here is a
greedy list schedule in the spirit of Sethi-Ullman register allocation: among
the ready items it takes the one that frees the most live bytes net of what
it allocates; on a tie, one that continues the branch just scheduled (so
branches are finished before others are opened); then the earlier one in the
given order. It is deterministic and does not depend on the order of
``edges``.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence


def order_items(names: Sequence[str], edges: Iterable[tuple[str, str, int]],
                cost: Mapping[str, int] | None = None) -> list[str]:
    """A topological order of the DAG over ``names`` with few bytes live at many positions.

    ``edges``: (producer, consumer, bytes). A producer's output is counted once, at the largest
    bytes on its out-edges (its consumers read the same tensor). ``cost`` overrides that per
    item: bytes its outputs hold while live, e.g. a graph output with no consumer here, which
    stays live to the end. Raises ValueError on an unknown name or a cycle.
    """
    index = {name: i for i, name in enumerate(names)}
    if len(index) != len(names):
        raise ValueError("item names must be unique")
    succ: list[set[int]] = [set() for _ in names]
    pred: list[set[int]] = [set() for _ in names]
    size = [0] * len(names)
    for producer, consumer, nbytes in edges:
        for end in (producer, consumer):
            if end not in index:
                raise ValueError(f"edge {producer!r} -> {consumer!r} names an unknown item {end!r}")
        if producer == consumer:
            raise ValueError(f"the graph has a cycle: {producer!r} consumes itself")
        u, v = index[producer], index[consumer]
        succ[u].add(v)
        pred[v].add(u)
        size[u] = max(size[u], nbytes)
    for name, nbytes in (cost or {}).items():
        if name not in index:
            raise ValueError(f"cost names an unknown item {name!r}")
        size[index[name]] = nbytes
    waiting = [len(s) for s in succ]      # unscheduled consumers of each item's output
    missing = [len(p) for p in pred]      # unscheduled producers feeding each item
    ready = {i for i in range(len(names)) if missing[i] == 0}
    order: list[int] = []
    last = -1

    def priority(v: int) -> tuple[int, bool, int]:
        freed = sum(size[u] for u in pred[v] if waiting[u] == 1)
        return (freed - size[v], last in pred[v], -v)

    while ready:
        v = max(ready, key=priority)
        ready.remove(v)
        order.append(v)
        last = v
        for u in pred[v]:
            waiting[u] -= 1
        for w in succ[v]:
            missing[w] -= 1
            if missing[w] == 0:
                ready.add(w)
    if len(order) != len(names):
        stuck = sorted((i for i in range(len(names)) if missing[i] > 0))[:5]
        raise ValueError(f"the graph has a cycle through {', '.join(names[i] for i in stuck)}")
    return [names[i] for i in order]
