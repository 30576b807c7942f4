"""The spatial-partition pass: compiled slice plans reproduce the original, the choice and its bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import edgec
from edgec.api import analyze
from edgec.cluster import load_cluster
from edgec.ir import Program
from edgec.passes.partition.capability import Capability
from edgec.passes.partition.global_partition import GlobalPartition
from edgec.passes.partition.halo import split_rows
from edgec.passes.partition.local_partition import LocalPartition
from edgec.passes.partition.spatial import SpatialPartition
from edgec.passes.partition.spatial_search import SearchSpace, _shares
from edgec.zoo import ZOO

from conftest import TRIO, save_text_model

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_slicing import ASYM, AVG_CEIL, BRANCHES, STRIDED, _model  # noqa: E402


def _check_slices(result: edgec.CompileResult) -> list:
    """The plan has a step of two or more slices whose bands cover the sliced tensor's rows in order, and
    the next step reads exactly the union of what the slices send."""
    stages = result.manifest.stages
    slices = [s for s in stages if s.parallel == "slice"]
    assert len(slices) >= 2
    assert len({s.step for s in slices}) == 1
    of = slices[0].slice["of"]
    rows = [tuple(s.slice["rows"]) for s in slices]
    assert rows == split_rows(of, [r[1] - r[0] for r in rows])
    for s in slices:
        lo, hi = s.slice["input_rows"]
        assert lo <= hi and s.slice["halo_rows"][0] >= 0 and s.slice["redundant_flops"] >= 0
        assert s.receives == slices[0].receives
    after = stages[stages.index(slices[-1]) + 1]
    assert sorted(after.receives) == sorted(t for s in slices for t in s.sends)
    return slices


@pytest.mark.parametrize("name", ZOO)
def test_zoo_spatial_front_verifies(name, random_zoo, tmp_path):
    result = edgec.compile(random_zoo(name), TRIO, tmp_path / "out", strategy="spatial", objective="latency")
    _check_slices(result)
    report = edgec.verify(tmp_path / "out")
    assert report.passed, report


@pytest.mark.parametrize("text", [STRIDED, ASYM, BRANCHES, AVG_CEIL], ids=["stride-dilation-ceil", "asym-same-group",
                                                                          "branch-concat", "avgpool-ceil"])
def test_hand_written_graphs_compile_and_verify(text, tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(_model(text), model)  # BN variances drawn positive
    edgec.compile(model, TRIO, tmp_path / "out", strategy="spatial")
    assert edgec.verify(tmp_path / "out").passed


def test_ir_dump_and_inspect_show_the_slices(random_zoo, tmp_path):
    out = tmp_path / "out"
    edgec.compile(random_zoo("squeezenet"), TRIO, out, strategy="spatial", dump_ir=tmp_path / "ir")
    dump = next((tmp_path / "ir").glob("*spatial-partition.txt")).read_text()
    assert "# slice s" in dump and "halo" in dump and "MFLOP redundant" in dump
    data = json.loads(next((tmp_path / "ir").glob("*spatial-partition.json")).read_text())
    assert sum(1 for s in data["stages"] if s["parallel"] == "slice") >= 2
    shown = subprocess.run([sys.executable, "-m", "edgec.cli", "inspect", str(out)], capture_output=True, text=True,
                           env={"COLUMNS": "250", "PATH": ""})
    assert shown.returncode == 0 and "spatial slices" in shown.stdout and "redundant MFLOP" in shown.stdout


def _placed(model: Path, cluster, objective: str = "latency") -> Program:
    program = analyze(model, cluster)
    for p in (Capability(), GlobalPartition(objective=objective, strategy="hierarchical"), LocalPartition()):
        program = p.run(program).program
    return program


def test_shares_equalise_finish_times():
    compute, links = [10.0, 30.0, 5.0], [(0.5, 2.0), (0.0, 0.0), (1.0, 4.0)]
    shares = _shares(compute, links)
    assert abs(sum(shares) - 1) < 1e-9
    finish = [f + s * (c + p) for s, c, (f, p) in zip(shares, compute, links)]
    assert max(finish) - min(finish) < 1e-9
    assert _shares([1.0, 1000.0], [(0.0, 0.0), (50.0, 0.0)]) is None  # the slow far unit would get no rows


def test_two_unit_bands_match_brute_force(random_zoo):
    """For the chosen run and unit pair, no other cut of the rows predicts a latency lower by more than one
    row's work."""
    program = _placed(random_zoo("squeezenet"), load_cluster(TRIO))
    space = SearchSpace(program)
    best = None
    for _, a, b, units, shares, head, tail in space.estimates():
        if len(units) == 2:
            best = space.exact(a, b, units, shares, head, tail)
            break
    assert best is not None
    height = space.exit_height(best.b)
    brute = []
    for r in range(1, height):
        c = space.exact(best.a, best.b, best.units, [r, height - r], best.head, best.tail)
        brute.append(c.latency_ms)
    row_ms = max(space.seq_ms(best.a, best.b, u) for u in best.units) / height
    assert best.latency_ms <= min(brute) + row_ms + 1e-9


