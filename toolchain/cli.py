"""The `edgec` command line: a thin layer over the library API.

User errors (EdgecError) print one line `edgec: <what>` and exit 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

import edgec
from edgec.errors import EdgecError
from edgec.manifest import OBJECTIVES
from edgec.progress import Counter, progress_console

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Split one ONNX model across a cluster of edge boards.")
console = Console()
err_console = Console(stderr=True)

# The choices of compile's options: enums, so the help lists them and shell completion offers them. A new
# value is one entry in its tuple (objectives: edgec.manifest.OBJECTIVES, which the manifest also checks;
# strategies here, as the partitioner's own list would load the compiler for every command; tests/test_cli.py
# holds both to what the library accepts).
Objective = Enum("Objective", {name: name for name in OBJECTIVES}, type=str)  # type: ignore[misc]
STRATEGIES = ("hierarchical", "data-parallel", "pipeline", "spatial", "optimal", "random", "greedy", "even", "single",
              "two-way")
Strategy = Enum("Strategy", {name: name for name in STRATEGIES}, type=str)  # type: ignore[misc]


def _version(show: bool) -> None:
    if show:
        console.print(f"edgec {edgec.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", metavar="", callback=_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """Split one ONNX model across a cluster of edge boards."""


@app.command("compile")
def compile_cmd(
    model: Path = typer.Argument(..., metavar="MODEL", help="the .onnx model"),
    target: Path = typer.Option(..., "-t", "--target", metavar="CLUSTER.JSON", help="the cluster to compile for"),
    out: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="output folder"),
    objective: Objective = typer.Option("throughput", help="what to minimise: throughput (the pipeline's "
                                        "bottleneck), latency (one inference end to end), or energy (per frame, "
                                        "under --min-fps / --max-latency-ms)"),
    strategy: Strategy = typer.Option("hierarchical", help="hierarchical (boards and units jointly, every unit a "
                                      "concurrent worker, replicas where they pay), data-parallel (whole-model "
                                      "replicas), pipeline (one segment per board), spatial (a frame's feature maps "
                                      "sliced across units), or a research baseline"),
    min_fps: Optional[float] = typer.Option(None, "--min-fps", metavar="FPS", help="refuse plans slower than this; "
                                            "with --calib and no --accuracy-floor: the most accurate plan at this "
                                            "frame rate or more"),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", metavar="MS",
                                                   help="refuse plans slower per frame end to end than this"),
    input_shape: List[str] = typer.Option([], "--input-shape", metavar="NAME=DIMS",
                                          help="pin dynamic dims, e.g. images=1x3x224x224 (repeatable)"),
    dump_ir: Optional[Path] = typer.Option(None, "--dump-ir", metavar="DIR", help="write NN-<pass>.txt/.json after "
                                           "each pass"),
    print_ir_after: List[str] = typer.Option([], "--print-ir-after", metavar="PASS",
                                             help="print the IR after PASS, or 'all' (repeatable)"),
    time_passes: bool = typer.Option(False, "--time-passes", metavar="", help="print each pass's wall time"),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", help="no progress display"),
    calib: Optional[Path] = typer.Option(None, "--calib", metavar="FILE.npz",
                                         help="calibration frames: one N x shape array per model input, optional "
                                         "'labels' (N class indices)"),
    accuracy_floor: Optional[float] = typer.Option(None, "--accuracy-floor", metavar="X",
                                                   help="fastest plan whose measured accuracy (top-1 with labels, "
                                                   "else agreement with fp32) is at least this fraction"),
    variant: List[str] = typer.Option([], "--variant", metavar="NAME=MODEL.onnx",
                                      help="a variant of the whole model with the same inputs and outputs "
                                      "(repeatable)"),
) -> None:
    """Compile MODEL for the cluster into per-device sub-models and a manifest."""
    from edgec.passes.shape_inference import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in input_shape)
    from edgec import api  # the compiler side loads only for the commands that need it (boards serve without it)

    accuracy = api.AccuracyOptions(calibration=calib, accuracy_floor=accuracy_floor,
                                   variants=dict(_variant(v) for v in variant))
    result = api.compile(model, target, out, objective=objective.value, strategy=strategy.value, min_fps=min_fps,
                         max_latency_ms=max_latency_ms, input_shapes=shapes, accuracy=accuracy, dump_ir=dump_ir,
                         print_ir_after=print_ir_after,
                         print_ir=lambda name, text: console.print(f"// IR after {name}\n{text}", markup=False,
                                                                   highlight=False),
                         progress=progress_console(console, quiet))
    m = result.manifest
    console.print(f"wrote {out}/: {len(m.stages)} stages on {len({s.device for s in m.stages})} devices; "
                  f"predicted latency {m.predicted['latency_ms']:.2f} ms, bottleneck {m.predicted['bottleneck_ms']:.2f} ms "
                  f"({m.predicted['throughput_fps']:.1f} fps){_energy(m.predicted)}"
                  + (f"; accuracy {m.predicted['accuracy']:.4f} ({m.accuracy['metric']})"
                     if m.predicted.get("accuracy") is not None and m.accuracy else ""), highlight=False)
    if time_passes:
        table = Table("pass", "ms", "changed", title="pass timings")
        for t in result.timings:
            table.add_row(t.name, f"{t.ms:.1f}", "yes" if t.changed else "no")
        table.add_row("total", f"{sum(t.ms for t in result.timings):.1f}", "")
        console.print(table)


@app.command("verify")
def verify_cmd(
    out: Path = typer.Argument(..., metavar="OUT", help="folder written by edgec compile"),
    model: Optional[Path] = typer.Option(None, "--model", metavar="MODEL",
                                         help="the original model (default: the path in the manifest)"),
    inputs: Optional[Path] = typer.Option(None, "--inputs", metavar="FILE.npz",
                                          help=".npz of real inputs, one array per graph input "
                                          "(default: one seeded random frame)"),
    seed: int = typer.Option(0, metavar="N", help="seed for random inputs"),
    input_range: Optional[str] = typer.Option(None, "--input-range", metavar="LOW,HIGH",
                                              help="LOW,HIGH: random float inputs uniform "
                                              "in this range (default: standard normal)"),
    rtol: Optional[float] = typer.Option(None, metavar="X", help="relative tolerance per element [default: 1e-4]"),
    atol: Optional[float] = typer.Option(None, metavar="X", help="absolute tolerance per element [default: 1e-5]"),
    calib: Optional[Path] = typer.Option(None, "--calib", metavar="FILE.npz",
                                         help="calibration frames the plan's accuracy is checked on "
                                         "(default: the file the manifest names)"),
) -> None:
    """Run the original and the chained sub-models; PASS/FAIL per output (exit 1 on FAIL).

    An element passes when |got - expected| <= atol + rtol * |expected| (Polygraphy's comparison)."""
    from edgec import api

    tolerances = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}
    result = api.verify(out, model=model, inputs=inputs, seed=seed, input_range=_range(input_range),
                        calibration=calib, **tolerances)
    table = Table("output", "max abs err", "max rel err", "mismatched", "worst at", "result",
                  title=f"verify {out}")
    for o in result.outputs:
        table.add_row(o.name, f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}", f"{o.mismatches} of {o.size}",
                      str(list(o.worst_index)), "[green]PASS[/]" if o.passed else "[red]FAIL[/]")
    if result.outputs:
        console.print(table)
        console.print(f"per element: |got - expected| <= {result.atol:g} + {result.rtol:g} x |expected|",
                      highlight=False, soft_wrap=True)
    else:
        console.print("int8 stages: outputs are judged by the plan's accuracy, not element by element", highlight=False)
    if result.stages:
        stages = Table("stage", "variant", "measure", "value", "limit", "result", title="stages at their variant's tolerance")
        for c in result.stages:
            stages.add_row(c.stage, c.variant, c.measure, f"{c.value:.4g}", f"{c.limit:.4g}",
                           "[green]PASS[/]" if c.passed else "[red]FAIL[/]")
        console.print(stages)
    if result.accuracy is not None:
        a = result.accuracy
        console.print(f"plan accuracy ({a.metric}, {a.frames} calibration frames): {a.accuracy:.4f}, floor {a.floor:.4f}"
                      f" (manifest: {a.manifest_accuracy}) {'PASS' if a.passed else 'FAIL'}", highlight=False)
    console.print("PASS" if result.passed else "FAIL", highlight=False)
    if not result.passed:
        raise typer.Exit(1)


