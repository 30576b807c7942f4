"""Soak: 10,000 frames through three device processes on loopback, the middle device killed (SIGKILL) and
restarted twice during the run.

Prints the frames delivered and lost, the lost ones by number next to the frames
the driver reported in flight at each restart (without replicas, exactly those
may be lost; none other), and each device's resident memory over the run.

    python benchmarks/soak.py [--frames 10000] [--restarts 2] [--timeout 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnx.parser

import edgec
from edgec.runtime.driver import Driver
from edgec.runtime.frames import random_frames
from edgec.runtime.local import LocalCluster
from edgec.runtime.pipeline import read_pipeline

MODEL = """
<ir_version: 8, opset_import: ["" : 13]>
soak (float[1,64] x) => (float[1,64] y)
{
    a = Relu(x)
    b = Sigmoid(a)
    c = Tanh(b)
    d = Add(c, a)
    e = Mul(d, b)
    y = Sigmoid(e)
}
"""


def _cluster(cores: list[int]) -> dict:
    return {"name": "soak", "devices": [{"name": f"d{i}", "type": "host", "units": {"cpu": {"cores": [c]}}}
                                        for i, c in enumerate(cores)],
            "network": {"bandwidth_mbps": 1000, "latency_ms": 0.05}, "source": "d0", "sink": f"d{len(cores) - 1}"}


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _ranges(seqs: list[int]) -> str:
    out, i = [], 0
    while i < len(seqs):
        j = i
        while j + 1 < len(seqs) and seqs[j + 1] == seqs[j] + 1:
            j += 1
        out.append(str(seqs[i]) if i == j else f"{seqs[i]}-{seqs[j]}")
        i = j + 1
    return ", ".join(out) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--victim", default="d1")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgec-soak-"))
    onnx.save(onnx.parser.parse_model(MODEL), work / "soak.onnx")
    (work / "cluster.json").write_text(json.dumps(_cluster([0, 1, 0])))
    out = edgec.compile(work / "soak.onnx", work / "cluster.json", work / "out").out_dir
    plan = read_pipeline(str(out))
    frames = random_frames(plan.inputs, 8)
    n = args.frames
    kill_at = [n * (k + 1) // (args.restarts + 1) for k in range(args.restarts)]
    samples: list[tuple[int, float, dict[str, float]]] = []
    every = max(n // 20, 1)

    with LocalCluster(str(out), pin=False) as cluster:
        t0 = time.monotonic()

        def on_result(seq, outputs, error):
            if seq % every == 0 or seq == n - 1:
                samples.append((seq, time.monotonic() - t0, {d: _rss_mb(p.pid) for d, p in cluster.procs.items()}))
            if kill_at and seq == kill_at[0]:
                kill_at.pop(0)
                proc = cluster.procs[args.victim]
                proc.kill()
                proc.wait()
                log = open(cluster._logs[args.victim], "ab")
                cluster.procs[args.victim] = subprocess.Popen(cluster.command(args.victim), stdout=log,
                                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        # no watch: as for devices served elsewhere, a restarted device is taken back rather than failing the run
        driver = Driver(str(out), cluster.deployment, timeout_s=args.timeout)
        result = driver.run(lambda k: frames[k % len(frames)], n, on_result)

    lost = sorted(result.errors)
    restarts = [note for note in result.notes if "restarted" in note]
    print(f"soak: {n} frames, device {args.victim} killed and restarted {args.restarts} times "
          f"(max {driver.max_in_flight} frames in flight)")
    print(f"  delivered {result.delivered}, lost {len(lost)}: {_ranges(lost)}")
    for note in restarts:
        print(f"  {note}")
    in_flight = set()
    for note in restarts:
        part = note.split("with frames ", 1)[1].split(" in flight", 1)[0]
        for piece in part.split(", "):
            if piece == "none":
                continue
            lo, _, hi = piece.partition("-")
            in_flight |= set(range(int(lo), int(hi or lo) + 1))
    print(f"  lost frames all among those in flight at a restart: {set(lost) <= in_flight}; "
          f"run failure: {result.failure or 'none'}; wall {result.wall_s:.1f} s, {result.fps:.0f} fps")
    print()
    devices = list(plan.devices)
    print("frame    t s     " + "  ".join(f"{d} RSS MB" for d in devices))
    for seq, t, rss in samples:
        print(f"{seq:<8} {t:<7.1f} " + "  ".join(f"{rss.get(d, float('nan')):<9.1f}" for d in devices))
    if result.failure is not None or not set(lost) <= in_flight:
        sys.exit(1)


if __name__ == "__main__":
    main()
