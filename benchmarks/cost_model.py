"""Cost model against measurement on this machine: predicted vs. measured ms per stage.

For every model of ONNX's bundled zoo (onnx/backend/test/data/light/*.onnx):
simplify with onnxsim (folds the ConstantOfShape weights), replace float weights
with random values, cut the topologically ordered nodes into two stages of equal
FLOPs, run each stage and the whole model under ONNX Runtime with the profile's
thread settings (median of --runs after warm-up, runs disturbed by other
processes timed again), and compare with the cost model's prediction.

    python benchmarks/cost_model.py                      # measures a profile first (~30 s)
    python benchmarks/cost_model.py --profile host.json  # a profile file from `edgec profile`

Targets: MAPE <= 15% over all stages, whole-model error <= 10%.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from edgec.flops import node_flops
from edgec.passes.cost import predict_ms
from edgec.profile import UnitProfile, load_profile, parse_unit_profile
from edgec.microbench import random_feeds, session, time_session, wait_until_idle
from edgec.profiler import measure_host_profile

ZOO = Path(onnx.__file__).parent / "backend/test/data/light"
CACHE = Path(tempfile.gettempdir()) / f"edgec-zoo-{onnx.__version__}"


def prepared(path: Path, seed: int = 0) -> onnx.ModelProto:
    """The zoo model simplified (weights folded to initializers) with random float weights; cached."""
    out = CACHE / path.name
    if out.exists():
        return onnx.load(str(out))
    import onnxsim

    model, ok = onnxsim.simplify(onnx.load(str(path)))
    if not ok:
        raise RuntimeError(f"onnxsim could not check {path.name}")
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 1:
            fan_in = int(np.prod(array.shape[1:])) if array.ndim > 1 else array.size
            array = (rng.standard_normal(array.shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(array, init.name))
    CACHE.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return model


def split_in_two(model: onnx.ModelProto) -> list[onnx.ModelProto]:
    """Two sub-models whose nodes (in topological order) carry half the FLOPs each."""
    graph = gs.import_onnx(model)
    graph.toposort()
    flops = [node_flops(n) for n in graph.nodes]
    total, acc, cut = sum(flops), 0.0, len(flops)
    for i, f in enumerate(flops):
        acc += f
        if acc >= total / 2:
            cut = i + 1
            break
    cut = min(max(cut, 1), len(graph.nodes) - 1)
    first, second = graph.nodes[:cut], graph.nodes[cut:]
    produced = {t.name for n in first for t in n.outputs}
    graph_outputs = [t.name for t in graph.outputs]
    crossing = list(dict.fromkeys(
        t.name for n in second for t in n.inputs if t.name in produced))
    inputs_2 = list(dict.fromkeys(
        [t.name for t in graph.inputs if any(t.name in {i.name for i in n.inputs} for n in second)] + crossing))
    outputs_1 = list(dict.fromkeys(crossing + [o for o in graph_outputs if o in produced]))
    full = gs.export_onnx(graph)
    del full.opset_import[:]
    full.opset_import.extend(model.opset_import)
    full.ir_version = model.ir_version
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(full))
    stage1 = extractor.extract_model([t.name for t in graph.inputs], outputs_1)
    stage2 = extractor.extract_model(inputs_2, [o for o in graph_outputs if o not in produced])
    return [stage1, stage2]


def predicted(model: onnx.ModelProto, profile: UnitProfile) -> float:
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    return predict_ms(graph.nodes, profile)


def measured(model: onnx.ModelProto, profile: UnitProfile, runs: int) -> float:
    sess = session(model, profile.threads, profile.cores)
    return time_session(sess, random_feeds(sess), runs=runs, warmup=3, budget_s=20.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="profile file (default: measure this machine now)")
    parser.add_argument("--unit", default="cpu", help="unit name in the profile file")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--models", nargs="*", help="zoo model names (default: all)")
    parser.add_argument("--save-profile", help="write the measured profile here")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    if args.profile:
        profile = load_profile(args.profile).units[args.unit]
    else:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        spec = measure_host_profile(threads, None, name=args.unit)
        profile = parse_unit_profile(spec, args.unit)
        if args.save_profile:
            Path(args.save_profile).write_text(json.dumps(spec, indent=1) + "\n")
        print(f"profile measured in {time.perf_counter() - t0:.0f} s: peak {profile.peak_gflops:.0f} GFLOP/s, "
              f"DRAM {profile.bandwidth_gbs:.1f} GB/s, activations {profile.act_bandwidth_gbs:.0f} GB/s, "
              f"overhead {profile.overhead_ms * 1e3:.1f} us, threads {profile.threads}, "
              f"layout block {profile.layout_block} at {profile.layout_efficiency:.2f} of the activation bandwidth")
        print("  efficiency: " + ", ".join(f"{c} {e:.2f}" for c, e in profile.efficiency.items()))

    paths = sorted(Path(p) for p in glob.glob(str(ZOO / "*.onnx")))
    if args.models:
        paths = [p for p in paths if any(m in p.stem for m in args.models)]
    print(f"\n{'model':16s} {'stage':>5s} {'predicted ms':>13s} {'measured ms':>12s} {'error %':>8s}")
    stage_errors, model_errors = [], []
    for path in paths:
        model = prepared(path)
        name = path.stem.removeprefix("light_")
        wait_until_idle(30.0)
        whole_pred, whole_meas = predicted(model, profile), measured(model, profile, args.runs)
        for k, stage in enumerate(split_in_two(model), start=1):
            pred, meas = predicted(stage, profile), measured(stage, profile, args.runs)
            err = (pred - meas) / meas * 100
            stage_errors.append(abs(err))
            print(f"{name:16s} {k:5d} {pred:13.2f} {meas:12.2f} {err:+8.1f}")
        err = (whole_pred - whole_meas) / whole_meas * 100
        model_errors.append(abs(err))
        print(f"{name:16s} {'all':>5s} {whole_pred:13.2f} {whole_meas:12.2f} {err:+8.1f}")
    print(f"\nstage MAPE {statistics.mean(stage_errors):.1f}% (target <= 15%), "
          f"whole-model error mean {statistics.mean(model_errors):.1f}% max {max(model_errors):.1f}% "
          f"(target <= 10%); {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
