"""The text dump as a listing: lines kept under `WIDTH`, and the plan's summary block after partition.

A node line too long for a terminal (a Concat of fifty inputs, or the cost
notes of a cluster with a dozen units) is wrapped: the instruction first,
then its notes on continuation lines that start with four spaces and `#`,
broken between notes, never inside one. Once a partition has placed the
groups, a block at the end says what it decided: the stages (or device
segments) with their groups, predicted ms and memory, the tensors that
cross between them with their size, and the prediction.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from edgec.ir import Program

WIDTH = 160
CONTINUATION = "    "


def fit(instruction: str, notes: Sequence[str], width: int = WIDTH) -> list[str]:
    """`instruction  # note  note ...` on one line when it fits in `width`, else wrapped over several."""
    one = f"{instruction}  # {'  '.join(notes)}" if notes else instruction
    if len(one) <= width:
        return [one]
    lines = textwrap.wrap(instruction, width, subsequent_indent=CONTINUATION, break_long_words=False,
                          break_on_hyphens=False) or [instruction]
    current = CONTINUATION + "#"
    for note in notes:
        if len(current) + 2 + len(note) > width and current.strip() != "#":
            lines.append(current)
            current = CONTINUATION + "#"
        current += f"  {note}" if current.strip() != "#" else f" {note}"
    if current.strip() != "#":
        lines.append(current)
    return lines


def plan_summary(program: Program, nbytes: Callable[[object], int]) -> list[str]:
    """The summary block of a placed program (empty before partition)."""
    parts = program.stages or program.segments
    if not parts:
        return []
    placed = {g: p.name for p in parts for g in p.groups}
    group_of = program.group_of()
    part_of_tensor: dict[str, str] = {t.name: "source" for t in program.graph.inputs}
    crossing: dict[tuple[str, str], dict[str, int]] = {}
    for node in program.graph.nodes:
        part = placed.get(group_of.get(node.name, node.name), "?")
        for t in node.inputs:
            src = part_of_tensor.get(t.name)
            if t.name and src is not None and src != part:
                crossing.setdefault((src, part), {})[t.name] = nbytes(t)
        for t in node.outputs:
            part_of_tensor[t.name] = part
    for t in program.graph.outputs:
        crossing.setdefault((part_of_tensor.get(t.name, "?"), "sink"), {})[t.name] = nbytes(t)
    where = {p.name: getattr(p, "unit_id", p.device) for p in parts}
    if program.cluster is not None:
        where.update(source=program.cluster.source, sink=program.cluster.sink)
    kind = "stages" if program.stages else "device segments"
    copies = [r for p in parts for r in (getattr(p, "replicas", None) or [])]  # replicas count as the manifest's stages
    devices = {p.device for p in parts} | {r.device for r in copies}
    head = f"# plan: {len(parts) + len(copies)} {kind} on {len(devices)} devices"
    if program.prediction is not None:
        p = program.prediction
        head += (f"; predicted latency {p.latency_ms:.2f} ms, bottleneck {p.bottleneck_ms:.2f} ms "
                 f"({p.throughput_fps:.1f} fps)")
    lines = ["#", head]
    for part in parts:
        groups = part.groups[0] if len(part.groups) == 1 else f"{part.groups[0]}..{part.groups[-1]}"
        extra = f"  {part.backend}/{part.variant}" if hasattr(part, "backend") else ""
        for key in ("step", "parallel", "weight"):  # where the plan has steps of parallel stages
            if getattr(part, key, None) is not None:
                extra += f"  {key} {getattr(part, key):g}" if key == "weight" else f"  {key} {getattr(part, key)}"
        lines.append(f"#   {part.name:<6} {where[part.name]:<14} {groups} ({len(part.groups)} groups)  "
                     f"{part.predicted_ms:.2f} ms  {part.memory_bytes / 2**20:.1f} MB{extra}")
        for j, r in enumerate(getattr(part, "replicas", None) or []):  # the step's other copies, as the manifest names them
            lines.append(f"#   {part.name + 'r' + str(j + 1):<6} {r.unit_id:<14} {groups} ({len(part.groups)} groups)  "
                         f"{r.predicted_ms:.2f} ms  {r.memory_bytes / 2**20:.1f} MB  {r.backend}/{r.variant}  "
                         f"replica of {part.name}  weight {r.weight:g}")
    lines.append("# transfers:")
    for (src, dst), tensors in crossing.items():
        link = f"{where.get(src, src)} -> {where.get(dst, dst)}"
        count = f"{len(tensors)} tensor{'' if len(tensors) == 1 else 's'}, {sum(tensors.values()) / 1024:.1f} KB"
        lines.append(f"#   {src} -> {dst}  ({link})  {count}: {_names(list(tensors), 80)}")
    return lines


def _names(names: list[str], width: int) -> str:
    """As many names as fit in about `width` characters, then how many more there are."""
    shown: list[str] = []
    for name in names:
        if shown and len(", ".join(shown + [name])) > width:
            return ", ".join(shown) + f" (+{len(names) - len(shown)} more)"
        shown.append(name)
    return ", ".join(shown)
