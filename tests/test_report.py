"""`edgec report`: the page of a compiled plan, its timeline schedule, graph view, measured times and bad inputs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgec
from edgec.errors import EdgecError
from edgec.manifest import read_manifest
from edgec.report_graph import GraphNode, build
from edgec.report_timeline import rows, schedule
from edgec.runtime.driver import RunResult
from edgec.runtime.run_stats import RUN_STATS_FILE, write_run_stats

from conftest import MULTI, TRIO, save_text_model


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    model = save_text_model(MULTI, tmp / "multi.onnx")
    out = tmp / "out"
    edgec.compile(model, TRIO, out, strategy="even")
    return model, out


def stage_bars(html: str, kind: str = "predicted") -> list[tuple[str, int]]:
    return [(m[1], int(m[2])) for m in
            re.finditer(rf'<rect class="bar {kind} stage" data-stage="([^"]*)" data-frame="(\d+)"', html)]


def test_the_page_has_one_bar_per_stage_and_frame_and_a_graph_box_per_fusion_group(plan, tmp_path):
    model, out = plan
    manifest = read_manifest(out)
    report = edgec.report(out, tmp_path / "r.html")
    html = report.path.read_text()
    names = [s.name for s in manifest.stages]
    bars = stage_bars(html)
    for frame in range(4):
        assert sorted(s for s, f in bars if f == frame) == sorted(names)
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    program = edgec.analyze(model, TRIO)
    boxes = re.findall(r'<g class="box" data-stage="([^"]*)">', html)
    assert len(boxes) == len(program.groups) and set(boxes) == set(names)
    # every tensor a stage makes that a transfer carries to another is a cut edge of the graph, and no other is
    inputs = {t.name for t in manifest.inputs}  # relayed graph inputs have no producer to draw an edge from
    crossing = {t for tr in manifest.transfers if tr.src != "source" and tr.dst != "sink" for t in tr.tensors} - inputs
    cut_tips = re.findall(r'<path class="cut"[^>]*><title>([^<]*)</title>', html)
    cut = {name for tip in cut_tips for name in tip.split(":")[0].split(", ")}
    assert cut == crossing
    # the tables: stages, transfers, memory per stage, each under one header row
    assert html.count("<tr>") == 3 + len(names) + len(manifest.transfers) + len(names)


def test_measured_times_from_run_stats_appear_and_stale_ones_are_left_out(plan, tmp_path):
    _, src = plan
    out = tmp_path / "out"
    shutil.copytree(src, out)
    manifest = read_manifest(out)
    first, second = manifest.stages[0].name, manifest.stages[1].name
    stats = [{"device": manifest.stages[0].device, "stages": [first], "frames": 10,
              "seconds": {"compute": 0.5, "recv": 0.01}, "stage_compute": {first: 0.5}},
             {"device": manifest.stages[1].device, "stages": [second], "frames": 10,
              "seconds": {"compute": 0.2}, "stage_compute": {second: 0.2}}]
    result = RunResult(10, [{}] * 10, {}, None, stats, 2.0, [0.1] * 10)
    assert write_run_stats(out, manifest, result) is None
    html = edgec.report(out).path.read_text()
    assert (out / "report.html").is_file()
    measured = stage_bars(html, "measured")
    assert {s for s, _ in measured} == {s.name for s in manifest.stages}
    assert "<td>50.00</td>" in html and "<td>20.00</td>" in html  # 0.5 s over 10 frames, 0.2 s over 10
    data = json.loads((out / RUN_STATS_FILE).read_text())
    data["stages"][first]["sha256"] = "0" * 64  # as if measured on another plan
    (out / RUN_STATS_FILE).write_text(json.dumps(data))
    report = edgec.report(out)
    assert any(first in n and "another plan" in n for n in report.notes)
    assert "<td>50.00</td>" not in report.path.read_text()
    (out / RUN_STATS_FILE).write_text("{not json")
    report = edgec.report(out)
    assert any(RUN_STATS_FILE in n and "not valid JSON" in n for n in report.notes) and not report.measured


def test_without_the_source_model_the_graph_shows_sub_model_nodes_and_says_why(plan, tmp_path):
    _, out = plan
    report = edgec.report(out, tmp_path / "r.html", model=tmp_path / "gone.onnx")
    assert any("gone.onnx" in n and "--model" in n for n in report.notes)
    nodes = sum(len(__import__("onnx").load(str(out / s.model)).graph.node) for s in read_manifest(out).stages)
    assert report.graph_boxes == nodes


# --- the schedule -----------------------------------------------------------------------------------------------

def _stage(name, device, unit, ms, **extra):
    return {"name": name, "device": device, "unit": unit, "predicted_ms": ms, **extra}


def _transfer(src, dst, a, b, ms):
    return {"from": src, "to": dst, "src_device": a, "dst_device": b, "predicted_ms": ms}


def test_a_chain_waits_for_its_inputs_and_settles_at_the_bottleneck():
    stages = [_stage("s0", "a", "cpu", 5.0), _stage("s1", "b", "cpu", 20.0), _stage("s2", "a", "gpu", 3.0)]
    transfers = [_transfer("source", "s0", "a", "a", 0.0), _transfer("s0", "s1", "a", "b", 4.0),
                 _transfer("s1", "s2", "b", "a", 2.0), _transfer("s2", "sink", "a", "a", 0.0)]
    bars = schedule(stages, transfers, frames=6)
    by = {(b.name, b.frame): b for b in bars}
    for f in range(6):
        assert by[("s1", f)].start_ms >= by[("s0 -> s1", f)].end_ms == by[("s0", f)].end_ms + 4.0
    starts = [by[("s2", f)].start_ms for f in range(6)]
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:])][-3:] == [20.0] * 3  # s1 is the bottleneck
    for row in rows(bars):  # a unit or link does one thing at a time
        spans = sorted((b.start_ms, b.end_ms) for b in bars if b.row == row)
        assert all(e <= s2 + 1e-9 for (_, e), (s2, _) in zip(spans, spans[1:]))
    assert rows(bars)[:3] == ["a.cpu", "b.cpu", "a.gpu"]


def test_replicas_share_frames_by_weight_and_slices_each_compute_every_frame():
    stages = [_stage("s0", "a", "cpu", 2.0),
              _stage("r0", "b", "cpu", 9.0, step=1, parallel="replica", weight=0.75),
              _stage("r1", "c", "cpu", 27.0, step=1, parallel="replica", weight=0.25),
              _stage("x0", "a", "cpu", 1.0, step=2, parallel="slice", slice={"rows": [0, 4]}),
              _stage("x1", "b", "gpu", 1.0, step=2, parallel="slice", slice={"rows": [4, 8]})]
    transfers = [_transfer("s0", "r0", "a", "b", 1.0), _transfer("s0", "r1", "a", "c", 1.0),
                 _transfer("r0", "x0", "b", "a", 1.0), _transfer("r1", "x0", "c", "a", 1.0),
                 _transfer("r0", "x1", "b", "b", 0.1), _transfer("r1", "x1", "c", "b", 1.0)]
    bars = [b for b in schedule(stages, transfers, frames=8) if b.kind == "stage"]
    count = {n: sum(b.name == n for b in bars) for n in ("s0", "r0", "r1", "x0", "x1")}
    assert count == {"s0": 8, "r0": 6, "r1": 2, "x0": 8, "x1": 8}
    for frame in range(8):  # one replica per frame
        assert sum(b.frame == frame and b.name in ("r0", "r1") for b in bars) == 1


# --- the graph --------------------------------------------------------------------------------------------------

def test_a_long_model_is_condensed_into_boxes_of_one_stage_with_the_cut_marked():
    nodes = [GraphNode(f"n{i}", "Relu" if i % 2 else "Conv", (f"t{i}",), (f"t{i + 1}",)) for i in range(1000)]
    stage_of = {f"n{i}": ("s0" if i < 600 else "s1") for i in range(1000)}
    graph = build(nodes, {}, stage_of, {"t600": 4096}, max_boxes=50)
    assert graph.condensed and len(graph.boxes) <= 51
    assert all(len({stage_of[n] for n in box.members}) == 1 for box in graph.boxes.values())
    assert sum(len(b.members) for b in graph.boxes.values()) == 1000
    cut = [e for e in graph.edges if e.cut]
    assert [(e.tensors, e.nbytes) for e in cut] == [(("t600",), 4096)]
    assert not build(nodes[:10], {}, stage_of, {}).condensed


# --- bad input --------------------------------------------------------------------------------------------------

def edgec_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgec.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_writes_the_page_and_bad_folders_are_one_line_errors(plan, tmp_path):
    _, src = plan
    ok = edgec_cli("report", src, "-o", tmp_path / "page.html")
    assert ok.returncode == 0 and (tmp_path / "page.html").is_file() and "wrote" in ok.stdout
    empty = edgec_cli("report", tmp_path)
    assert empty.returncode == 2 and empty.stderr.startswith("edgec: ") and "manifest.json" in empty.stderr
    assert "Traceback" not in empty.stderr
    out = tmp_path / "broken"
    shutil.copytree(src, out)
    stage = read_manifest(out).stages[0]
    (out / stage.model).write_bytes(b"\x00not onnx")
    bad = edgec_cli("report", out)
    assert bad.returncode == 2 and stage.model in bad.stderr and "Traceback" not in bad.stderr
    assert not (out / "report.html").exists()


def test_an_unwritable_output_is_one_line(plan, tmp_path):
    _, src = plan
    (tmp_path / "a-file").write_text("")
    with pytest.raises(EdgecError, match="cannot write the report"):
        edgec.report(src, tmp_path / "a-file" / "r.html")


def test_fields_of_newer_plans_show_replicas_energy_and_accuracy(tmp_path):
    """Replica steps, per-stage energy and accuracy as the shared plan representation adds them."""
    from edgec.report_page import render

    from test_runtime_local import compile_for_hosts

    out = compile_for_hosts(save_text_model(MULTI, tmp_path / "m.onnx"), tmp_path, [1, 0, 1])
    manifest = read_manifest(out)
    raw = json.loads((out / "manifest.json").read_text())
    first, second, third = raw["stages"][:3]
    second.update(step=1, parallel="replica", weight=0.75)
    third.update(step=1, parallel="replica", weight=0.25)
    for i, st in enumerate(raw["stages"]):
        st["energy_mj"], st["accuracy"] = 1.5 + i, 0.9 - 0.1 * i
    raw["predicted"]["energy_mj"] = 12.25
    html, report = render(out, manifest, raw)
    bars = stage_bars(html)
    for frame in range(4):
        names = [s for s, f in bars if f == frame]
        assert first["name"] in names and len([n for n in names if n in (second["name"], third["name"])]) == 1
    assert sum(s == third["name"] for s, _ in bars) == 1  # a quarter of four frames
    assert "energy 12.2 mJ/frame" in html or "energy 12.3 mJ/frame" in html
    header = re.search(r'<table class="stages"><thead><tr>(.*?)</tr>', html)[1]
    assert "<th>energy mJ</th>" in header and "<th>accuracy</th>" in header and "<th>parallel</th>" in header
    assert "<td>replica</td><td>0.75</td><td>2.5</td><td>0.8</td>" in html
    assert report.path is None and report.stages == len(raw["stages"])


def test_another_model_at_the_source_path_is_not_taken_for_the_plan_s(plan, tmp_path):
    _, out = plan
    other = save_text_model(MULTI, tmp_path / "other.onnx", seed=7)  # same graph, other weights: another sha256
    report = edgec.report(out, tmp_path / "r.html", model=other)
    assert any("not the model this plan was compiled from" in n for n in report.notes)