def test_latency_objective_takes_slices_only_when_they_predict_less(random_zoo, tmp_path):
    model = random_zoo("squeezenet")
    plain = _placed(model, load_cluster(TRIO)).prediction.latency_ms
    chosen = edgec.compile(model, TRIO, tmp_path / "a", objective="latency", strategy="hierarchical")
    got = chosen.manifest.predicted["latency_ms"]
    if any(s.parallel == "slice" for s in chosen.manifest.stages):
        assert got < plain
    else:
        assert got == pytest.approx(plain)
    forced = edgec.compile(model, TRIO, tmp_path / "b", objective="latency", strategy="spatial")
    assert any(s.parallel == "slice" for s in forced.manifest.stages)
    # throughput objective, or a baseline strategy: no slices
    thr = edgec.compile(model, TRIO, tmp_path / "c")
    assert not any(s.parallel == "slice" for s in thr.manifest.stages)
    pipe = edgec.compile(model, TRIO, tmp_path / "d", objective="latency", strategy="pipeline")
    assert not any(s.parallel == "slice" for s in pipe.manifest.stages)


def test_energy_objective_takes_slices_only_when_they_save_energy_within_the_latency_limit(random_zoo, tmp_path):
    model = random_zoo("squeezenet")
    placed = _placed(model, load_cluster(TRIO), objective="energy")
    plain_mj = placed.prediction.energy_mj
    after = SpatialPartition(objective="energy", consider=True).run(placed).program
    if any(s.parallel == "slice" for s in after.stages):  # the pass's own choice, before precision variants
        assert after.prediction.energy_mj < plain_mj
    chosen = edgec.compile(model, TRIO, tmp_path / "a", objective="energy").manifest
    forced = edgec.compile(model, TRIO, tmp_path / "b", objective="energy", strategy="spatial").manifest
    assert forced.predicted["energy_mj"] is not None
    # a latency limit the slices' quickest plan cannot meet leaves them out, or the compile refuses
    limit = min(forced.predicted["latency_ms"], chosen.predicted["latency_ms"]) * 0.999
    try:
        limited = edgec.compile(model, TRIO, tmp_path / "c", objective="energy", max_latency_ms=limit).manifest
    except edgec.errors.EdgecError as exc:
        assert "--max-latency-ms" in str(exc)
    else:
        assert limited.predicted["latency_ms"] <= limit


# -- bad input ---------------------------------------------------------------------------------------------

TRANSFORMER = """
<ir_version: 8, opset_import: ["" : 17]>
encoder (float[1,16,32] x) => (float[1,16,32] y) <float[32,32] wq, float[32,32] wk, float[32,32] wv, float[32] g,
    float[32] b>
{
    q = MatMul(x, wq)
    k = MatMul(x, wk)
    v = MatMul(x, wv)
    kt = Transpose<perm=[0,2,1]>(k)
    s = MatMul(q, kt)
    p = Softmax<axis=-1>(s)
    a = MatMul(p, v)
    r = Add(a, x)
    y = LayerNormalization<axis=-1>(r, g, b)
}
"""


def _fails(tmp_path: Path, model: Path, cluster: Path, *needles: str) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "compile", str(model), "-t", str(cluster), "-o",
                           str(out), "--strategy", "spatial"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: ") and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_spatial_on_a_transformer_is_a_user_error(tmp_path):
    model = save_text_model(TRANSFORMER, tmp_path / "encoder.onnx")
    _fails(tmp_path, model, TRIO, "--strategy spatial", "no run of spatially local layers", "MatMul")


def test_spatial_on_one_unit_is_a_user_error(tmp_path, random_zoo):
    cluster = tmp_path / "solo.json"
    cluster.write_text(json.dumps({"name": "solo", "devices": [{"name": "pi", "type": "raspberry-pi-4"}],
                                   "network": {"bandwidth_mbps": 940, "latency_ms": 0.15},
                                   "source": "pi", "sink": "pi"}))
    _fails(tmp_path, random_zoo("squeezenet"), cluster, "--strategy spatial", "two or more compute units", "pi.cpu")
