"""Built-in profiles against published batch-1 latencies: two calibration models per unit, the rest validation.

Figures: benchmarks/data/published_latency.json (sources in its .md). The built-in
profiles describe the runtime the bundle runs: ONNX Runtime's CPU provider on the
ARM cores, a TensorRT fp16 engine on the Nano's GPU.

- CPU units: every usable figure is ncnn's (benchncnn, 4 threads, fp32). It is
  converted to ONNX Runtime ms as published ms x clock / profile clock x
  ORT/ncnn, per conv class: ncnn runs dense 3x3 stride-1 convs as Winograd and
  ONNX Runtime as im2col + SGEMM, so ORT/ncnn = r / (1 - s + s / g) for a model
  with share s of its FLOPs in those convs (edgec.costmodel.builtin.ort_over_ncnn).
  g, ncnn's Winograd gain, is measured with ncnn on the calibration ResNet-50's
  layers (benchmarks/winograd_gain.py); r is solved from the only same-board
  pair, YOLOv8n (ORT/ncnn 1.35) and YOLOv8s (1.38) on a Raspberry Pi 4
  (Ultralytics' RPi guide, YOLOv8-era table; the .md's "Ratios between
  runtimes"), whose shares come from their layer lists (yolov8_conv_macs). It
  was measured on the A72; on the A57, A15 and A7 it is an assumption. Predicted
  ORT ms is compared with that converted figure.
  XU4 LITTLE figures come from other Cortex-A7 boards (H2+, AX620A, BCM2836,
  RV1126) at their clocks, scaled to the XU4's 1.4 GHz the same way.
- Nano GPU: TensorRT fp16 figures only (torch2trt's table: Python call overhead
  included; jkjung-avt's GoogLeNet ~16 ms); ratio 1. ncnn-Vulkan rows are
  never used.

Excluded (each row's reason is printed as a count and written with --write):
another runtime (ncnn-Vulkan on the GPU; TFLite, Arm NN, OpenVINO, PyTorch, ...
on the CPUs, with no stated ratio to ONNX Runtime); harnesses that time more than
the network (demo-program FPS with pre/post-processing, per-call cudaMalloc,
partial TF-TRT, live-camera FPS, overclocked letterboxed apps); int8; fp32
TensorRT engines; thread counts other than the 4-core unit (1, 2, 8 threads);
the ncnn-small-board RPi 4 row (a copy of the README run's min column); and
models the architectures registry cannot build (YOLOv3-v8, FCN, SSD, pose).

    python benchmarks/published_latency.py [--units U,...] [--calibrate] [--write]

--calibrate re-solves each unit's two free parameters from its calibration
models (edgec.costmodel.calibrate) and prints them next to the built-in values;
--write stores the per-row table in benchmarks/data/bundle_runtime_latency.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import onnx_graphsurgeon as gs

from edgec.costmodel.builtin import (BUILTIN_CLOCK_GHZ, BUILTIN_PROFILES, CALIBRATION_MODELS, ORT_OVER_NCNN,
                                     ORT_OVER_NCNN_SOURCE, WINOGRAD_GAIN_NCNN, WINOGRAD_GAIN_NCNN_SOURCE, gemm_eff,
                                     ort_over_ncnn)
from edgec.costmodel.calibrate import solve_pair
from edgec.costmodel.predict import predict_ms
from edgec.costmodel.profile import UnitProfile
from edgec.costmodel.work import node_work

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "published_latency.json"
TABLE = ROOT / "benchmarks" / "data" / "bundle_runtime_latency.json"
TARGET_MEDIAN, TARGET_WORST = 25.0, 60.0
UNITS = tuple(BUILTIN_CLOCK_GHZ)

# published names that are the same network as a registry architecture under another name
ALIASES = {
    # BatchNorm folds into the conv when TensorRT builds the engine: the _bn engines are the plain ones
    "torchvision vgg11_bn": "vgg11", "torchvision vgg13_bn": "vgg13", "torchvision vgg16_bn": "vgg16",
    # jkjung-avt's TensorRT GoogLeNet is BVLC's Caffe prototxt, which ncnn's googlenet.param converts
    "BVLC GoogLeNet (Caffe)": "ncnn_googlenet",
}
# harnesses that time more than the network, by a piece of their source or runtime text
HARNESS = {
    "tensorrt_demos": "demo-program FPS, pre/post-processing included",
    "tkDNN": "demo-program FPS, pre/post-processing included",
    "Qengineering": "app FPS on letterboxed frames, pre/post-processing included",
    "JetsonNanoTest": "timed region includes cudaMalloc/cudaFree and copies",
    "imagenet-camera": "approximate live-camera FPS",
    "segnet-console": "segNet FPS of the demo program (pre/post-processing included)",
    "SECONDHAND": "secondhand figure, primary page not read",
    "TF-TRT": "only part of the graph runs in TensorRT",
    "trt_pose": "notebook throughput of model calls (pre/post-processing around them)",
}


@dataclass
class Row:
    """One published figure and how this benchmark uses it."""

    index: int                  # position in published_latency.json
    unit: str
    board: str
    model: str
    runtime: str
    published_ms: float
    clock_ghz: float | None
    role: str                   # calibration | validation | excluded
    reason: str = ""            # why excluded
    architecture: str | None = None
    clock_scale: float = 1.0    # profile clock / published clock applied to the figure (x clock / profile clock)
    ratio: float = 1.0          # bundle runtime ms per source runtime ms (an ncnn row's: set once its share is known)
    predicted_ms: float | None = None
    winograd_share: float | None = None  # share of the architecture's FLOPs in dense 3x3 stride-1 convs

    @property
    def bundle_ms(self) -> float:
        """The figure as the bundle's runtime on the profile's clock would show it."""
        return self.published_ms * self.clock_scale * self.ratio

    @property
    def error_pct(self) -> float | None:
        return None if self.predicted_ms is None else (self.predicted_ms - self.bundle_ms) / self.bundle_ms * 100


def architecture_of(model: str, known: set[str]) -> str | None:
    """The registry architecture a published model name is, or None."""
    if model in ALIASES:
        return ALIASES[model]
    if model.endswith("(ncnn benchmark)"):
        name = "ncnn_" + model.split()[0]
    elif model.startswith("torchvision "):
        name = model.split()[1]
    else:
        return None
    return name if name in known else None


def _clock(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _exclusion(r: dict[str, Any], gpu: bool) -> str:
    runtime, source = r["runtime"], r["source"]
    if "Vulkan" in runtime:
        return "ncnn-Vulkan, not TensorRT"
    if gpu and "TensorRT" not in runtime:
        return f"{runtime}, not TensorRT"
    if not gpu and runtime != "ncnn":
        if runtime.startswith("ncnn (Q-engineering"):
            return HARNESS["Qengineering"]
        if runtime.startswith("ncnn"):
            return f"{runtime}: a wrapper's timing, not benchncnn"
        return f"{runtime}: no stated ratio to ONNX Runtime" if "ONNX Runtime" not in runtime else ""
    for key, why in HARNESS.items():
        if key in source or key in runtime:
            return why
    if r["precision"] == "int8":
        return "int8 (the bundle runs fp32 on the CPUs)"
    if gpu and not str(r["precision"]).startswith("fp16"):
        return f"precision {r['precision']} (the bundle builds fp16 engines)"
    if not gpu and r["threads"] != 4:
        return f"{r['threads']} threads (the profile is the 4-core unit)"
    if not gpu and r["unit"] == "raspberry-pi-4.cpu" and "small-board" in source:
        return "copy of the 2023 README run's min column"
    return ""


def select_rows(data: Sequence[dict[str, Any]], known: set[str]) -> list[Row]:
    """Every published row with its role, architecture, clock scale and ratio (no model is built)."""
    rows = []
    for i, r in enumerate(data):
        unit, gpu = r["unit"], r["unit"].endswith(".gpu")
        row = Row(i, unit, r["board"], r["model"], r["runtime"], float(r["latency_ms"]), _clock(r["clock_ghz"]),
                  "excluded", ratio=1.0 if gpu else ORT_OVER_NCNN)
        row.reason = _exclusion(r, gpu)
        row.architecture = architecture_of(r["model"], known)
        if "ONNX Runtime" in r["runtime"]:
            row.ratio, row.reason = 1.0, row.reason or "ONNX Runtime figure, but no registry architecture (YOLOv8)"
        if not row.reason and row.architecture is None:
            row.reason = "no registry architecture"
        if not row.reason and not gpu:
            row.clock_scale = row.clock_ghz / BUILTIN_CLOCK_GHZ[unit]
        if not row.reason:
            row.role = "calibration" if row.architecture in CALIBRATION_MODELS[unit] else "validation"
        rows.append(row)
    return rows


# -- models and predictions ------------------------------------------------------------------


def build_nodes(name: str) -> list[gs.Node]:
    """A registry architecture as the compiler costs it: load, shape inference and fusion passes run."""
    import onnx

    from architectures import ARCHITECTURES
    from edgec.ir import Program
    from edgec.passes.fusion import Fusion
    from edgec.passes.load import Load
    from edgec.passes.shape_inference import ShapeInference
    from edgec.pipeline import PassManager

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        onnx.save(ARCHITECTURES[name](), str(path))
        program = PassManager([Load(str(path)), ShapeInference(), Fusion()]).run(Program.empty())
    return list(program.graph.nodes)


def predict(rows: list[Row], units: Sequence[str], calibrate: bool) -> dict[str, tuple[float, float]]:
    """Fill predicted_ms of the used rows of `units`, building each architecture once; with `calibrate`,
    also re-solve each unit's free parameters (returned per unit) and predict with the solved profile."""
    used = [r for r in rows if r.role != "excluded" and r.unit in units]
    graphs = {a: build_nodes(a) for a in sorted({r.architecture for r in used})}
    shares = {a: winograd_share(nodes) for a, nodes in graphs.items()}
    for r in used:
        r.winograd_share = shares[r.architecture]
        if r.runtime == "ncnn":
            r.ratio = ort_over_ncnn(r.winograd_share)
    solved = {}
    for unit in units:
        profile = BUILTIN_PROFILES[unit]
        if calibrate:
            solved[unit] = solve(unit, rows, graphs)
            profile = rebuild(unit, *solved[unit])
        for r in used:
            if r.unit == unit:
                r.predicted_ms = predict_ms(graphs[r.architecture], profile)
    return solved