def _variant(text: str) -> tuple:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise EdgecError(f"--variant '{text}': expected NAME=model.onnx")
    return name, path


def _range(text: Optional[str]) -> Optional[tuple]:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise EdgecError(f"--input-range '{text}': expected LOW,HIGH, e.g. 0,1") from None
    return low, high


@app.command("inspect")
def inspect_cmd(out: Path = typer.Argument(..., metavar="OUT", help="folder written by edgec compile")) -> None:
    """Show the compiled plan as a table."""
    from edgec.manifest import read_manifest

    m = read_manifest(out)
    table = Table("step", "stage", "device", "unit", "cores", "parallel", "weight", "backend", "variant",
                  "pred ms", "MB",
                  title=f"{m.source_model['path']} -> {m.cluster.get('name', '')} ({m.objective})")
    for k, s in enumerate(m.stages):
        table.add_row(str(k if s.step is None else s.step), s.name, s.device, s.unit, ",".join(map(str, s.cores)),
                      s.parallel or "", "" if s.weight is None else f"{s.weight:.3f}", s.backend, s.variant,
                      f"{s.predicted_ms:.2f}", f"{s.memory_bytes / 2**20:.1f}")
    console.print(table)
    slices = [s for s in m.stages if s.slice]
    if slices:
        st = Table("stage", "step", "unit", "rows owned", "of", "input rows", "halo rows (above+below)", "MFLOP", "redundant MFLOP",
                   title="spatial slices")
        for s in slices:
            sl = s.slice or {}
            st.add_row(s.name, str(s.step), f"{s.device}.{s.unit}", "{}..{}".format(*sl["rows"]),
                       f"{sl['of']} of {sl['tensor']}", "{}..{} of {}".format(sl["input_rows"][0], sl["input_rows"][1],
                                                                             sl["input"]),
                       "{}+{}".format(*sl["halo_rows"]), f"{sl['flops'] / 1e6:.1f}",
                       f"{sl['redundant_flops'] / 1e6:.1f}")
        console.print(st)
    tt = Table("from", "to", "tensors", "KB", "pred ms", title="transfers")
    for t in m.transfers:
        tt.add_row(f"{t.src}@{t.src_device}", f"{t.dst}@{t.dst_device}", str(len(t.tensors)), f"{t.bytes / 1024:.1f}",
                   f"{t.predicted_ms:.2f}")
    console.print(tt)
    p = m.predicted
    console.print(f"predicted: latency {p['latency_ms']:.2f} ms, bottleneck {p['bottleneck_ms']:.2f} ms, "
                  f"throughput {p['throughput_fps']:.1f} fps{_energy(p)}", highlight=False)
    if m.accuracy:
        acc = m.accuracy
        if p.get("accuracy") is None:
            console.print(f"variants: {acc['rule']}", highlight=False)
        else:
            floor = acc.get("floor")
            console.print(f"variants: measured {acc['metric']} {p['accuracy']:.4f} on {acc['calibration']['frames']} "
                          f"calibration frames" + (f", floor {floor:.4f}" if floor is not None else "")
                          + "; per stage: " + ", ".join(f"{s.name} {s.variant} {s.accuracy:.4f}" for s in m.stages
                                                        if s.accuracy is not None), highlight=False)


