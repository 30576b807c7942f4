"""Spatial slices: one frame's latency and energy, predicted per zoo CNN on the trio and measured on two cores.

    python benchmarks/spatial.py                      # both tables
    python benchmarks/spatial.py --predicted [--models resnet50,vgg19]
    python benchmarks/spatial.py --measured [--frames 20] [--model resnet50.onnx]

Predicted (samples/clusters/edge-trio.json, every zoo CNN with random weights):
single-frame latency and energy of the best single unit (the whole model on
it, the source's input sent there and the outputs back), of the pipeline plan
(`--strategy pipeline --objective latency`), of the default hierarchical plan
under `--objective latency`, and of the spatial plan (`--strategy spatial
--objective latency`), with the spatial plan's margins beside the published
ones: CoEdge (2020) -25.5% to -66.9% energy, HiDP (2024) -38% latency and -46%
energy against single-level schemes. These are the cost model's predictions,
the ones that chose the plans: they show consistency, not quality.

Measured (this machine, `edgec run --local` machinery): ResNet-50 with random
weights compiled with `--strategy spatial --objective latency` for two
"host" devices of one core each (cores 0 and 1: two processes, TCP loopback
between them), and for one host device with two one-core units (one process:
the slices are two pinned worker threads and every hop is in-process), against
the best one-unit plan (one host device on core 0, and one on core 1: the
faster of the two; the two vCPUs differ, by up to 30% at times). Beside each spatial plan,
its transfer-free bound: the sum over its steps of the slowest stage, each
stage's sub-model timed alone (one thread, median of --frames), which no
transport can beat. Both clusters name a profile of one core of
this machine measured by `edgec profile`'s micro-benchmarks (~90 s the first
time, then kept in the work folder, `--work`; `--profile FILE` names another),
so the plan trades halo work and transfers against this machine's speeds. Each stage runs ONNX Runtime with one thread,
one frame in flight at a time, median of `--frames` frames after a warm-up; the setups take one frame each in
turn, so that the machine's slow spells (it is a shared VM) hit all of them alike.
Beside it, in the same run, ONNX Runtime's own speed-up from one to two intra-op
threads on the whole model (a bare session, no transport).

Ceiling (`--ceiling`, this machine): what row slicing itself can give, whatever
the runtime. The model's longest spatially local run is cut into k steps at
evenly spaced cuts (k = 1, 2, 4, ...), each step sliced into two bands by the
compiler's own rewrite (edgec.passes.partition.slicing); each band's sub-model
gets the step's whole input, as at run time. The two bands of every step run at
once, on two threads pinned to cores 0 and 1 (one ONNX Runtime thread each), a
barrier between steps, no transport; what precedes and follows the run runs on
core 0. Beside it: the unsplit step's time against its two bands' (how much
work the halos and the smaller tensors add), the whole model cut into the same
k steps plus what precedes and follows them, unsplit, on one core (what each cut
into another session costs), ONNX Runtime's 1 -> 2 thread
speed-up, and the two cores' capacity: two whole-model frames run at once, one
per core, against one frame alone (2.00x if the cores do not slow each other;
no split of one frame can beat it), all in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs
from rich.console import Console
from rich.table import Table

import edgec
from edgec.api import analyze
from edgec.costmodel.energy import ActiveStage, plan_energy_mj
from edgec.costmodel.profiler import write_profile
from edgec.costmodel.timing import random_feeds
from edgec.costmodel.transfer import transfer_ms
from edgec.ir import tensor_nbytes
from edgec.passes.partition.halo import split_rows
from edgec.passes.partition.slicing import find_run, slice_run
from edgec.passes.partition.spatial import copy_graph
from edgec.passes.partition.spatial_search import SearchSpace
from edgec.runtime.driver import Driver
from edgec.runtime.frames import random_frames
from edgec.runtime.local import LocalCluster
from edgec.runtime.pipeline import read_pipeline
from edgec.runtime.session import inference_session
from edgec.zoo import ZOO, write_random_zoo_model

REPO = Path(__file__).resolve().parent.parent
TRIO = REPO / "samples" / "clusters" / "edge-trio.json"
PUBLISHED = "CoEdge: energy -25.5% to -66.9%; HiDP: latency -38%, energy -46% (vs single-level schemes)"


def best_single_unit(model: Path) -> tuple[str, float, float | None]:
    """(unit, latency ms, energy mJ) of the whole model on the unit that runs it fastest, with its transfers."""
    program = analyze(model, TRIO)
    cluster = program.cluster
    in_bytes = sum(tensor_nbytes(t) for t in program.graph.inputs)
    out_bytes = sum(tensor_nbytes(t) for t in program.graph.outputs)
    best = None
    for device, unit in cluster.units():
        uid = f"{device.name}.{unit.name}"
        ms = sum(program.group_ms(g, uid) for g in program.groups)
        if not np.isfinite(ms):
            continue
        net = transfer_ms(cluster, in_bytes, cluster.source, device.name) + transfer_ms(cluster, out_bytes,
                                                                                      device.name, cluster.sink)
        if best is None or ms + net < best[1]:
            remote = (in_bytes if device.name != cluster.source else 0) + (out_bytes if device.name != cluster.sink else 0)
            energy = plan_energy_mj(cluster, [ActiveStage(device.name, unit.name, ms)], ms, remote)
            best = (uid, ms + net, energy)
    assert best is not None
    return best


def predicted(models: list[str], console: Console) -> None:
    table = Table("model", "best unit", "ms", "mJ", "pipeline ms", "mJ", "hierarchical ms", "mJ", "spatial ms", "mJ",
                  "slices (unit: rows)", "spatial vs best unit", "vs pipeline", "vs hierarchical",
                  title="predicted single-frame latency and energy on edge-trio (--objective latency)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in models:
            model = write_random_zoo_model(name, folder / f"{name}.onnx")
            unit, unit_ms, unit_mj = best_single_unit(model)
            plans = {}
            for strategy in ("pipeline", "hierarchical", "spatial"):
                try:
                    result = edgec.compile(model, TRIO, folder / f"{name}-{strategy}", strategy=strategy,
                                           objective="latency")
                except edgec.errors.EdgecError as exc:
                    console.print(f"{name} {strategy}: {exc}", highlight=False)
                    plans[strategy] = None
                    continue
                plans[strategy] = result.manifest
            sp = plans["spatial"]
            slices = ", ".join(f"{s.device}.{s.unit}: {s.slice['rows'][0]}-{s.slice['rows'][1]}/{s.slice['of']}"
                               for s in (sp.stages if sp else []) if s.slice)

            def cell(m, key):
                v = None if m is None else m.predicted.get(key)
                return "-" if v is None else f"{v:.1f}"

            def margin(base_ms, base_mj):
                if sp is None:
                    return "-"
                lat = f"{100 * (sp.predicted['latency_ms'] / base_ms - 1):+.0f}% ms"
                e = sp.predicted.get("energy_mj")
                return lat + (f", {100 * (e / base_mj - 1):+.0f}% mJ" if e is not None and base_mj else "")

            table.add_row(name, unit, f"{unit_ms:.1f}", "-" if unit_mj is None else f"{unit_mj:.0f}",
                          cell(plans["pipeline"], "latency_ms"), cell(plans["pipeline"], "energy_mj"),
                          cell(plans["hierarchical"], "latency_ms"), cell(plans["hierarchical"], "energy_mj"),
                          cell(sp, "latency_ms"), cell(sp, "energy_mj"), slices, margin(unit_ms, unit_mj),
                          *[margin(plans[k].predicted["latency_ms"], plans[k].predicted.get("energy_mj"))
                            if plans[k] else "-" for k in ("pipeline", "hierarchical")])
            console.print(f"  {name} done", highlight=False)
    console.print(table)
    console.print(f"published margins: {PUBLISHED}", highlight=False)


WORK = Path(tempfile.gettempdir()) / "edgec-spatial-bench"


def one_core_profile(work: Path, console: Console) -> Path:
    """A profile of one core (core 0) of this machine, measured once and kept in `work`."""
    path = work / "host-1core.json"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        write_profile(work / "host-1core.json.tmp", {"cpu": (1, [0])})
        (work / "host-1core.json.tmp").replace(path)
        console.print(f"profile of one core measured in {time.perf_counter() - t0:.0f} s: {path}", highlight=False)
    return path


def _hosts(cores: list[int], profile: Path) -> dict:
    return {"name": f"host-{len(cores)}x1core",
            "devices": [{"name": f"core{c}", "type": "host", "profile": str(profile.resolve()),
                         "units": {"cpu": {"cores": [c]}}} for c in cores],
            "network": {"bandwidth_mbps": 16000, "latency_ms": 0.05},
            "source": f"core{cores[0]}", "sink": f"core{cores[0]}"}


def _board(profile: Path, folder: Path) -> dict:
    """One host device with two one-core units, cpu (core 0) and cpu1 (core 1), both predicted by the one-core
    profile (the two vCPUs are alike)."""
    data = json.loads(profile.read_text())
    data["units"] = {"cpu": data["units"]["cpu"], "cpu1": data["units"]["cpu"]}
    two = folder / "host-2units-profile.json"
    two.write_text(json.dumps(data))
    return {"name": "host-2units", "devices": [{"name": "board", "type": "host", "profile": str(two.resolve()),
            "units": {"cpu": {"cores": [0]}, "cpu1": {"kind": "cpu", "gflops": 20.0, "backend": "neon",
                                                         "cores": [1]}}}],
            "network": {"bandwidth_mbps": 16000, "latency_ms": 0.05}, "source": "board", "sink": "board"}


def _transfer_free_ms(out: Path, n: int, warmup: int) -> float:
    """The sum over the plan's steps of its slowest stage, each sub-model timed alone (one thread)."""
    from edgec.manifest import read_manifest

    slowest = []
    for step in read_manifest(str(out)).steps():
        medians = []
        for stage in step:
            sess = inference_session(str(out / stage.model), {"intra_op_num_threads": 1})
            feeds = random_feeds(sess)
            for _ in range(warmup):
                sess.run(None, feeds)
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                sess.run(None, feeds)
                times.append(time.perf_counter() - t0)
            medians.append(statistics.median(times))
        slowest.append(max(medians))
    return 1e3 * sum(slowest)


