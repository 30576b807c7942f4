"""The `edgec` command line: a thin layer over the library API.

User errors (EdgecError) print one line `edgec: <what>` and exit 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from edgec.errors import EdgecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Split one ONNX model across a cluster of edge boards.")
console = Console()
err_console = Console(stderr=True)


@app.command("compile")
def compile_cmd(
    model: Path = typer.Argument(..., help="the .onnx model"),
    target: Path = typer.Option(..., "-t", "--target", help="cluster.json"),
    out: Path = typer.Option(..., "-o", "--out", help="output folder"),
    objective: str = typer.Option("throughput", help="throughput (pipeline bottleneck) or latency"),
    strategy: str = typer.Option("optimal", help="partitioner: optimal, or a baseline: random, greedy, even, "
                                 "single, two-way"),
    input_shape: List[str] = typer.Option([], "--input-shape", help="pin dynamic dims: NAME=1x3x224x224 (repeatable)"),
    dump_ir: Optional[Path] = typer.Option(None, "--dump-ir", help="write NN-<pass>.txt/.json after each pass"),
    print_ir_after: List[str] = typer.Option([], "--print-ir-after", help="print the IR after PASS (or 'all')"),
    time_passes: bool = typer.Option(False, "--time-passes", help="print each pass's wall time"),
    calib: Optional[Path] = typer.Option(None, "--calib", help=".npz calibration frames: one N x shape array per "
                                         "model input, optional 'labels' (N class indices)"),
    accuracy_floor: Optional[float] = typer.Option(None, "--accuracy-floor", help="fastest plan whose measured "
                                                   "accuracy (top-1 with labels, else agreement with fp32) is at "
                                                   "least this fraction"),
    min_fps: Optional[float] = typer.Option(None, "--min-fps", help="most accurate plan predicted at this frame "
                                            "rate or more"),
    variant: List[str] = typer.Option([], "--variant", help="NAME=model.onnx: a variant of the whole model with "
                                      "the same inputs and outputs (repeatable)"),
) -> None:
    """Compile MODEL for the cluster into per-device sub-models and a manifest."""
    from edgec.passes.shape_inference import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in input_shape)
    from edgec import api  # the compiler side loads only for the commands that need it (boards serve without it)

    accuracy = api.AccuracyOptions(calibration=calib, accuracy_floor=accuracy_floor, min_fps=min_fps,
                                   variants=dict(_variant(v) for v in variant))
    result = api.compile(model, target, out, objective=objective, strategy=strategy, input_shapes=shapes,
                         accuracy=accuracy, dump_ir=dump_ir,
                         print_ir_after=print_ir_after,
                         print_ir=lambda name, text: console.print(f"// IR after {name}\n{text}", markup=False,
                                                                   highlight=False))
    m = result.manifest
    console.print(f"wrote {out}/: {len(m.stages)} stages on {len({s.device for s in m.stages})} devices; "
                  f"predicted latency {m.predicted['latency_ms']:.2f} ms, bottleneck {m.predicted['bottleneck_ms']:.2f} ms "
                  f"({m.predicted['throughput_fps']:.1f} fps)"
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
    out: Path = typer.Argument(..., help="folder written by edgec compile"),
    model: Optional[Path] = typer.Option(None, "--model", help="the original model (default: the path in the manifest)"),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help=".npz of real inputs, one array per graph input "
                                          "(default: one seeded random frame)"),
    seed: int = typer.Option(0, help="seed for random inputs"),
    input_range: Optional[str] = typer.Option(None, "--input-range", help="LOW,HIGH: random float inputs uniform "
                                              "in this range (default: standard normal)"),
    rtol: Optional[float] = typer.Option(None, help="relative tolerance per element [default: 1e-4]"),
    atol: Optional[float] = typer.Option(None, help="absolute tolerance per element [default: 1e-5]"),
    calib: Optional[Path] = typer.Option(None, "--calib", help="calibration frames the plan's accuracy is checked "
                                         "on (default: the file the manifest names)"),
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
def inspect_cmd(out: Path = typer.Argument(..., help="folder written by edgec compile")) -> None:
    """Show the compiled plan as a table."""
    from edgec.manifest import read_manifest

    m = read_manifest(out)
    table = Table("stage", "device", "unit", "backend", "variant", "inputs", "outputs", "pred ms", "memory MB",
                  title=f"{m.source_model['path']} -> {m.cluster.get('name', '')} ({m.objective})")
    for s in m.stages:
        table.add_row(s.name, s.device, s.unit, s.backend, s.variant, str(len(s.inputs)), str(len(s.outputs)),
                      f"{s.predicted_ms:.2f}", f"{s.memory_bytes / 2**20:.1f}")
    console.print(table)
    tt = Table("from", "to", "tensors", "KB", "pred ms", title="transfers")
    for t in m.transfers:
        tt.add_row(f"{t.src}@{t.src_device}", f"{t.dst}@{t.dst_device}", str(len(t.tensors)), f"{t.bytes / 1024:.1f}",
                   f"{t.predicted_ms:.2f}")
    console.print(tt)
    p = m.predicted
    console.print(f"predicted: latency {p['latency_ms']:.2f} ms, bottleneck {p['bottleneck_ms']:.2f} ms, "
                  f"throughput {p['throughput_fps']:.1f} fps", highlight=False)
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


@app.command("profile")
def profile_cmd(
    out: Path = typer.Option(..., "-o", "--out", help="profile file to write (name it in cluster.json: \"profile\")"),
    unit: List[str] = typer.Option([], "--unit", help="NAME=CORES, e.g. big=4,5,6,7 (repeatable; default: one "
                                   "unit 'cpu' on all cores)"),
) -> None:
    """Measure this machine's compute units with ONNX Runtime micro-benchmarks and write a profile."""
    from edgec.costmodel.profiler import write_profile

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
    doc = write_profile(out, units or None)
    for name, u in doc["units"].items():
        console.print(f"{name}: peak {u['peak_gflops']:.1f} GFLOP/s, bandwidth {u['bandwidth_gbs']:.1f} GB/s, "
                      f"overhead {u['overhead_ms']:.3f} ms/node", highlight=False)
    console.print(f"wrote {out}", highlight=False)