def _energy(predicted: dict) -> str:
    e = predicted.get("energy_mj")
    return "" if e is None else f", energy {e:.1f} mJ/frame"


@app.command("report")
def report_cmd(
    out: Path = typer.Argument(..., metavar="OUT", help="folder written by edgec compile"),
    html: Optional[Path] = typer.Option(None, "-o", "--output", metavar="FILE.html",
                                        help="the page to write [default: OUT/report.html]"),
    model: Optional[Path] = typer.Option(None, "--model", metavar="MODEL",
                                         help="the source model, for fusion groups in the graph "
                                         "(default: the path in the manifest)"),
) -> None:
    """Write one self-contained HTML page that draws the plan: timeline, model graph, memory, tables."""
    from edgec import api

    result = api.report(out, html, model=model)
    for note in result.notes:
        err_console.print(f"edgec: note: {note}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {result.path}: {result.stages} stages, {result.graph_boxes} graph boxes"
                  + (" (condensed)" if result.condensed else "") + (", with measured times" if result.measured else ""),
                  highlight=False, soft_wrap=True)


@app.command("profile")
def profile_cmd(
    out: Path = typer.Option(..., "-o", "--out", metavar="FILE.json",
                             help="profile file to write (name it in cluster.json: \"profile\")"),
    unit: List[str] = typer.Option([], "--unit", metavar="NAME=CORES",
                                   help="e.g. big=4,5,6,7 (repeatable; default: one "
                                   "unit 'cpu' on all cores)"),
    power: List[str] = typer.Option([], "--power", metavar="NAME=ACTIVE_W,IDLE_W",
                                    help="a unit's power measured with a meter (the board's draw above idle while "
                                    "the unit computes, and the board's idle draw), for --objective energy "
                                    "(repeatable)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", help="no progress display"),
) -> None:
    """Measure this machine's compute units with ONNX Runtime micro-benchmarks and write a profile."""
    from edgec.costmodel.energy import parse_power_option, record_measured_power
    from edgec.costmodel.profiler import write_profile

    powers = dict(parse_power_option(p) for p in power)

    units = {}
    for spec in unit:
        name, sep, cores_text = spec.partition("=")
        try:
            cores = [int(c) for c in cores_text.split(",")]
        except ValueError:
            cores = []
        if not sep or not name or not cores:
            raise EdgecError(f"--unit '{spec}': expected NAME=CORES with comma-separated core ids, e.g. big=4,5,6,7")
        units[name] = (len(cores), cores)
    unknown = [name for name in powers if name not in (units or {"cpu": None})]
    if unknown:
        raise EdgecError(f"--power {unknown[0]}: no such unit; name one given with --unit (default: cpu)")
    shown = progress_console(console, quiet)
    with Counter(shown, "micro-benchmarks", None) as bar:
        def timed(unit_name: str, bench: str, done: int, total: int) -> None:
            bar.show(done, total, f"{unit_name}: timed {bench}")

        doc = write_profile(out, units or None, on_bench=timed)
    if powers:
        doc = record_measured_power(out, powers)
    for name, u in doc["units"].items():
        console.print(f"{name}: peak {u['peak_gflops']:.1f} GFLOP/s, bandwidth {u['bandwidth_gbs']:.1f} GB/s, "
                      f"overhead {u['overhead_ms']:.3f} ms/node"
                      + (f", power {u['power']['active_w']:g} W active / {u['power']['idle_w']:g} W idle"
                         if "power" in u else ""), highlight=False)
    console.print(f"wrote {out}", highlight=False)