def _interleaved(outs: dict[str, Path], model: Path, frames: list, n: int, warmup: int
                 ) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Per-frame latency (s) of every plan in `outs` run by `edgec run --local`'s machinery, and of the whole
    model in bare ONNX Runtime sessions of 1 and 2 intra-op threads ("ort1", "ort2"); one frame of each in
    turn, so that the machine's slow spells hit all of them alike. Also each plan's outputs."""
    with contextlib.ExitStack() as stack:
        drivers = {}
        for tag, out in outs.items():
            cluster = stack.enter_context(LocalCluster(str(out)))
            drivers[tag] = Driver(str(out), cluster.deployment, watch=cluster.problems, max_in_flight=1)
        sessions = {f"ort{t}": inference_session(str(model), {"intra_op_num_threads": t}) for t in (1, 2)}
        lat: dict[str, list[float]] = {tag: [] for tag in [*outs, *sessions]}
        got: dict[str, list] = {tag: [] for tag in outs}
        for k in range(warmup + n):
            frame = frames[k % len(frames)]
            for tag, driver in drivers.items():
                result = driver.run(lambda _: frame, 1)
                assert result.ok, result.summary()
                if k >= warmup:
                    lat[tag].append(result.latencies_s[0])
                    got[tag].append(result.outputs[0])
            for tag, sess in sessions.items():
                t0 = time.perf_counter()
                sess.run(None, frame)
                if k >= warmup:
                    lat[tag].append(time.perf_counter() - t0)
    return lat, got


def measured(model: Path | None, n: int, warmup: int, profile: Path, console: Console) -> None:
    setups = {"one": ("one-unit plan, core 0", "hierarchical"),
              "one1": ("one-unit plan, core 1", "hierarchical"),
              "two": ("spatial plan, two one-core devices (cores 0, 1; TCP loopback)", "spatial"),
              "board": ("spatial plan, one device with two one-core units (in-process)", "spatial")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = model or write_random_zoo_model("resnet50", folder / "resnet50.onnx")
        outs, pred = {}, {}
        for tag, (_, strategy) in setups.items():
            spec = folder / f"{tag}.json"
            spec.write_text(json.dumps(_board(profile, folder) if tag == "board" else
                                       _hosts({"one": [0], "one1": [1]}.get(tag, [0, 1]), profile)))
            result = edgec.compile(model, spec, folder / tag, strategy=strategy, objective="latency")
            outs[tag], pred[tag] = result.out_dir, result.manifest.predicted["latency_ms"]
        plan = read_pipeline(str(outs["two"]))
        frames = random_frames(plan.inputs, 4, seed=0)
        lat, got = _interleaved(outs, model, frames, n, warmup)
        bound = {tag: _transfer_free_ms(outs[tag], n, warmup) for tag in ("two", "board")}
        ort1, ort2 = statistics.median(lat.pop("ort1")), statistics.median(lat.pop("ort2"))
        for tag in ("one1", "two", "board"):  # the sliced plans compute what the one-unit plan does
            for a, b in zip(got["one"], got[tag]):
                for k, exp in a.items():
                    assert float(np.abs(b[k] - exp).max()) <= 1e-4 * (float(exp.max() - exp.min()) or 1.0), k
        steps = {tag: len({s.step for s in read_pipeline(str(outs[tag])).stages}) for tag in setups}
        slices = [s for s in plan.stages if s.slice]
    m = {tag: 1e3 * statistics.median(v) for tag, v in lat.items()}
    base = min(m["one"], m["one1"])  # the best one-unit plan: the two vCPUs' speeds differ, and vary
    table = Table("setup", "steps", "median ms / frame", "speed-up", "transfer-free bound ms (speed-up)",
                  "predicted ms", title=f"{model.name}: one frame at a time, median of {n} frames after {warmup}, "
                  "one ONNX Runtime thread per unit")
    for tag, (label, _) in setups.items():
        b = f"{bound[tag]:.1f} ({base / bound[tag]:.2f}x)" if tag in bound else ""
        table.add_row(label + ", run --local", str(steps[tag]), f"{m[tag]:.1f}", f"{base / m[tag]:.2f}x", b,
                      f"{pred[tag]:.1f}")
    table.add_row("ONNX Runtime whole model, 1 intra-op thread (bare session)", "", f"{1e3 * ort1:.1f}", "1.00x",
                  "", "")
    table.add_row("ONNX Runtime whole model, 2 intra-op threads (bare session)", "", f"{1e3 * ort2:.1f}",
                  f"{ort1 / ort2:.2f}x", "", "")
    console.print(table)
    console.print("slices (two devices): " + "; ".join(
        f"{s.name}@{s.device}.{s.unit} rows {s.slice['rows'][0]}-{s.slice['rows'][1]} of {s.slice['of']} of "
        f"{s.slice['tensor']} (halo {s.slice['halo_rows'][0]}+{s.slice['halo_rows'][1]} rows of {s.slice['input']}, "
        f"{s.slice['redundant_flops'] / 1e6:.0f} MFLOP redundant)" for s in slices), highlight=False)
    best = max(("two", "board"), key=lambda t: base / m[t])
    console.print(f"spatial vs the best one-unit plan: {base / m[best]:.2f}x at best (target >= 1.5x); transfer-free "
                  f"bound {base / min(bound.values()):.2f}x; ONNX Runtime 1 -> 2 threads: {ort1 / ort2:.2f}x",
                  highlight=False)


def _session_of(program, nodes: list, inputs: list, outputs: list):
    """A one-thread ONNX Runtime session of `nodes` of the program's graph, cut at `inputs` and `outputs`."""
    graph = gs.Graph(nodes=list(nodes), inputs=list(inputs), outputs=list(outputs), opset=program.graph.opset)
    model = replace(program, graph=graph).to_onnx()
    sess = inference_session(model.SerializeToString(), {"intra_op_num_threads": 1})
    return sess, random_feeds(sess)


