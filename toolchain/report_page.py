"""`edgec report`: one self-contained HTML page that shows a compiled plan.

The page holds the pipeline timeline (a Gantt of a few frames on every unit
and link, predicted, and measured beside it when `edgec run` left
out/run-stats.json), the model graph coloured by stage, memory per device
against its capacity, energy and accuracy where the plan has them, and the
same figures as tables. It fetches nothing (the pictures are inline SVG,
see edgec.report_svg), so it opens from a board's SD card.

The manifest has no fusion groups; the graph view gets them by running the
analysis passes on the source model again (the manifest names it; `model=`
overrides), and places each group by the stage whose sub-model holds its
nodes. Without the source model it draws the sub-models' nodes one box each.
Optional per-stage fields of newer plans (`step`, `parallel`, `weight`,
`slice`, energy, accuracy) are read from the manifest's JSON when present.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from edgec import report_graph, report_svg, report_timeline
from edgec.errors import EdgecError
from edgec.ir import tensor_nbytes
from edgec.manifest import Manifest, read_manifest
from edgec.protowire import WireError, scan_model
from edgec.runtime.run_stats import read_run_stats

FRAMES = 4
Analyze = Callable[..., Any]  # (model, cluster, input_shapes=) -> a Program with fusion groups
# names newer plans may use for a stage's energy per frame and its measured accuracy
_ENERGY = ("predicted_energy_mj", "energy_mj")
_ACCURACY = ("accuracy", "measured_accuracy")


@dataclass
class Report:
    path: Path | None
    stages: int
    bars: int  # predicted timeline bars
    graph_boxes: int
    condensed: bool
    measured: bool
    notes: list[str]


def write_report(out: str | os.PathLike, html_path: str | os.PathLike | None = None, *,
                 model: str | os.PathLike | None = None, analyze: Analyze | None = None) -> Report:
    """Write the report of the plan in `out` to `html_path` (default: out/report.html). `analyze` runs the
    analysis passes (edgec.api.analyze) for the fusion groups; without it the graph shows single nodes."""
    out = Path(out)
    manifest = read_manifest(out)
    raw = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    html, report = render(out, manifest, raw, model=model, analyze=analyze)
    target = Path(html_path) if html_path is not None else out / "report.html"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        raise EdgecError(f"cannot write the report ({exc.strerror}); choose a writable -o", where=str(target)) from None
    return replace(report, path=target)


def render(out: Path, manifest: Manifest, raw: dict, *, model: str | os.PathLike | None = None,
           analyze: Analyze | None = None) -> tuple[str, Report]:
    """The page of the plan in `out`: `manifest` read from its manifest.json, `raw` the same file's JSON (for
    the optional fields newer plans carry). The report's path is None until written."""
    stages, transfers = raw["stages"], raw["transfers"]
    notes: list[str] = []
    names = [s["name"] for s in stages]
    colours = report_svg.stage_colours(names)
    where = {s["name"]: f"{s['device']}.{s['unit']}" for s in stages}

    bars = report_timeline.schedule(stages, transfers, FRAMES)
    try:
        stats = read_run_stats(out, manifest)
    except EdgecError as exc:
        notes.append(f"{exc}; the page shows predictions only (run edgec run again to measure)")
        stats = None
    measured: list[report_timeline.Bar] = []
    if stats is not None:
        if stats["stale"]:
            notes.append(f"run-stats.json: left out stages {', '.join(stats['stale'])}, measured on another plan")
        if stats["stages"]:
            times = {n: float(s["compute_ms"]) for n, s in stats["stages"].items()}
            measured = report_timeline.schedule(stages, transfers, FRAMES, stage_ms=times)
    rows = report_timeline.rows(bars)

    graph = _model_graph(out, manifest, stages, model, analyze, notes)
    html = _page(manifest, raw, colours, where, bars, measured, rows, graph, stats, notes)
    return html, Report(None, len(stages), len(bars), len(graph.boxes), graph.condensed, bool(measured), notes)


# --- the graph ------------------------------------------------------------------------------------------------