@app.command("schema")
def schema_cmd(which: str = typer.Argument(..., metavar="cluster|manifest", help="which schema")) -> None:
    """Print the published JSON Schema of cluster.json or manifest.json."""
    from edgec import cluster, manifest_schema

    schemas = {"cluster": cluster.schema, "manifest": manifest_schema.schema}
    if which not in schemas:
        raise EdgecError(f"no schema '{which}'; expected cluster or manifest")
    print(json.dumps(schemas[which](), indent=2))


# --- runtime: serve a device, run frames through a plan, make CURVE keys (edgec.runtime.cli does the work) ---


@app.command("serve")
def serve_cmd(
    out: Path = typer.Argument(..., metavar="OUT", help="folder written by edgec compile (the device's bundle)"),
    device: str = typer.Option(..., "--device", metavar="NAME", help="the device to serve, as named in the cluster"),
    deployment: Optional[Path] = typer.Option(None, "--deployment", metavar="FILE.json",
                                              help="deployment JSON: device -> host/port"),
    cores: Optional[str] = typer.Option(None, "--cores", metavar="0,1,...",
                                        help="pin to these core ids (default: the cores its units declare)"),
    no_pin: bool = typer.Option(False, "--no-pin", metavar="", help="do not pin the process to cores"),
    keys: Optional[Path] = typer.Option(None, "--keys", metavar="DIR", help="keys folder from `edgec keys` (CURVE on)"),
    hwm: int = typer.Option(2, "--hwm", metavar="N", help="high-water mark of each queue, in messages"),
) -> None:
    """Run DEVICE's stages: receive frames, compute, send the results on (until Ctrl-C)."""
    from edgec.runtime import cli as runtime_cli

    runtime_cli.serve(str(out), device, _opt(deployment), cores, no_pin, _opt(keys), hwm)


