"""Predicted plan quality of the optimal partitioner against the research baselines.

For each zoo model (random weights) and cluster (edge-trio on Ethernet, the Wi-Fi trio, an
8-board mixed cluster), the same partition problem (fusion groups, costs from the built-in
profiles, memory limits, links) is solved by every strategy; the table gives each one's
predicted bottleneck (throughput objective) and latency (latency objective), and the ratio
baseline / ours (> 1: ours is better). `random` is the median of 20 seeded draws.

    python benchmarks/partition_quality.py [--models resnet50 ...] [--clusters edge-trio ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import edgec
from edgec.passes.partition.baselines import STRATEGIES
from edgec.passes.partition.build import build_problem, group_graph
from edgec.passes.partition.optimal import Infeasible, solve
from edgec.zoo import ZOO, write_random_zoo_model

CLUSTERS = Path(__file__).resolve().parent.parent / "samples" / "clusters"
RANDOM_DRAWS = 20


def plan_value(problem, strategy: str, objective: str) -> float:
    key = "bottleneck_ms" if objective == "throughput" else "latency_ms"
    try:
        if strategy == "optimal":
            return getattr(solve(problem, objective), key)
        if strategy == "random":
            return statistics.median(getattr(STRATEGIES["random"](problem, objective, seed=s), key)
                                     for s in range(RANDOM_DRAWS))
        return getattr(STRATEGIES[strategy](problem, objective), key)
    except Infeasible:
        return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=list(ZOO))
    parser.add_argument("--clusters", nargs="*", default=["edge-trio", "edge-trio-wifi", "mixed-8"])
    args = parser.parse_args()
    baselines = list(STRATEGIES)
    console = Console(width=200)
    worst = {b: float("inf") for b in baselines}
    with tempfile.TemporaryDirectory() as tmp:
        for objective, label in (("throughput", "bottleneck ms"), ("latency", "latency ms")):
            table = Table("model", "cluster", f"ours {label}", *[f"{b}" for b in baselines], "solve ms",
                          title=f"{objective}: predicted {label} of ours, and baseline/ours")
            for name in args.models:
                path = Path(tmp) / f"{name}.onnx"
                if not path.exists():
                    write_random_zoo_model(name, path)
                for cname in args.clusters:
                    program = edgec.analyze(path, CLUSTERS / f"{cname}.json")
                    problem = build_problem(program, group_graph(program))
                    start = time.perf_counter()
                    ours = plan_value(problem, "optimal", objective)
                    solve_ms = (time.perf_counter() - start) * 1e3
                    cells = []
                    for b in baselines:
                        ratio = plan_value(problem, b, objective) / ours
                        worst[b] = min(worst[b], ratio)
                        cells.append("infeasible" if ratio == float("inf") else f"{ratio:.2f}x")
                    table.add_row(name, cname, f"{ours:.2f}", *cells, f"{solve_ms:.0f}")
            console.print(table)
    console.print("smallest baseline/ours ratio over all rows (>= 1.00 means ours is never worse): " +
                  ", ".join(f"{b} {r:.2f}x" for b, r in worst.items()))


if __name__ == "__main__":
    main()