def _model_graph(out: Path, manifest: Any, stages: Sequence[dict], model: str | os.PathLike | None,
                 analyze: Analyze | None, notes: list[str]) -> report_graph.ModelGraph:
    stage_of: dict[str, str] = {}
    sub_nodes: list[report_graph.GraphNode] = []
    for st in stages:
        path = out / st["model"]
        try:  # the structure only: weights stay in the file
            proto = onnx.ModelProto.FromString(scan_model(path, min_bytes=1024)[0])
        except (OSError, WireError, DecodeError) as exc:
            raise EdgecError(f"cannot read the sub-model ({exc}); recompile with edgec compile",
                             where=str(path)) from None
        for node in proto.graph.node:
            stage_of.setdefault(node.name, st["name"])
            sub_nodes.append(report_graph.GraphNode(node.name, node.op_type, tuple(node.input), tuple(node.output)))
    sizes = {t.name: _nbytes(t.dtype, t.shape) for st in manifest.stages for t in st.inputs + st.outputs}
    source = Path(model) if model is not None else Path(manifest.source_model["path"])
    if source.is_file() and analyze is not None:
        from edgec.cluster import parse_cluster

        try:
            program = analyze(source, parse_cluster(manifest.cluster), input_shapes=_input_shapes(manifest))
        except EdgecError as exc:
            notes.append(f"fusion groups not shown: the analysis of {source} failed ({exc})")
        else:
            if program.source_sha256 != manifest.source_model.get("sha256"):
                notes.append(f"fusion groups not shown: {source} is not the model this plan was compiled from "
                             "(its sha256 differs); pass the right one with --model")
                return report_graph.build(sub_nodes, {}, stage_of, sizes)
            nodes = [report_graph.GraphNode(n.name, n.op, tuple(t.name for t in n.inputs if t.name),
                                            tuple(t.name for t in n.outputs)) for n in program.graph.nodes]
            group_of = {n: g.name for g in program.groups.values() for n in g.nodes}
            for t in program.graph.tensors().values():
                if t.name not in sizes and t.dtype is not None and t.shape is not None:
                    sizes[t.name] = tensor_nbytes(t)
            return report_graph.build(nodes, group_of, stage_of, sizes)
    elif analyze is not None:
        notes.append(f"fusion groups not shown: the source model {source} is not here (pass --model); "
                     "boxes are the sub-models' nodes")
    return report_graph.build(sub_nodes, {}, stage_of, sizes)


def _input_shapes(manifest: Any) -> dict[str, list[int]]:
    return {t.name: list(t.shape) for t in manifest.inputs}


def _nbytes(dtype: str, shape: Sequence[Any]) -> int:
    return int(np.dtype(dtype).itemsize * np.prod([d for d in shape if isinstance(d, int)], dtype=np.int64))


# --- the page -------------------------------------------------------------------------------------------------

