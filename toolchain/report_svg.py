"""The pictures of `edgec report` as inline SVG: the Gantt, memory against capacity, the model graph.

Drawn here in Python rather than with a charting library: the page must
open from a board's SD card with no network, and every JavaScript library
that draws Gantt charts and layered graphs (ECharts, D3 with dagre, Mermaid)
would have to be inlined at 0.3-1 MB, to draw three kinds of figure that are
rectangles, lines and text. networkx, already a dependency, does the one
hard part, the graph's layering. Hover text is SVG `<title>`, so the page
needs no script at all. Every element the tests look for carries a class and
data- attributes (`rect.bar[data-stage]`, `g.box[data-stage]`, `path.cut`).
"""

from __future__ import annotations

from html import escape
from typing import Mapping, Sequence

from edgec.report_graph import ModelGraph
from edgec.report_timeline import Bar

# Okabe-Ito, then Tableau's: distinguishable for colour-blind readers
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
           "#4E79A7", "#F28E2B", "#59A14F", "#B07AA1", "#76B7B2", "#EDC948", "#FF9DA7", "#9C755F"]
NO_STAGE = "#BBBBBB"
LINK = "#777777"


def stage_colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{escape(text)}</text>'


def gantt(bars: Sequence[Bar], rows: Sequence[str], colours: Mapping[str, str], measured: Sequence[Bar] = (),
          width: int = 1100) -> str:
    """One row per unit and link; predicted bars full height, measured ones (when given) as a thin strip."""
    label_w, row_h, top = 170, 34, 24
    end = max([b.end_ms for b in list(bars) + list(measured)] + [1e-3])
    scale = (width - label_w - 20) / end
    height = top + row_h * len(rows) + 30
    out = [f'<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">']
    for i, row in enumerate(rows):
        y = top + i * row_h
        out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" class="lane{i % 2}"/>')
        out.append(_text(6, y + row_h / 2 + 4, row, "rowlabel"))
    for ms in _ticks(end):
        x = label_w + ms * scale
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - 24}" class="tick"/>')
        out.append(_text(x, height - 10, f"{ms:g} ms", "axis", "middle"))
    index = {row: i for i, row in enumerate(rows)}
    for kind, items in (("predicted", bars), ("measured", measured)):
        for b in items:
            y = top + index[b.row] * row_h + (3 if kind == "predicted" else row_h - 9)
            h = row_h - 12 if kind == "predicted" else 6
            x, w = label_w + b.start_ms * scale, max((b.end_ms - b.start_ms) * scale, 1.0)
            fill = colours.get(b.name, LINK) if b.kind == "stage" else LINK
            tip = f"{b.name}, frame {b.frame}: {b.start_ms:.2f}-{b.end_ms:.2f} ms ({b.end_ms - b.start_ms:.2f} ms, {kind})"
            out.append(f'<rect class="bar {kind} {b.kind}" data-stage="{escape(b.name)}" data-frame="{b.frame}" '
                       f'x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" fill="{fill}">'
                       f'<title>{escape(tip)}</title></rect>')
            if kind == "predicted" and w > 26:
                out.append(_text(x + 3, y + h / 2 + 4, f"{b.name if b.kind == 'stage' else ''} f{b.frame}", "barlabel"))
    out.append("</svg>")
    return "".join(out)


def _ticks(end: float) -> list[float]:
    step = 10 ** len(str(int(end / 5))) / 10 if end >= 5 else 1.0
    for mult in (1, 2, 5, 10):
        if end / (step * mult) <= 10:
            step *= mult
            break
    return [round(k * step, 6) for k in range(int(end / step) + 1)]