def winograd_share(nodes: Sequence[gs.Node]) -> float:
    """Share of the nodes' FLOPs in dense 3x3 stride-1 convs (which ncnn runs as Winograd)."""
    works = [node_work(n) for n in nodes]
    return sum(w.flops for w in works if w.winograd) / max(sum(w.flops for w in works), 1.0)


def yolov8_conv_macs(width: float, depth: float, size: int = 640, classes: int = 80) -> list[tuple[int, bool]]:
    """(MACs, dense 3x3 stride 1) of every conv of Ultralytics' YOLOv8 detector at this width and depth multiple
    (yolov8.yaml: n 0.25/0.33, s 0.50/0.33; C2f bottlenecks of two 3x3 convs, SPPF, the decoupled Detect head).
    Only the convs: the rest is well under 1% of the FLOPs."""
    def ch(c: int) -> int:
        return int(math.ceil(min(c, 1024) * width / 8) * 8)

    def rep(n: int) -> int:
        return max(round(n * depth), 1)

    convs: list[tuple[int, bool]] = []

    def conv(c1: int, c2: int, k: int, stride: int, side: int) -> None:
        convs.append((c1 * c2 * k * k * side * side, k == 3 and stride == 1))

    def c2f(c1: int, c2: int, n: int, side: int) -> None:
        c = c2 // 2
        conv(c1, 2 * c, 1, 1, side)
        for _ in range(2 * n):
            conv(c, c, 3, 1, side)
        conv((2 + n) * c, c2, 1, 1, side)

    s, (c64, c128, c256, c512, c1024) = size, (ch(c) for c in (64, 128, 256, 512, 1024))
    conv(3, c64, 3, 2, s // 2)
    conv(c64, c128, 3, 2, s // 4)
    c2f(c128, c128, rep(3), s // 4)
    conv(c128, c256, 3, 2, s // 8)
    c2f(c256, c256, rep(6), s // 8)
    conv(c256, c512, 3, 2, s // 16)
    c2f(c512, c512, rep(6), s // 16)
    conv(c512, c1024, 3, 2, s // 32)
    c2f(c1024, c1024, rep(3), s // 32)
    conv(c1024, c1024 // 2, 1, 1, s // 32)      # SPPF
    conv(c1024 * 2, c1024, 1, 1, s // 32)
    c2f(c1024 + c512, c512, rep(3), s // 16)    # head: FPN down, then PAN up
    c2f(c512 + c256, c256, rep(3), s // 8)
    conv(c256, c256, 3, 2, s // 16)
    c2f(c256 + c512, c512, rep(3), s // 16)
    conv(c512, c512, 3, 2, s // 32)
    c2f(c512 + c1024, c1024, rep(3), s // 32)
    box, cls = max(16, c256 // 4, 64), max(c256, min(classes, 100))
    for c, side in ((c256, s // 8), (c512, s // 16), (c1024, s // 32)):
        for hidden, out in ((box, 64), (cls, classes)):
            conv(c, hidden, 3, 1, side)
            conv(hidden, hidden, 3, 1, side)
            conv(hidden, out, 1, 1, side)
    return convs


def rebuild(unit: str, a: float, b: float) -> UnitProfile:
    """The unit's built-in profile with its two free parameters set to (a, b) (recipe in edgec.costmodel.builtin)."""
    base = BUILTIN_PROFILES[unit]
    if base.runtime == "tensorrt":  # a: efficiency, b: DRAM bandwidth (activations and copies too)
        return replace(base, efficiency=gemm_eff(a), bandwidth_gbs=b, activation_bandwidth_gbs=b, copy_bandwidth_gbs=b)
    return replace(base, efficiency=gemm_eff(a), activation_bandwidth_gbs=b, im2col_bandwidth_gbs=2 * b)


def solve(unit: str, rows: list[Row], graphs: dict[str, list[gs.Node]]) -> tuple[float, float]:
    """The unit's (efficiency, bandwidth) from its two calibration models' median converted figures."""
    first, second = CALIBRATION_MODELS[unit]
    target = {a: statistics.median(r.bundle_ms for r in rows if r.unit == unit and r.architecture == a
                                   and r.role == "calibration") for a in (first, second)}
    return solve_pair(lambda a, b: rebuild(unit, a, b), (graphs[first], target[first]),
                      (graphs[second], target[second]), start=(0.5, 4.0), bounds=((1e-3, 5.0), (0.05, 500.0)))


# -- report ----------------------------------------------------------------------------------


def stats(rows: list[Row], unit: str) -> tuple[int, float, float]:
    errors = [abs(r.error_pct) for r in rows if r.unit == unit and r.role == "validation" and r.predicted_ms]
    return (len(errors), statistics.median(errors), max(errors)) if errors else (0, float("nan"), float("nan"))


def report(rows: list[Row], units: Sequence[str], solved: dict[str, tuple[float, float]]) -> None:
    print(f"ORT/ncnn ratio on every CPU unit: {ORT_OVER_NCNN_SOURCE}")
    print(f"ncnn's Winograd gain {WINOGRAD_GAIN_NCNN}: {WINOGRAD_GAIN_NCNN_SOURCE}")
    print("CPU target = ncnn ms x published clock / profile clock x ratio; GPU target = TensorRT fp16 ms\n")
    print("3x3s1 = share s of the model's FLOPs in dense 3x3 stride-1 convs, which ncnn runs as Winograd and "
          f"ONNX Runtime as im2col + SGEMM; ratio = {ORT_OVER_NCNN} / (1 - s + s / {WINOGRAD_GAIN_NCNN})\n")
    head = f"  {'model':24s} {'board':14s} {'source runtime':16s} {'GHz':>5s} {'pub ms':>8s} {'target':>8s} " \
           f"{'pred ms':>8s} {'err %':>7s} {'3x3s1':>5s} {'ratio':>5s}"
    for unit in units:
        p = BUILTIN_PROFILES[unit]
        print(f"== {unit} (profile at {BUILTIN_CLOCK_GHZ[unit]} GHz, runtime {p.runtime}; calibration: "
              f"{', '.join(CALIBRATION_MODELS[unit])})")
        if unit in solved:
            a, b = solved[unit]
            built = (p.efficiency["conv"], p.bandwidth_gbs if p.runtime == "tensorrt" else p.act_bandwidth_gbs)
            print(f"   solved: efficiency {a:.3f}, bandwidth {b:.2f} GB/s (built in: {built[0]}, {built[1]})")
        for role in ("calibration", "validation"):
            print(f" {role}:\n{head}")
            chosen = [r for r in rows if r.unit == unit and r.role == role]
            for r in sorted(chosen, key=lambda r: (r.architecture, r.index)):
                clock = f"{r.clock_ghz:5.2f}" if r.clock_ghz else "    -"
                label = r.architecture if r.model not in ALIASES else f"{r.architecture}={r.model.split()[1]}"
                print(f"  {label[:24]:24s} {r.board[:14]:14s} {r.runtime[:16]:16s} {clock} {r.published_ms:8.1f} "
                      f"{r.bundle_ms:8.1f} {r.predicted_ms:8.1f} {r.error_pct:+7.1f} {r.winograd_share * 100:4.0f}% "
                      f"{r.ratio:5.3f}")
        n, med, worst = stats(rows, unit)
        print(f" validation: {n} figures, median |error| {med:.1f}%, worst {worst:.1f}%")
        reasons: dict[str, int] = {}
        for r in rows:
            if r.role == "excluded" and r.unit == unit:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
        print(f" excluded: {sum(reasons.values())} rows")
        for why, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            print(f"  {count:4d}  {why}")
        print()
    print("summary (validation, out of sample):")
    for unit in units:
        n, med, worst = stats(rows, unit)
        ok = "ok" if med <= TARGET_MEDIAN and worst <= TARGET_WORST else "MISSES TARGET"
        print(f"  {unit:20s} n={n:3d}  median {med:5.1f}%  worst {worst:5.1f}%  "
              f"(target <= {TARGET_MEDIAN:.0f}% / <= {TARGET_WORST:.0f}%) {ok}")


def write_table(rows: list[Row], path: Path = TABLE) -> None:
    """The per-row table: every published figure, its role, its bundle-runtime ms and the prediction."""
    out = {"about": "published_latency.json rows as the bundle's runtime would show them (benchmarks/"
                    "published_latency.py --write): bundle_ms = published_ms x clock_scale x ratio",
           "ort_over_ncnn": ORT_OVER_NCNN, "ort_over_ncnn_source": ORT_OVER_NCNN_SOURCE,
           "winograd_gain_ncnn": WINOGRAD_GAIN_NCNN,
           "profile_clock_ghz": BUILTIN_CLOCK_GHZ, "calibration_models": CALIBRATION_MODELS,
           "rows": [{**{k: v for k, v in asdict(r).items() if k not in ("predicted_ms", "winograd_share")},
                     "winograd_share": None if r.winograd_share is None else round(r.winograd_share, 4),
                     "ratio": round(r.ratio, 4),
                     "bundle_ms": round(r.bundle_ms, 3) if r.role != "excluded" else None,
                     "predicted_ms": None if r.predicted_ms is None else round(r.predicted_ms, 3)} for r in rows]}
    path.write_text(json.dumps(out, indent=1) + "\n")


def load_rows() -> list[Row]:
    """The published rows with their roles, against the registry's architecture names."""
    sys.path.insert(0, str(ROOT / "samples"))
    from architectures import ARCHITECTURES
    return select_rows(json.loads(DATA.read_text()), set(ARCHITECTURES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", default=",".join(UNITS), help="comma-separated unit profiles")
    parser.add_argument("--calibrate", action="store_true", help="re-solve the free parameters and predict with them")
    parser.add_argument("--write", action="store_true", help=f"write {TABLE.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    units = [u for u in args.units.split(",") if u]
    rows = load_rows()
    solved = predict(rows, units, args.calibrate)
    report(rows, units, solved)
    if args.write:
        write_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
