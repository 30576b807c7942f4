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

from edgec import api
from edgec.errors import EdgecError
from edgec.verify import DEFAULT_RTOL

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
) -> None:
    """Compile MODEL for the cluster into per-device sub-models and a manifest."""
    from edgec.passes.shape_inference import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in input_shape)
    result = api.compile(model, target, out, objective=objective, strategy=strategy, input_shapes=shapes, dump_ir=dump_ir,
                         print_ir_after=print_ir_after,
                         print_ir=lambda name, text: console.print(f"// IR after {name}\n{text}", markup=False,
                                                                   highlight=False))
    m = result.manifest
    console.print(f"wrote {out}/: {len(m.stages)} stages on {len({s.device for s in m.stages})} devices; "
                  f"predicted latency {m.predicted['latency_ms']:.2f} ms, bottleneck {m.predicted['bottleneck_ms']:.2f} ms "
                  f"({m.predicted['throughput_fps']:.1f} fps)", highlight=False)
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
    inputs: Optional[Path] = typer.Option(None, "--inputs", help=".npz of inputs (default: seeded random)"),
    seed: int = typer.Option(0, help="seed for random inputs"),
    rtol: float = typer.Option(DEFAULT_RTOL, help="tolerance, relative to each output's value range"),
) -> None:
    """Run the original and the chained sub-models; PASS/FAIL per output (exit 1 on FAIL)."""
    result = api.verify(out, model=model, inputs=inputs, seed=seed, rtol=rtol)
    table = Table("output", "max abs err", "max rel err", "tolerance", "result",
                  title=f"verify {out} (tolerance = {rtol:g} x output range)")
    for o in result.outputs:
        table.add_row(o.name, f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}", f"{o.tolerance:.3g}",
                      "[green]PASS[/]" if o.passed else "[red]FAIL[/]")
    console.print(table)
    console.print("PASS" if result.passed else "FAIL", highlight=False)
    if not result.passed:
        raise typer.Exit(1)


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


@app.command("schema")
def schema_cmd(which: str = typer.Argument(..., help="cluster or manifest")) -> None:
    """Print the published JSON Schema of cluster.json or manifest.json."""
    from edgec import cluster, manifest

    schemas = {"cluster": cluster.schema, "manifest": manifest.schema}
    if which not in schemas:
        raise EdgecError(f"no schema '{which}'; expected cluster or manifest")
    print(json.dumps(schemas[which](), indent=2))


def main() -> None:
    try:
        app()
    except EdgecError as exc:
        err_console.print(f"edgec: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
