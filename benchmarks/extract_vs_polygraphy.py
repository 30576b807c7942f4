"""edgec's whole compile against Polygraphy extracting the same sub-models, measured in one run.

    python benchmarks/extract_vs_polygraphy.py [--runs 5] [--model resnet50] [--cluster ...]

edgec compiles the random-weight zoo model (each run its own process, wall time of the process).
Then, for the stages of that compile, `polygraphy surgeon extract` is run once per stage with the
stage's inputs and outputs as the manifest names them (names, shapes, dtypes): the time of the
Polygraphy split is the sum of those processes' wall times. Both are medians over the runs.
edgec's compile also infers shapes, costs and partitions the model and checks every sub-model;
Polygraphy only cuts it where it is told. Needs `pip install polygraphy`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgec.manifest import TensorSpec, read_manifest

from compile_time import TRIO, compile_once, model_bytes, zoo_model  # beside this script


def polygraphy_command() -> list[str]:
    exe = shutil.which("polygraphy") or str(Path(sys.executable).parent / "polygraphy")
    if not Path(exe).is_file():
        raise SystemExit("Polygraphy is not installed: pip install polygraphy")
    return [exe]


def _arg(t: TensorSpec, with_shape: bool) -> str:
    shape = "[" + ",".join(str(d) for d in t.shape) + "]"
    return f"{t.name}:{shape}:{t.dtype}" if with_shape else f"{t.name}:{t.dtype}"


def extract(command: list[str], model: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], out: Path) -> float:
    """One `polygraphy surgeon extract`; its process's wall time."""
    args = [*command, "surgeon", "extract", str(model), "-o", str(out),
            "--inputs", *(_arg(t, True) for t in inputs), "--outputs", *(_arg(t, False) for t in outputs)]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"polygraphy failed:\n{' '.join(args)}\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="resnet50", help="a zoo model name")
    parser.add_argument("--cluster", type=Path, default=TRIO)
    parser.add_argument("--models-dir", type=Path, help="where the generated model is kept (default: a temp folder)")
    args = parser.parse_args()
    command = polygraphy_command()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.models_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = zoo_model(args.model, False, folder)
        edgec_runs, poly_runs, per_stage = [], [], []
        for _ in range(args.runs):  # interleaved, so both see the same machine load
            report = compile_once(model, args.cluster, Path(tmp) / "out")
            edgec_runs.append(report["wall_s"])
            stages = read_manifest(Path(tmp) / "out").stages
            times = [extract(command, model, s.inputs, s.outputs, Path(tmp) / f"poly_{s.name}.onnx") for s in stages]
            per_stage.append(times)
            poly_runs.append(sum(times))
        edgec_s, poly_s = statistics.median(edgec_runs), statistics.median(poly_runs)
        table = Table("model", "MB", "stages", "edgec compile s", "polygraphy extract s (sum)", "per extract s",
                      "edgec / polygraphy",
                      title=f"edgec compile vs polygraphy surgeon extract, {args.cluster.stem}, median of {args.runs}")
        table.add_row(args.model, f"{model_bytes(model) / 2**20:.0f}", str(len(stages)), f"{edgec_s:.2f}",
                      f"{poly_s:.2f}",
                      " + ".join(f"{statistics.median(t[k] for t in per_stage):.2f}" for k in range(len(stages))),
                      f"{edgec_s / poly_s:.2f}x")
        Console(width=200).print(table)


if __name__ == "__main__":
    main()