@app.command("run")
def run_cmd(
    out: Path = typer.Argument(..., metavar="OUT", help="folder written by edgec compile"),
    inputs: Optional[Path] = typer.Option(None, "--inputs", metavar="FILE.npz",
                                          help=".npz: per input one frame, or a stack [N, ...] (default: seeded random)"),
    frames: Optional[int] = typer.Option(None, "--frames", metavar="N",
                                         help="frames to send, cycling through the inputs (default: as many as given)"),
    local: bool = typer.Option(False, "--local", metavar="",
                               help="start every device as its own process here (loopback)"),
    deployment: Optional[Path] = typer.Option(None, "--deployment", metavar="FILE.json",
                                              help="deployment JSON of the serving devices"),
    keys: Optional[Path] = typer.Option(None, "--keys", metavar="DIR", help="keys folder from `edgec keys` (CURVE on)"),
    timeout: float = typer.Option(10.0, "--timeout", metavar="SECONDS",
                                  help="seconds a device may stay silent before the run fails"),
    output: Optional[Path] = typer.Option(None, "--output", metavar="FILE.npz",
                                          help="write the outputs, stacked per name, to this .npz"),
    no_pin: bool = typer.Option(False, "--no-pin", metavar="",
                                help="with --local: do not pin device processes to cores"),
    seed: int = typer.Option(0, metavar="N", help="seed for random inputs"),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", help="no progress display"),
) -> None:
    """Feed frames to the plan's first device and collect results from the last, in order."""
    from edgec.runtime import cli as runtime_cli

    shown = progress_console(console, quiet)
    with Counter(shown, "frames", frames) as bar:
        code = runtime_cli.run(str(out), _opt(inputs), frames, local, _opt(deployment), _opt(keys), timeout,
                               _opt(output), no_pin, seed, on_result=lambda seq, outputs, error: bar.advance())
    if code:
        raise typer.Exit(code)


@app.command("keys")
def keys_cmd(
    out: Path = typer.Argument(..., metavar="OUT", help="folder written by edgec compile"),
    folder: Optional[Path] = typer.Option(None, "--folder", metavar="DIR",
                                          help="where to write them (default: OUT/keys)"),
    force: bool = typer.Option(False, "--force", metavar="", help="replace existing keys"),
) -> None:
    """Make a CurveZMQ keypair per device and one for the driver (public/ shareable, private/ per board)."""
    from edgec.runtime import cli as runtime_cli

    runtime_cli.keys(str(out), _opt(folder), force)


def _opt(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None


def main() -> None:
    """The `edgec` command: user errors, a mistyped option included, are one `edgec:` line and exit 2."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's usage errors: a bad option value, a missing argument, ...
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            console.print(ctx.get_help(), markup=False, highlight=False)
            sys.exit(0)
        command = ctx.command_path if ctx is not None else "edgec"
        err_console.print(f"edgec: {exc.format_message()} (see {command} --help)", markup=False,
                          highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err_console.print("edgec: interrupted", markup=False, highlight=False)
        sys.exit(130)
    except EdgecError as exc:
        err_console.print(f"edgec: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
