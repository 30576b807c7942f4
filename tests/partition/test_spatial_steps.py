"""Chains of slice steps: the dynamic programme finds the brute-force optimum, and multi-step plans verify."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import edgec
from edgec.cluster import load_cluster
from edgec.passes.partition.local_partition import STAGE_CALL_MS
from edgec.passes.partition.spatial_search import SearchSpace
from edgec.passes.partition.spatial_steps import _slice_steps, best_chain

from test_spatial import _placed


def _two_hosts(tmp_path: Path) -> Path:
    spec = {"name": "two-hosts", "network": {"bandwidth_mbps": 16000, "latency_ms": 0.05},
            "devices": [{"name": f"core{c}", "type": "host", "units": {"cpu": {"cores": [c]}}} for c in (0, 1)],
            "source": "core0", "sink": "core0"}
    path = tmp_path / "two.json"
    path.write_text(json.dumps(spec))
    return path


def _brute_force(space: SearchSpace) -> float:
    """The least latency over every chain (each run sliced or not, every holder and tail), enumerated."""
    n = len(space.order)
    cl = space.cluster
    stops = sorted({0, n} | {p for run in space.runs for p in run})
    best = [float("inf")]

    def walk(p: int, holder, sliced: bool, ms: float) -> None:
        if p == n:
            if sliced:
                best[0] = min(best[0], ms + space.transfer(space.output_bytes, space.device(holder), cl.sink))
            return
        for q in (s for s in stops if s > p):
            for u in ([holder] if holder is not None else space.units):
                seq = space.seq_ms(p, q, u)
                if np.isfinite(seq):
                    start = 0.0 if holder is not None else (
                        space.transfer(space.source_bytes, cl.source, space.device(u)) + STAGE_CALL_MS)
                    walk(q, u, sliced, ms + start + seq)
        for a, b in space.runs:
            if a == p:
                for cost, _, _, tail in _slice_steps(space, a, b, holder):
                    walk(b, tail, True, ms + cost)

    walk(0, None, False, 0.0)
    return best[0]


def test_chain_equals_brute_force(random_zoo, tmp_path):
    space = SearchSpace(_placed(random_zoo("bvlc_alexnet"), load_cluster(_two_hosts(tmp_path))))
    found = best_chain(space)
    assert found is not None
    assert abs(found[0] - _brute_force(space)) < 1e-9
    steps = found[1]
    assert steps and all(len(s.units) == 2 for s in steps)
    # the steps follow each other along the graph: each one's entry is where the one before merged
    position = {space.lives[p][0]: p for p in range(len(space.order) + 1) if len(space.lives[p]) == 1}
    assert all(position[x.exit] <= position[y.entry] for x, y in zip(steps, steps[1:]))


def test_multi_step_resnet_plan_verifies(random_zoo, tmp_path):
    cluster = _two_hosts(tmp_path)
    model = random_zoo("resnet50")
    result = edgec.compile(model, cluster, tmp_path / "out", strategy="spatial", objective="latency")
    stages = result.manifest.stages
    steps = sorted({s.step for s in stages if s.parallel == "slice"})
    assert len(steps) >= 2  # short runs with small halos, merged between
    for step in steps:
        slices = [s for s in stages if s.step == step]
        rows = [tuple(s.slice["rows"]) for s in slices]
        assert rows[0][0] == 0 and rows[-1][1] == slices[0].slice["of"]
        assert all(x[1] == y[0] for x, y in zip(rows, rows[1:]))
    report = edgec.verify(tmp_path / "out")
    assert report.passed, report
    # no worse than the best single step the greedy search alone would take
    program = _placed(model, load_cluster(cluster))
    single = SearchSpace(program).ranked("latency")[0].latency_ms
    assert result.manifest.predicted["latency_ms"] <= single + 1e-6
