"""Accuracy-variant substitution on the trio: fronts, floors, accuracy-aware vs blind vs fp32-only, int8 speed.

    python benchmarks/variants.py [--zoo squeezenet,shufflenet] [--frames 16] [--repeat 200]

Models: the digits CNN (samples/make_digits_cnn.py; its 0.5 and 0.25 width
networks as user variants; variants chosen on the validation split, top-1
scored on the held-out test split) and random-weight zoo models (agreement of
top-1 with fp32, and SQNR, on seeded random frames). Tables:

1. the accuracy vs predicted throughput front on samples/clusters/edge-trio.json
   (every configuration of the variants pass, dominated ones dropped);
2. the plan chosen at three accuracy floors (digits: its accuracy on the val
   split it was chosen on, and on the test split measured from out/ itself);
3. at one throughput target (the median of the front's rates): the
   accuracy-aware plan (`--min-fps`, most accurate at the target) against the
   accuracy-blind one (the fastest configuration: the fastest variant
   everywhere) and the fp32-only one (fp32 on every unit, the original model);
4. int8 vs fp32 on this machine's CPU: each int8 stage of the plan with the
   most int8 stages, against its fp32 form, on the stage's own inputs (one
   thread, graph optimizations on, as the boards run), median of --repeat;
   then whole zoo models (--int8-zoo) quantized by the same rule
   (edgec.backends.int8), or left fp32 where the rule says int8 loses;
5. the manifest's accuracy against a direct measurement of out/ on the test
   split, for a compile calibrated on the test split (must be within 0.5 pp).

Throughput is the cost model's prediction for the boards; only table 4 is timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import edgec
from edgec.accuracy import model_inputs, variant_session
from edgec.api import AccuracyOptions
from edgec.ir import Program
from edgec.passes.partition.capability import Capability
from edgec.passes.partition.global_partition import GlobalPartition
from edgec.passes.partition.local_partition import LocalPartition
from edgec.backends.neon import INT8_SPEEDUP
from edgec.passes.variants import Config, Variants, pareto_front, stage_runs
from edgec.pipeline import PassManager
from edgec.zoo import write_random_zoo_model

REPO = Path(__file__).resolve().parent.parent
TRIO = REPO / "samples" / "clusters" / "edge-trio.json"
DIGITS = REPO / "samples" / "digits"
FLOORS = {"digits_cnn": (0.93, 0.96, 0.99), "zoo": (0.80, 0.90, 1.00)}


def planned(model: Path) -> Program:
    program = edgec.api.analyze(model, TRIO)
    return PassManager([Capability(), GlobalPartition(), LocalPartition()], given=frozenset(
        {"cluster", "graph", "shapes", "groups", "costs"})).run(program)


SEARCHED: dict[str, tuple[list[Config], dict]] = {}


def search(model: Path, calib: Path, variants: dict[str, str]) -> tuple[Variants, list[Config]]:
    v = Variants(calibration=str(calib), user_variants=tuple(variants.items()))
    configs, measurers = v.search(planned(model))
    SEARCHED[model.stem] = (configs, measurers)
    return v, configs


def fmt(c: Config) -> str:
    return c.describe()


def front_table(name: str, configs: list[Config], metric: str) -> None:
    print(f"\n## {name}: accuracy vs predicted throughput on the trio ({len(configs)} distinct plans, front below)")
    print(f"| {metric} | fps | latency ms | plan |\n|---|---|---|---|")
    for c in pareto_front(configs):
        print(f"| {100 * c.accuracy:.2f}% | {c.fps:.1f} | {c.latency_ms:.2f} | {fmt(c)} |")


def comparison(name: str, v: Variants, configs: list[Config]) -> None:
    front = sorted(c.fps for c in pareto_front(configs))
    target = front[len(front) // 2]
    aware = Variants(calibration=v.calibration, min_fps=target).choose(configs, configs[0])
    blind = max(configs, key=lambda c: (c.fps, -c.latency_ms))
    fp32 = next(c for c in configs if not c.model and all(x == "fp32" for x in c.variants.values()))
    print(f"\n## {name}: at a throughput target of {target:.1f} fps (median of the front)")
    print("| plan | fps | accuracy | meets target | plan |\n|---|---|---|---|---|")
    for label, c in (("accuracy-aware", aware), ("accuracy-blind (fastest)", blind), ("fp32-only", fp32)):
        print(f"| {label} | {c.fps:.1f} | {100 * c.accuracy:.2f}% | {'yes' if c.fps >= target - 1e-9 else 'no'} | "
              f"{fmt(c)} |")
    print(f"aware vs fp32-only: {100 * (aware.fps / fp32.fps - 1):+.1f}% throughput, "
          f"{100 * (aware.accuracy - fp32.accuracy):+.2f} pp accuracy; aware vs blind: "
          f"{100 * (aware.fps / blind.fps - 1):+.1f}% throughput, {100 * (aware.accuracy - blind.accuracy):+.2f} pp "
          f"accuracy (Kanduri et al.: +41.5% performance, +5.2% accuracy over accuracy-blind)")


def direct_top1(out: Path, frames: Path) -> float:
    """top-1 of the sub-models in out/ on `frames`, chained as the manifest says, each computed as its board does
    (verify's own accuracy check, edgec.variant_checks.check_accuracy)."""
    from edgec.manifest import read_manifest
    from edgec.variant_checks import check_accuracy

    return check_accuracy(out, read_manifest(str(out)), str(frames)).accuracy


def digits_floors(tmp: Path, variants: dict[str, str]) -> None:
    print("\n## digits_cnn: the plan chosen at three floors (chosen on val, scored on the held-out test split)")
    print("| floor | fps | val top-1 (manifest) | test top-1 (out/ measured) | plan |\n|---|---|---|---|---|")
    for floor in FLOORS["digits_cnn"]:
        out = tmp / f"digits-{floor}"
        m = edgec.compile(DIGITS / "digits_cnn.onnx", TRIO, out, accuracy=AccuracyOptions(
            calibration=DIGITS / "digits_val.npz", accuracy_floor=floor, variants=variants)).manifest
        src = (m.accuracy or {}).get("source")
        plan = (f"{src['name']}: " if src else "") + " ".join(f"{s.name}@{s.device}.{s.unit}:{s.variant}" for s in m.stages)
        print(f"| {floor:.2f} | {m.predicted['throughput_fps']:.1f} | {100 * m.predicted['accuracy']:.2f}% | "
              f"{100 * direct_top1(out, DIGITS / 'digits_test.npz'):.2f}% | {plan} |")


def zoo_floors(name: str, v: Variants, configs: list[Config]) -> None:
    print(f"\n## {name}: the plan chosen at three floors (agreement with fp32)")
    print("| floor | fps | agreement | plan |\n|---|---|---|---|")
    for floor in FLOORS["zoo"]:
        try:
            c = Variants(calibration=v.calibration, accuracy_floor=floor).choose(configs, configs[0])
            print(f"| {floor:.2f} | {c.fps:.1f} | {100 * c.accuracy:.2f}% | {fmt(c)} |")
        except edgec.EdgecError as exc:
            print(f"| {floor:.2f} | - | - | {exc.message} |")


def manifest_vs_direct(tmp: Path, variants: dict[str, str]) -> None:
    print("\n## digits_cnn: manifest accuracy vs a direct measurement of out/ (compiled with --calib on the test split)")
    print("| floor | manifest top-1 | out/ measured | difference | within 0.5 pp |\n|---|---|---|---|---|")
    for floor in FLOORS["digits_cnn"]:
        out = tmp / f"direct-{floor}"
        m = edgec.compile(DIGITS / "digits_cnn.onnx", TRIO, out, accuracy=AccuracyOptions(
            calibration=DIGITS / "digits_test.npz", accuracy_floor=floor, variants=variants)).manifest
        got = direct_top1(out, DIGITS / "digits_test.npz")
        diff = 100 * abs(m.predicted["accuracy"] - got)
        print(f"| {floor:.2f} | {100 * m.predicted['accuracy']:.2f}% | {100 * got:.2f}% | {diff:.2f} pp | "
              f"{'yes' if diff <= 0.5 else 'NO'} |")


def median_run_ms(sess, feeds: list[dict], repeat: int, warmup: int = 5) -> float:
    """Median ms of `repeat` runs of `sess`, cycling through `feeds`, after `warmup` runs."""
    for _ in range(warmup):
        sess.run(None, feeds[0])
    samples = []
    for k in range(repeat):
        t = time.perf_counter()
        sess.run(None, feeds[k % len(feeds)])
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def int8_speed(repeat: int) -> None:
    """Each int8 CPU stage of each model's most-int8 plan against its fp32 form, on the stage's own inputs."""
    print(f"\n## int8 CPU stages vs their fp32 form on this machine: one thread, graph optimizations on, "
          f"median of {repeat} runs")
    print("| model | stage (groups) | fp32 ms | int8 ms | fp32 / int8 |\n|---|---|---|---|---|")
    ratios = []
    for name, (configs, measurers) in SEARCHED.items():
        original = [c for c in configs if not c.model]
        config = max(original, key=lambda c: (sum(s.variant == "int8" for s in c.program.stages), c.fps))
        measurer = measurers[""]
        for run in stage_runs(config.program, measurer.model):
            if run.variant != "int8":
                continue
            names = [i.name for i in run.model.graph.input]
            acts = measurer.activations(names)
            feeds = [{n: acts[n][i] for n in names} for i in range(len(acts[names[0]]))]
            # graph optimizations on for both, as on the boards
            times = {label: median_run_ms(variant_session(model, "int8"), feeds, repeat)
                     for label, model in (("fp32", run.model), ("int8", measurer.variant_model(run)))}
            ratios.append(times["fp32"] / times["int8"])
            print(f"| {name} | {run.key} | {times['fp32']:.3f} | {times['int8']:.3f} | {ratios[-1]:.2f}x |")
    if ratios:
        print(f"median fp32 / int8 over the stages: {statistics.median(ratios):.2f}x "
              f"(the cost model assumes {INT8_SPEEDUP:.2f}x on compute-bound groups, from ncnn on the Pi 4)")


def int8_whole_models(names: list[str], repeat: int, tmp: Path) -> None:
    """Whole zoo models as edgec.backends.int8 quantizes them, against fp32, on seeded random frames."""
    from edgec.backends.int8 import INT8_SESSION, dense_macs, int8_model, worth_quantizing
    from edgec.runtime.session import inference_session

    print(f"\n## whole zoo models, int8 (edgec.backends.int8's rule) vs fp32 on this machine: one thread, "
          f"median of {repeat} runs")
    print("| model | dense MMACs | int8 | fp32 ms | int8 ms | fp32 / int8 |\n|---|---|---|---|---|---|")
    for name in names:
        model = onnx.load(str(write_random_zoo_model(name, tmp / f"{name}-int8.onnx")))
        rng = np.random.default_rng(0)
        feeds = [{i.name: rng.standard_normal(i.shape).astype(i.dtype) for i in model_inputs(model)} for _ in range(8)]
        macs = dense_macs(model) / 1e6
        if not worth_quantizing(dense_macs(model), dense_macs(model, quantized_only=False)):
            print(f"| {name} | {macs:.0f} | stays fp32 (rule) | | | |")
            continue
        times = {label: median_run_ms(inference_session(m.SerializeToString(), {
            "graph_optimization_level": "all", **settings}, 1), feeds, repeat)
            for label, m, settings in (("fp32", model, {}), ("int8", int8_model(model, feeds), INT8_SESSION))}
        print(f"| {name} | {macs:.0f} | quantized | {times['fp32']:.2f} | {times['int8']:.2f} | "
              f"{times['fp32'] / times['int8']:.2f}x |")


def random_calibration(model: Path, path: Path, frames: int) -> Path:
    m = onnx.load(str(model), load_external_data=False)
    rng = np.random.default_rng(0)
    np.savez(path, **{i.name: rng.standard_normal((frames, *i.shape)).astype(i.dtype)
                      for i in model_inputs(onnx.shape_inference.infer_shapes(m))})
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default="squeezenet,shufflenet")
    ap.add_argument("--frames", type=int, default=16, help="random calibration frames per zoo model")
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--int8-zoo", default="squeezenet,shufflenet,resnet50,inception_v1,densenet121",
                    help="zoo models timed whole, int8 vs fp32")
    args = ap.parse_args(argv)
    widths = {"w50": str(DIGITS / "digits_cnn_w50.onnx"), "w25": str(DIGITS / "digits_cnn_w25.onnx")}
    with tempfile.TemporaryDirectory(prefix="edgec-variants-") as tmpdir:
        tmp = Path(tmpdir)
        v, configs = search(DIGITS / "digits_cnn.onnx", DIGITS / "digits_val.npz", widths)
        front_table("digits_cnn (val split)", configs, "top-1")
        digits_floors(tmp, widths)
        comparison("digits_cnn", v, configs)
        zoo = {}
        for name in [z for z in args.zoo.split(",") if z]:
            path = write_random_zoo_model(name, tmp / f"{name}.onnx")
            zoo[name] = path
            calib = random_calibration(path, tmp / f"{name}.npz", args.frames)
            zv, zconfigs = search(path, calib, {})
            front_table(f"{name} (random weights, {args.frames} random frames)", zconfigs, "agreement")
            zoo_floors(name, zv, zconfigs)
            comparison(name, zv, zconfigs)
        int8_speed(args.repeat)
        int8_whole_models([z for z in args.int8_zoo.split(",") if z], max(10, args.repeat // 10), tmp)
        manifest_vs_direct(tmp, widths)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
