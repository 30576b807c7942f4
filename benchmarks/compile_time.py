"""Whole-process compile time and peak memory per zoo model, for the reference trio.

Each compile runs in its own Python process (`python -m edgec.cli compile ...` semantics through
`edgec.compile`), so the peak RSS is that compile's alone and the time includes the interpreter and
imports. Per model: the median (and min) of N runs, the peak RSS and its ratio to the model's size
on disk (the .onnx plus any external-data files), and the median ms of each pass as the manifest
records it.

    python benchmarks/compile_time.py [--runs 5] [--models vgg19 resnet50] [--shipped] [--models-dir DIR]

By default the random-weight versions of the zoo models are compiled (the shipped files hold their
weights as ConstantOfShape, a few KB on disk); `--shipped` compiles the bundled files as they are.
`--models-dir` keeps the generated models between runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
TRIO = REPO / "samples" / "clusters" / "edge-trio.json"

# What the child process runs: one compile, then its own peak RSS and the manifest's pass timings. The peak is
# VmHWM, which exec resets; getrusage's ru_maxrss keeps the forking parent's peak across exec.
CHILD = """
import json, sys, time
start = time.perf_counter()
import edgec
result = edgec.compile(sys.argv[1], sys.argv[2], sys.argv[3])
elapsed = time.perf_counter() - start
with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"compile_s": elapsed, "maxrss": hwm * 1024, "passes": result.manifest.passes,
                  "stages": len(result.manifest.stages)}))
"""


def model_bytes(path: Path) -> int:
    """Bytes of the model on disk: the .onnx and the external-data files it names."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    files = {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in files)


def compile_once(model: Path, cluster: Path, out: Path) -> dict:
    """One compile in a fresh process: wall time of the whole process, peak RSS, pass ms, stages."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), str(cluster), str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"compile of {model} failed:\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["wall_s"] = wall
    return report


def measure(model: Path, cluster: Path, runs: int, work: Path) -> dict:
    """Medians over `runs` compiles of one model."""
    reports = [compile_once(model, cluster, work / "out") for _ in range(runs)]
    names = [p["name"] for p in reports[0]["passes"]]
    return {
        "wall_s": statistics.median(r["wall_s"] for r in reports),
        "min_s": min(r["wall_s"] for r in reports),
        "maxrss": statistics.median(r["maxrss"] for r in reports),
        "stages": reports[0]["stages"],
        "passes": {n: statistics.median(next(p["ms"] for p in r["passes"] if p["name"] == n) for r in reports)
                   for n in names},
        # imports, cluster loading, the invariant checks between passes, the manifest's schema check
        "outside_ms": statistics.median(r["compile_s"] * 1e3 - sum(p["ms"] for p in r["passes"]) for r in reports),
    }


def zoo_model(name: str, shipped: bool, folder: Path) -> Path:
    from edgec.zoo import write_random_zoo_model, zoo_models

    if shipped:
        return zoo_models()[name]
    path = folder / f"{name}.onnx"
    if not path.is_file():
        write_random_zoo_model(name, path)
    return path


def main() -> None:
    from edgec.zoo import ZOO

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=list(ZOO))
    parser.add_argument("--shipped", action="store_true", help="compile the bundled files, not random-weight ones")
    parser.add_argument("--models-dir", type=Path, help="where generated models are kept (default: a temp folder)")
    parser.add_argument("--cluster", type=Path, default=TRIO)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--show", type=Path, help="print the tables of numbers an earlier --json wrote, and exit")
    args = parser.parse_args()
    if args.show:
        saved = json.loads(args.show.read_text())
        print_tables(saved["rows"], saved["runs"], saved["cluster"])
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.models_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = {}
        for name in args.models:
            path = zoo_model(name, args.shipped, folder)
            rows[name] = {"model_bytes": model_bytes(path), **measure(path, args.cluster, args.runs, Path(tmp))}
            print(f"{name}: {rows[name]['wall_s']:.2f} s", file=sys.stderr)
    print_tables(rows, args.runs, args.cluster.stem)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "runs": args.runs, "cluster": args.cluster.stem}, indent=1) + "\n")


def print_tables(rows: dict, runs: int, cluster: str) -> None:
    console = Console(width=200)
    table = Table("model", "model MB", "process s (median)", "min s", "peak RSS MB", "RSS / model", "stages",
                  title=f"whole-process compile, {cluster}, median of {runs} (each run its own process)")
    for name, r in rows.items():
        mb = r["model_bytes"] / 2**20
        table.add_row(name, f"{mb:.1f}", f"{r['wall_s']:.2f}", f"{r['min_s']:.2f}", f"{r['maxrss'] / 2**20:.0f}",
                      f"{r['maxrss'] / r['model_bytes']:.1f}x", str(r["stages"]))
    console.print(table)
    passes = list(next(iter(rows.values()))["passes"]) if rows else []
    breakdown = Table("model", *passes, "outside passes", title=f"pass breakdown, ms (median of {runs}, as the manifest records)")
    for name, r in rows.items():
        breakdown.add_row(name, *(f"{r['passes'].get(p, 0):.0f}" for p in passes),
                          f"{r['outside_ms']:.0f}")
    console.print(breakdown)


if __name__ == "__main__":
    main()