@app.command("schema")
def schema_cmd(which: str = typer.Argument(..., help="cluster or manifest")) -> None:
    """Print the published JSON Schema of cluster.json or manifest.json."""
    from edgec import cluster, manifest_schema

    schemas = {"cluster": cluster.schema, "manifest": manifest_schema.schema}
    if which not in schemas:
        raise EdgecError(f"no schema '{which}'; expected cluster or manifest")
    print(json.dumps(schemas[which](), indent=2))


# --- runtime: serve a device, run frames through a plan, make CURVE keys (edgec.runtime.cli does the work) ---


@app.command("serve")
def serve_cmd(
    out: Path = typer.Argument(..., help="folder written by edgec compile (the device's bundle)"),
    device: str = typer.Option(..., "--device", help="the device to serve, as named in the cluster"),
    deployment: Optional[Path] = typer.Option(None, "--deployment", help="deployment JSON: device -> host/port"),
    cores: Optional[str] = typer.Option(None, "--cores", help="pin to these core ids (default: the cores its units declare)"),
    no_pin: bool = typer.Option(False, "--no-pin", help="do not pin the process to cores"),
    keys: Optional[Path] = typer.Option(None, "--keys", help="keys folder from `edgec keys` (CURVE on)"),
    hwm: int = typer.Option(2, "--hwm", help="high-water mark of each queue, in messages"),
) -> None:
    """Run DEVICE's stages: receive frames, compute, send the results on (until Ctrl-C)."""
    from edgec.runtime import cli as runtime_cli

    runtime_cli.serve(str(out), device, _opt(deployment), cores, no_pin, _opt(keys), hwm)


@app.command("run")
def run_cmd(
    out: Path = typer.Argument(..., help="folder written by edgec compile"),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help=".npz: per input one frame, or a stack [N, ...] (default: seeded random)"),
    frames: Optional[int] = typer.Option(None, "--frames", help="frames to send, cycling through the inputs (default: as many as given)"),
    local: bool = typer.Option(False, "--local", help="start every device as its own process here (loopback)"),
    deployment: Optional[Path] = typer.Option(None, "--deployment", help="deployment JSON of the serving devices"),
    keys: Optional[Path] = typer.Option(None, "--keys", help="keys folder from `edgec keys` (CURVE on)"),
    timeout: float = typer.Option(10.0, "--timeout", help="seconds a device may stay silent before the run fails"),
    output: Optional[Path] = typer.Option(None, "--output", help="write the outputs, stacked per name, to this .npz"),
    no_pin: bool = typer.Option(False, "--no-pin", help="with --local: do not pin device processes to cores"),
    seed: int = typer.Option(0, help="seed for random inputs"),
) -> None:
    """Feed frames to the plan's first device and collect results from the last, in order."""
    from edgec.runtime import cli as runtime_cli

    code = runtime_cli.run(str(out), _opt(inputs), frames, local, _opt(deployment), _opt(keys), timeout, _opt(output),
                           no_pin, seed)
    if code:
        raise typer.Exit(code)


@app.command("keys")
def keys_cmd(
    out: Path = typer.Argument(..., help="folder written by edgec compile"),
    folder: Optional[Path] = typer.Option(None, "--folder", help="where to write them (default: OUT/keys)"),
    force: bool = typer.Option(False, "--force", help="replace existing keys"),
) -> None:
    """Make a CurveZMQ keypair per device and one for the driver (public/ shareable, private/ per board)."""
    from edgec.runtime import cli as runtime_cli

    runtime_cli.keys(str(out), _opt(folder), force)


def _opt(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None


def main() -> None:
    try:
        app()
    except EdgecError as exc:
        err_console.print(f"edgec: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