def _at_once_s(parts: list[tuple], steps: list[list[tuple]], tail: list[tuple]) -> float:
    """Seconds for one frame: `parts` on core 0, then each step's two bands at once (cores 0 and 1, a barrier
    between steps), then `tail` on core 0."""
    barrier = threading.Barrier(2)
    took: list[float] = []

    def work(core: int) -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {core})
        barrier.wait()
        t0 = time.perf_counter()
        for sess, feeds in parts if core == 0 else []:
            sess.run(None, feeds)
        for bands in steps:
            barrier.wait()
            sess, feeds = bands[core]
            sess.run(None, feeds)
        barrier.wait()
        for sess, feeds in tail if core == 0 else []:
            sess.run(None, feeds)
        if core == 0:
            took.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=work, args=(c,)) for c in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return took[0]


def ceiling(model: Path | None, n: int, warmup: int, profile: Path, console: Console, min_rows: int = 4) -> None:

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = model or write_random_zoo_model("resnet50", folder / "resnet50.onnx")
        spec = folder / "two.json"
        spec.write_text(json.dumps(_hosts([0, 1], profile)))
        program = analyze(model, spec)
        space = SearchSpace(program)
        a0 = min(a for a, _ in space.runs)
        cuts = sorted({b for a, b in space.runs if a == a0 and space.exit_height(b) >= min_rows} | {a0})
        b0 = cuts[-1]
        tensors = program.graph.tensors()
        live = lambda p: tensors[space.lives[p][0]]  # noqa: E731
        head = _session_of(program, space.run_nodes(0, a0), list(program.graph.inputs), [live(a0)]) if a0 else None
        tail = _session_of(program, space.run_nodes(b0, len(space.order)), [live(b0)], list(program.graph.outputs))
        parts, tails = ([head] if head else []), [tail]
        whole = inference_session(str(model), {"intra_op_num_threads": 1})
        feeds = random_feeds(whole)
        pair = inference_session(str(model), {"intra_op_num_threads": 2})
        other = inference_session(str(model), {"intra_op_num_threads": 1})

        def serial(runs: list[tuple]):
            def go() -> float:
                t0 = time.perf_counter()
                for sess, f in runs:
                    sess.run(None, f)
                return time.perf_counter() - t0
            return go

        timers = {"ort1": serial([(whole, feeds)]), "ort2": serial([(pair, feeds)]),
                  "apart": lambda: _at_once_s([], [[(whole, feeds), (other, feeds)]], []),
                  "around": serial(parts + tails)}
        counts = []
        for k in (1, 2, 4, 8, 16, 32):
            if k > len(cuts) - 1:
                break
            picks = sorted({cuts[round(i * (len(cuts) - 1) / k)] for i in range(k + 1)})
            steps, unsplit = [], []
            for a, b in zip(picks[:-1], picks[1:]):
                unsplit.append(_session_of(program, space.run_nodes(a, b), [live(a)], [live(b)]))
                graph = copy_graph(program.graph)
                by_name = {nd.name: nd for nd in graph.nodes}
                run = find_run(graph, [by_name[nd.name] for nd in space.run_nodes(a, b)])
                rewrite = slice_run(graph, run, split_rows(run.height, [1, 1]), program.opset)
                trial = replace(program, graph=graph)
                steps.append([_session_of(trial, nodes, [run.entry], [rewrite.merge.inputs[j]])
                              for j, nodes in enumerate(rewrite.branches)])
            k = len(steps)
            counts.append(k)
            timers[f"at once {k}"] = lambda st=steps: _at_once_s(parts, st, tails)
            timers[f"unsplit {k}"] = serial(unsplit)
            timers[f"bands {k}"] = serial([band for bands in steps for band in bands])
        took: dict[str, list[float]] = {name: [] for name in timers}
        for r in range(warmup + n):  # one frame of each in turn: the machine's slow spells hit all alike
            for name, timer in timers.items():
                dt = timer()
                if r >= warmup:
                    took[name].append(dt)
        ms = {name: 1e3 * statistics.median(v) for name, v in took.items()}
    one, two, apart = ms["ort1"], ms["ort2"], ms["apart"]
    table = Table("steps of two bands", "ms / frame, bands at once", "speed-up vs 1 thread",
                  "two bands' time / unsplit step", "unsplit, cut into k+2 sessions: ms (per cut)", title=f"{model.name}: the ceiling of row slicing on two cores "
                  f"(no transport; median of {n} frames, each setup in turn)")
    for k in counts:
        cut = ms[f"unsplit {k}"] + ms["around"]
        table.add_row(str(k), f"{ms[f'at once {k}']:.1f}", f"{one / ms[f'at once {k}']:.2f}x",
                      f"{ms[f'bands {k}'] / ms[f'unsplit {k}']:.2f}", f"{cut:.1f} ({(cut - one) / (k + 1):+.2f})")
    table.add_row("ONNX Runtime whole model, 1 -> 2 intra-op threads", f"{one:.1f} -> {two:.1f}", f"{one / two:.2f}x",
                  "", "")
    table.add_row("two cores' capacity: two whole-model frames at once (one per core)", f"{apart:.1f} for 2",
                  f"{2 * one / apart:.2f}x", "", "")
    console.print(table)
    best = min(counts, key=lambda k: ms[f"at once {k}"])
    console.print(f"row slicing at best: {one / ms[f'at once {best}']:.2f}x with {best} steps (target >= 1.5x); ONNX "
                  f"Runtime 1 -> 2 threads: {one / two:.2f}x; two frames at once on the two cores: {2 * one / apart:.2f}x "
                  f"the frames of one core", highlight=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predicted", action="store_true", help="only the predicted table")
    ap.add_argument("--measured", action="store_true", help="only the measured two-core check")
    ap.add_argument("--ceiling", action="store_true", help="only the ceiling of row slicing on two cores")
    ap.add_argument("--models", default=",".join(ZOO), help="zoo models for the predicted table")
    ap.add_argument("--model", type=Path, help="the measured check's model (default: ResNet-50, random weights)")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--work", type=Path, default=WORK, help=f"where the measured profile is kept (default {WORK})")
    ap.add_argument("--profile", type=Path, help="a profile file with a one-core unit 'cpu' (default: measured "
                    "once on core 0 and kept in --work)")
    args = ap.parse_args()
    console = Console(width=240)
    both = not args.predicted and not args.measured and not args.ceiling
    if args.predicted or both:
        predicted([m for m in args.models.split(",") if m], console)
    if args.measured or both:
        profile = args.profile or one_core_profile(args.work, console)
        measured(args.model, args.frames, args.warmup, profile, console)
    if args.ceiling or both:
        ceiling(args.model, args.frames, args.warmup, args.profile or one_core_profile(args.work, console), console)


if __name__ == "__main__":
    main()