def memory(devices: Sequence[tuple[str, int | None, Sequence[tuple[str, str, int]]]], colours: Mapping[str, str],
           width: int = 1100) -> str:
    """Per device a bar: its stages' memory stacked (by unit) against the device's capacity."""
    label_w, row_h, top = 170, 30, 8
    most = max([cap or 0 for _, cap, _ in devices] + [sum(b for _, _, b in parts) for _, _, parts in devices] + [1])
    scale = (width - label_w - 160) / most
    height = top + row_h * len(devices) + 8
    out = [f'<svg class="memory" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">']
    for i, (device, capacity, parts) in enumerate(devices):
        y = top + i * row_h
        out.append(_text(6, y + 18, device, "rowlabel"))
        if capacity:
            out.append(f'<rect class="capacity" x="{label_w}" y="{y + 4}" width="{capacity * scale:.1f}" '
                       f'height="{row_h - 8}"><title>capacity {capacity / 2**20:.0f} MB</title></rect>')
        x = float(label_w)
        for stage, unit, nbytes in parts:
            w = nbytes * scale
            out.append(f'<rect class="used" data-stage="{escape(stage)}" x="{x:.1f}" y="{y + 7}" width="{max(w, 1):.1f}" '
                       f'height="{row_h - 14}" fill="{colours.get(stage, NO_STAGE)}"><title>{escape(stage)} on '
                       f'{escape(unit)}: {nbytes / 2**20:.1f} MB</title></rect>')
            x += w
        used = sum(b for _, _, b in parts)
        share = f" of {capacity / 2**20:.0f} MB ({100 * used / capacity:.1f}%)" if capacity else ""
        out.append(_text(label_w + max(x - label_w, (capacity or 0) * scale) + 6, y + 18,
                         f"{used / 2**20:.1f} MB{share}", "axis"))
    out.append("</svg>")
    return "".join(out)


def model_graph(graph: ModelGraph, colours: Mapping[str, str]) -> str:
    """Boxes in layered columns, edges as curves; cut edges red and dashed with their tensors' size."""
    box_w, box_h, col_w, row_h, pad, top = 118, 34, 160, 58, 12, 64
    width = pad * 2 + col_w * (max(graph.columns.values(), default=0) + 1)
    height = pad * 2 + row_h * (max(graph.rows.values(), default=0) + 1) + top

    def anchor(name: str, side: str) -> tuple[float, float]:
        x = pad + graph.columns[name] * col_w + (box_w if side == "out" else 0)
        return x, pad + graph.rows[name] * row_h + box_h / 2 + top

    out = [f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">']
    for e in sorted(graph.edges, key=lambda e: e.cut):
        (x1, y1), (x2, y2) = anchor(e.src, "out"), anchor(e.dst, "in")
        mid = (x1 + x2) / 2
        span = graph.columns[e.dst] - graph.columns[e.src]
        lift = 0.0 if span <= 1 else min(box_h / 2 + 6 + 4 * span, top - 4 + box_h / 2)  # over the boxes between
        cls = "cut" if e.cut else "flow"
        size = _size(e.nbytes)
        tip = f"{', '.join(e.tensors)}: {size}" + (" (crosses stages)" if e.cut else "")
        c1, c2 = (x1 + 30, y1 - lift * 1.3), (x2 - 30, y2 - lift * 1.3)
        path = (f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" if not lift else
                f"M{x1:.1f},{y1:.1f} C{c1[0]:.1f},{c1[1]:.1f} {c2[0]:.1f},{c2[1]:.1f} {x2:.1f},{y2:.1f}")
        out.append(f'<path class="{cls}" d="{path}">'
                   f'<title>{escape(tip)}</title></path>')
        if e.cut:
            out.append(_text(mid, (y1 + y2) / 2 - 4 - lift, size, "cutlabel", "middle"))
    for name, box in graph.boxes.items():
        x, y = pad + graph.columns[name] * col_w, pad + graph.rows[name] * row_h + top
        fill = colours.get(box.stage or "", NO_STAGE)
        tip = f"{box.title} on {box.stage or 'no stage'}: " + ", ".join(f"{op} x{n}" for op, n in box.ops.most_common())
        out.append(f'<g class="box" data-stage="{escape(box.stage or "")}"><title>{escape(tip)}</title>'
                   f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="4" fill="{fill}"/>'
                   + _text(x + 5, y + 14, _clip(box.label, 19), "boxlabel")
                   + _text(x + 5, y + 28, _clip(box.title, 19), "boxsub") + "</g>")
    out.append("</svg>")
    return "".join(out)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _size(nbytes: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def legend(colours: Mapping[str, str], where: Mapping[str, str]) -> str:
    items = "".join(f'<span class="key"><i style="background:{c}"></i>{escape(s)} <small>{escape(where.get(s, ""))}'
                    f'</small></span>' for s, c in colours.items())
    return f'<div class="legend">{items}<span class="key"><i style="background:{LINK}"></i>transfer</span></div>'
