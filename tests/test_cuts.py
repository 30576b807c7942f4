"""Cuts that are always right: several inputs/outputs, outputs that feed later nodes, wide boundaries."""

from __future__ import annotations

import json

import onnx
import pytest

import edgec
from edgec.cluster import parse_cluster
from edgec.ir import Prediction, Program, Stage
from edgec.manifest import read_manifest
from edgec.passes.codegen import Codegen
from edgec.passes.load import Load
from edgec.passes.shape_inference import ShapeInference
from edgec.verification import verify

from conftest import MULTI, save_text_model

THREE_EQUAL = {
    "name": "three",
    "devices": [{"name": n, "type": "raspberry-pi-4"} for n in ("a", "b", "c")],
    "network": {"bandwidth_mbps": 1000},
    "source": "a",
    "sink": "c",
}


def _program(model_path, cluster) -> Program:
    program = Program.empty()
    program.cluster = cluster
    Load(str(model_path)).run(program)
    ShapeInference().run(program)
    return program


def _compile_with_stages(model_path, tmp_path, cuts: list):
    """Place nodes [cuts[k], cuts[k+1]) of the model's own node order on device k and write out/.

    A cut may be an index, or the name of the tensor whose producer starts the next stage.
    """
    cluster = parse_cluster(THREE_EQUAL)
    program = _program(model_path, cluster)
    program.graph.toposort()
    names = [n.name for n in program.graph.nodes]
    starts = {t.name: i for i, n in enumerate(program.graph.nodes) for t in n.outputs}
    cuts = [starts[c] if isinstance(c, str) else c for c in cuts]
    bounds = [0, *cuts, len(names)]
    devices = list(cluster.devices)
    program.stages = [Stage(f"s{k}", devices[k], "cpu", names[bounds[k]:bounds[k + 1]], 0.0, 0, "neon", "fp32")
                      for k in range(len(bounds) - 1)]
    program.prediction = Prediction(latency_ms=1.0, bottleneck_ms=1.0, throughput_fps=1000.0)
    out = tmp_path / "out"
    out.mkdir()
    Codegen(str(out)).run(program)
    return read_manifest(out), out


def test_boundary_carries_three_tensors_and_outputs_feed_later_nodes(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    manifest, out = _compile_with_stages(model, tmp_path, cuts=["c1", "e"])
    s0, s1, s2 = manifest.stages
    # b1, b2, b3 cross the first boundary, with mid (a graph output read later) and x (read at the end)
    assert {"b1", "b2", "b3"} <= set(s0.sends)
    assert {"mid", "x"} <= set(s0.sends)
    assert "mid" in [o.name for o in s0.outputs]
    assert {"mid", "x"} <= set(s1.sends)  # relayed through s1 to the sink and to s2
    assert [o.name for o in manifest.outputs] == ["mid", "out"]
    for stage in manifest.stages:
        onnx.checker.check_model(onnx.load(str(out / stage.model)), full_check=True)
    assert verify(out, model=model).passed


@pytest.mark.parametrize("cuts", [[1, 2], [2, 7], [4, 6], [3, 5]])
def test_any_contiguous_cut_reproduces_the_model(tmp_path, cuts):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    _, out = _compile_with_stages(model, tmp_path, cuts)
    result = verify(out, model=model)
    assert result.passed and {o.name for o in result.outputs} == {"mid", "out"}


def test_shared_initializer_goes_to_each_stage_that_reads_it(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    shared (float[1,4] x) => (float[1,4] z) <float[4,4] w>
    {
        y = MatMul(x, w)
        r = Relu(y)
        z = MatMul(r, w)
    }
    """
    model = save_text_model(text, tmp_path / "shared.onnx")
    manifest, out = _compile_with_stages(model, tmp_path, cuts=[1, 2])
    for stage in (manifest.stages[0], manifest.stages[2]):
        sub = onnx.load(str(out / stage.model))
        assert [i.name for i in sub.graph.initializer] == ["w"]
    assert verify(out, model=model).passed


def test_compile_api_on_multi_io_model(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    cluster = tmp_path / "three.json"
    cluster.write_text(json.dumps(THREE_EQUAL))
    result = edgec.compile(model, cluster, tmp_path / "out")
    assert [t.name for t in result.manifest.inputs] == ["x", "y"]
    assert edgec.verify(tmp_path / "out").passed
