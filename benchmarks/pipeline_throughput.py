"""Pipeline throughput: ResNet-50 split over two single-core devices vs the whole model on one core.

    python benchmarks/pipeline_throughput.py [--frames 200] [--warmup 10] [--model resnet50.onnx]
                                             [--gflops 20,20]

ResNet-50 with random weights is compiled for a cluster of two "host" devices,
one unit each, on cores [0] and [1]. Both stages get intra_op_num_threads=1
(written into each stage's `session` in the manifest). `edgec run --local`
machinery starts one process per device, each pinned to its core. The
baselines run the whole model pinned to core 0 with the same settings: a bare
ONNX Runtime loop in one process (no transport at all), and the same model as a
one-device plan through the runtime. Transport is measured in the device
processes: the CPU time of recv + decode + encode + send on the main loop plus
the CPU time of ZeroMQ's threads (its I/O thread moves the bytes), as a share
of the stage's time per frame (compute + the main loop's recv, decode, encode
and send, wall clock).

The compiler's partition balances stages by a rough FLOP count; the table
reports the measured balance. `--gflops A,B` compiles with the two units'
gflops set to A and B, to move the cut by hand when the stages come out
unbalanced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
from rich.console import Console
from rich.table import Table

import edgec
from edgec.runtime.driver import Driver, transport_table
from edgec.runtime.frames import random_frames
from edgec.runtime.local import LocalCluster
from edgec.runtime.pipeline import read_pipeline
from edgec.runtime.stage import StageRunner
from edgec.zoo import write_random_zoo_model

SESSION = {"intra_op_num_threads": 1}


def cluster_spec(cores: List[int], gflops: List[float]) -> Dict:
    return {"name": f"host-{len(cores)}x1core",
            "devices": [{"name": f"core{c}", "type": "host", "units": {"cpu": {"cores": [c], "gflops": g}}}
                        for c, g in zip(cores, gflops)],
            "network": {"bandwidth_mbps": 10000, "latency_ms": 0.05},
            "source": f"core{cores[0]}", "sink": f"core{cores[-1]}"}


def compile_plan(model: Path, folder: Path, name: str, cores: List[int], gflops: List[float]) -> Path:
    spec = folder / f"{name}.json"
    spec.write_text(json.dumps(cluster_spec(cores, gflops)))
    out = folder / name
    edgec.compile(model, spec, out, strategy="pipeline")  # a two-stage pipeline, not replicas
    manifest = json.loads((out / "manifest.json").read_text())
    for stage in manifest["stages"]:
        stage["session"] = dict(SESSION)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def bare_loop(out: Path, frames: List[Dict[str, np.ndarray]], n: int, warmup: int, core: int):
    """The one-stage plan's model in this process, pinned to `core`: no transport at all."""
    plan = read_pipeline(str(out))
    assert len(plan.stages) == 1
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        runner = StageRunner(str(out), plan.stages[0])
        for k in range(warmup):
            runner.run(frames[k % len(frames)])
        outputs = []
        start = time.perf_counter()
        for k in range(n):
            outputs.append(runner.run(frames[k % len(frames)]))
        wall = time.perf_counter() - start
    finally:
        os.sched_setaffinity(0, before)
    return wall, outputs


def pipelined(out: Path, frames: List[Dict[str, np.ndarray]], n: int, warmup: int):
    with LocalCluster(str(out)) as cluster:
        driver = Driver(str(out), cluster.deployment, watch=cluster.problems)
        warm = driver.run(lambda k: frames[k % len(frames)], warmup)
        assert warm.ok, warm.summary()
        cpu0 = time.process_time()
        result = driver.run(lambda k: frames[k % len(frames)], n)
        driver_cpu = time.process_time() - cpu0
    assert result.ok, result.summary()
    return result, driver_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--model", type=Path, help="an ONNX model (default: ResNet-50 with random weights)")
    ap.add_argument("--gflops", default="20,20", help="the two units' gflops for the compile (moves the cut)")
    args = ap.parse_args()
    gflops = [float(g) for g in args.gflops.split(",")]
    console = Console(width=150)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or write_random_zoo_model("resnet50", folder / "resnet50.onnx")
        two = compile_plan(model, folder, "two", [0, 1], gflops)
        one = compile_plan(model, folder, "one", [0], gflops[:1])
        plan = read_pipeline(str(two))
        frames = random_frames(plan.inputs, 8, seed=0)

        bare_wall, bare_out = bare_loop(one, frames, args.frames, args.warmup, core=0)
        single, single_cpu = pipelined(one, frames, args.frames, args.warmup)
        pipe, pipe_cpu = pipelined(two, frames, args.frames, args.warmup)

    # the pipeline computes what the whole model computes
    for k in range(len(frames)):
        for name, exp in bare_out[k].items():
            scale = float(exp.max() - exp.min()) or 1.0
            assert float(np.abs(pipe.outputs[k][name] - exp).max()) <= 1e-4 * scale, name

    n = args.frames
    bare_fps = n / bare_wall
    table = Table("setup", "fps", "ms / frame", "latency p50 ms", "vs bare 1 core", "vs runtime 1 core",
                  title=f"{model.name}: {n} frames, intra_op_num_threads=1, "
                        f"{'x'.join(map(str, plan.inputs[0].shape))} {plan.inputs[0].dtype}")
    rows = [("1 process, bare ONNX Runtime loop, core 0", bare_fps, None),
            ("1 device via the runtime, core 0", single.fps, single),
            ("2 devices pipelined, cores 0 and 1", pipe.fps, pipe)]
    for label, fps, res in rows:
        p50 = f"{1e3 * statistics.median(res.latencies_s):.1f}" if res is not None else "-"
        table.add_row(label, f"{fps:.2f}", f"{1e3 / fps:.1f}", p50, f"{fps / bare_fps:.2f}x",
                      f"{fps / single.fps:.2f}x")
    console.print(table)

    stages = Table("device", "stages", "cores", "stage ms", "compute ms", "transport ms", "= main loop CPU",
                   "+ ZeroMQ threads CPU", "transport share", "blocked ms",
                   title="per frame, measured in the 2 device processes")
    rows_t = transport_table(pipe.stats)
    for r, s in zip(rows_t, pipe.stats):
        stages.add_row(str(r["device"]), r["stages"], str(s.get("cores")), f"{r['stage_ms']:.2f}",
                       f"{r['compute_ms']:.2f}", f"{r['transport_ms']:.3f}", f"{r['main_loop_ms']:.3f}",
                       f"{r['background_ms']:.3f}", f"{100 * r['transport_share']:.2f}%", f"{r['blocked_ms']:.2f}")
    console.print(stages)
    compute = [r["compute_ms"] for r in rows_t]
    imbalance = max(compute) / min(compute) - 1
    console.print(f"ratio 2 devices / bare 1 core: {pipe.fps / bare_fps:.2f}x (target >= 1.8x, limit 2x); "
                  f"stage balance: slowest stage {100 * imbalance:.1f}% over the fastest "
                  f"({' / '.join(f'{c:.1f}' for c in compute)} ms); bound from compute alone "
                  f"{1e3 / max(compute) / bare_fps:.2f}x", highlight=False)
    console.print(f"transport share of a stage's time: max {100 * max(r['transport_share'] for r in rows_t):.2f}% "
                  f"(target <= 5%); boundary tensors {', '.join(plan.segments[1].receives)}; "
                  f"driver CPU {1e3 * pipe_cpu / n:.2f} ms/frame (unpinned, shares the two cores)", highlight=False)


if __name__ == "__main__":
    main()