def _first(obj: dict, keys: Sequence[str]) -> Any:
    return next((obj[k] for k in keys if obj.get(k) is not None), None)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    h = "".join(f"<th>{escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _capacities(cluster: dict) -> dict[str, int]:
    from edgec.cluster import parse_cluster

    try:
        return {name: d.memory_bytes for name, d in parse_cluster(cluster).devices.items()}
    except EdgecError:
        return {}


def _page(manifest: Any, raw: dict, colours: dict, where: dict, bars: list, measured: list, rows: list,
          graph: report_graph.ModelGraph, stats: dict | None, notes: list[str]) -> str:
    stages, transfers, predicted = raw["stages"], raw["transfers"], raw["predicted"]
    title = f"{manifest.source_model['path']} on {manifest.cluster.get('name', 'cluster')}"
    measured_ms = {n: s["compute_ms"] for n, s in (stats or {}).get("stages", {}).items()}
    head = [f"latency {predicted['latency_ms']:.2f} ms", f"bottleneck {predicted['bottleneck_ms']:.2f} ms",
            f"throughput {predicted['throughput_fps']:.1f} fps"]
    if predicted.get("energy_mj") is not None:
        head.append(f"energy {predicted['energy_mj']:.1f} mJ/frame")
    if predicted.get("accuracy") is not None:
        head.append(f"accuracy {predicted['accuracy']:.4g}")
    if stats is not None:
        head.append(f"measured: {stats.get('fps', 0):.1f} fps over {stats.get('delivered', 0)} frames")

    capacity = _capacities(manifest.cluster)
    devices: dict[str, list[tuple[str, str, int]]] = {}
    for s in stages:
        devices.setdefault(s["device"], []).append((s["name"], s["unit"], int(s["memory_bytes"])))
    mem = [(d, capacity.get(d), parts) for d, parts in devices.items()]

    has_energy = any(_first(s, _ENERGY) is not None for s in stages)
    has_accuracy = any(_first(s, _ACCURACY) is not None for s in stages)
    has_plan = any(k in s for s in stages for k in ("step", "parallel", "weight", "slice"))
    shead = ["stage", "device", "unit", "backend", "variant", "predicted ms"]
    shead += ["measured ms"] if measured_ms else []
    shead += ["memory MB", "inputs", "outputs"]
    shead += ["step", "parallel", "weight / slice"] if has_plan else []
    shead += ["energy mJ"] if has_energy else []
    shead += ["accuracy"] if has_accuracy else []
    srows = []
    for s in stages:
        row = [s["name"], s["device"], s["unit"], s["backend"], s["variant"], f"{s['predicted_ms']:.2f}"]
        row += [f"{measured_ms[s['name']]:.2f}" if s["name"] in measured_ms else "-"] if measured_ms else []
        row += [f"{s['memory_bytes'] / 2**20:.1f}", len(s["inputs"]), len(s["outputs"])]
        if has_plan:
            part = s.get("weight") if s.get("weight") is not None else s.get("slice")
            row += [s.get("step", "-"), s.get("parallel", "-"), json.dumps(part) if part is not None else "-"]
        row += [_fmt(_first(s, _ENERGY))] if has_energy else []
        row += [_fmt(_first(s, _ACCURACY))] if has_accuracy else []
        srows.append(row)
    trows = [[t["from"], t["to"], f"{t['src_device']} -> {t['dst_device']}", ", ".join(t["tensors"]),
              f"{t['bytes'] / 1024:.1f}", f"{t['predicted_ms']:.2f}"] for t in transfers]
    mrows = [[d, parts_unit, name, f"{b / 2**20:.1f}", f"{capacity[d] / 2**20:.0f}" if d in capacity else "-"]
             for d, parts in devices.items() for name, parts_unit, b in parts]
    seg_rows = [[r.get("device"), r.get("stages"), r.get("frames"), _fmt(r.get("compute_ms")),
                 _fmt(r.get("transport_ms")), _fmt(r.get("blocked_ms"))] for r in (stats or {}).get("segments", [])]
    graph_note = (f"condensed: {graph.total_groups} fusion groups in {len(graph.boxes)} boxes (consecutive groups of "
                  f"one stage merged)" if graph.condensed else f"{len(graph.boxes)} fusion groups")
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>edgec report: {escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1><p class=\"summary\">{escape(' · '.join(head))}</p>",
        f"<p>objective <b>{escape(manifest.objective)}</b>; {len(stages)} stages on {len(devices)} devices</p>",
        "".join(f'<p class="note">{escape(n)}</p>' for n in notes),
        report_svg.legend(colours, where),
        f"<h2>Pipeline timeline</h2><p>{FRAMES} frames as the predictions schedule them"
        + ("; the thin strip under each row: the same frames with the stage times <code>edgec run</code> measured "
           "(transfers as predicted)"
           if measured else "; run <code>edgec run</code> on this folder to add measured times") + "</p>",
        f'<div class="scroll">{report_svg.gantt(bars, rows, colours, measured)}</div>',
        f"<h2>Memory</h2><div class=\"scroll\">{report_svg.memory(mem, colours)}</div>",
        f"<h2>Model graph</h2><p>{escape(graph_note)}; red dashed: tensors cut between stages, with their size</p>",
        f'<div class="scroll graphbox">{report_svg.model_graph(graph, colours)}</div>',
        "<h2>Tables</h2><h3>Stages</h3>", _table(shead, srows, "stages"),
        "<h3>Transfers</h3>", _table(["from", "to", "link", "tensors", "KB", "predicted ms"], trows, "transfers"),
        "<h3>Memory</h3>", _table(["device", "unit", "stage", "MB", "capacity MB"], mrows, "memorytable"),
    ]
    if seg_rows:
        parts += ["<h3>Measured per segment (ms per frame)</h3>",
                  _table(["device", "stages", "frames", "compute", "transport", "blocked"], seg_rows, "measured")]
    parts.append(f"<p class=\"foot\">edgec {escape(raw.get('edgec_version', ''))}</p></body></html>")
    return "".join(parts)


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:15px}
.summary{font-size:15px}.note{color:#8a4b00}.scroll{overflow-x:auto}.graphbox{max-height:720px;overflow:auto}
.legend{display:flex;flex-wrap:wrap;gap:12px}.key i{display:inline-block;width:12px;height:12px;margin-right:4px;
vertical-align:middle;border-radius:2px}.key small{color:#666}
table{border-collapse:collapse;margin:6px 0 12px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
svg text{font:11px system-ui,sans-serif}.rowlabel{font-weight:600}.axis{fill:#555}
.barlabel{fill:#fff;font-size:10px}.lane0{fill:#fafafa}.lane1{fill:#f0f0f0}.tick{stroke:#ddd}
.bar.measured{opacity:.85}.capacity{fill:#e8e8e8;stroke:#999}
.flow{fill:none;stroke:#999;stroke-width:1.2}.cut{fill:none;stroke:#d00;stroke-width:2.2;stroke-dasharray:6 3}
.cutlabel{fill:#d00;font-weight:600}.boxlabel{fill:#fff;font-weight:600}.boxsub{fill:#fff;font-size:10px}
.foot{color:#888;margin-top:24px}
"""
