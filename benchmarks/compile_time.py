"""Compile time of each bundled zoo model for the reference trio: median of N runs, and node count.

    python benchmarks/compile_time.py [--runs 5] [--random-weights]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnx
from rich.console import Console
from rich.table import Table

import edgec
from edgec.zoo import ZOO, write_random_zoo_model, zoo_models

TRIO = Path(__file__).resolve().parent.parent / "samples" / "clusters" / "edge-trio.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--random-weights", action="store_true", help="compile random-weight versions")
    parser.add_argument("--models", nargs="*", default=list(ZOO))
    args = parser.parse_args()
    table = Table("model", "nodes", "weights MB", "median s", "min s", "stages",
                  title=f"compile time, edge-trio, median of {args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path = zoo_models()[name]
            if args.random_weights:
                path = write_random_zoo_model(name, Path(tmp) / f"{name}.onnx")
            model = onnx.load(str(path))
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                result = edgec.compile(path, TRIO, Path(tmp) / "out")
                times.append(time.perf_counter() - start)
            prog_nodes = len(model.graph.node)
            weights = sum(s.stat().st_size for s in (Path(tmp) / "out").rglob("*.onnx")) / 2**20
            table.add_row(name, str(prog_nodes), f"{weights:.1f}", f"{statistics.median(times):.2f}",
                          f"{min(times):.2f}", str(len(result.manifest.stages)))
    Console().print(table)


if __name__ == "__main__":
    main()
