"""Solve a profile's two free parameters from two published whole-model latencies.

The built-in profiles (:mod:`edgec.costmodel.builtin`) have two free parameters
each, e.g. the GEMM efficiency and the activation bandwidth of an ARM CPU: the
first mostly sets a compute-heavy model's time, the second a memory-heavy
one's. :func:`solve_pair` finds both by alternating bisections: the first
parameter so that the first model's prediction matches its latency (the second
held), then the second from the second model, until both hold.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import onnx_graphsurgeon as gs

from edgec.costmodel.predict import predict_ms
from edgec.costmodel.profile import UnitProfile


def solve_pair(build: Callable[[float, float], UnitProfile],
               first: tuple[Sequence[gs.Node], float], second: tuple[Sequence[gs.Node], float],
               start: tuple[float, float], bounds: tuple[tuple[float, float], tuple[float, float]],
               rounds: int = 40) -> tuple[float, float]:
    """(a, b) such that ``predict_ms(first nodes, build(a, b))`` is the first ms, and likewise the second.

    Predictions must fall as either parameter grows (an efficiency, a bandwidth). Raises ValueError when a
    target lies outside what the bounds can reach.
    """
    (nodes_a, ms_a), (nodes_b, ms_b) = first, second
    a, b = start
    for _ in range(rounds):
        a = _bisect(lambda x: predict_ms(nodes_a, build(x, b)) - ms_a, *bounds[0])
        b = _bisect(lambda x: predict_ms(nodes_b, build(a, x)) - ms_b, *bounds[1])
    return a, b


def _bisect(f: Callable[[float], float], lo: float, hi: float, steps: int = 50) -> float:
    """The root of a decreasing `f` between lo and hi, bisecting in log space."""
    if f(lo) < 0 or f(hi) > 0:
        raise ValueError(f"no solution between {lo:g} and {hi:g} (f = {f(lo):.3g} .. {f(hi):.3g})")
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)
