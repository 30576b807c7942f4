"""A stage's sub-model is checked against its sha256 before it loads; its session settings are applied."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest

import edgec
from edgec.errors import EdgecError
from edgec.runtime.pipeline import read_pipeline
from edgec.runtime.session import AFFINITY_KEY, providers_for, runnable_settings, session_options
from edgec.runtime.stage import ModelMismatch, StageRunner, read_checked

from conftest import save_text_model

CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
chain (float[1,8] x) => (float[1,8] z) <float[8,8] w1, float[8,8] w2>
{
    a = MatMul(x, w1)
    b = Relu(a)
    c = MatMul(b, w2)
    z = Tanh(c)
}
"""

TWO_HOSTS = {"name": "two", "devices": [{"name": "a", "type": "host", "units": {"cpu": {"cores": [0]}}},
                                        {"name": "b", "type": "host", "units": {"cpu": {"cores": [1]}}}],
             "network": {"bandwidth_mbps": 1000}, "source": "a", "sink": "b"}


@pytest.fixture
def out(tmp_path):
    model = save_text_model(CHAIN, tmp_path / "chain.onnx")
    (tmp_path / "two.json").write_text(json.dumps(TWO_HOSTS))
    edgec.compile(model, tmp_path / "two.json", tmp_path / "out")
    return tmp_path / "out"


def test_a_tampered_sub_model_is_refused(out):
    plan = read_pipeline(str(out))
    stage = plan.stages[0]
    assert read_checked(str(out), stage)  # as written: accepted
    path = out / stage.model
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelMismatch, match=f"stage {stage.name} \\(device a\\): sub-model sha256 .* does not match "
                                            f".* in manifest.json; refusing to load it"):
        StageRunner(str(out), stage)


def test_a_missing_sub_model_is_a_user_error(out):
    plan = read_pipeline(str(out))
    (out / plan.stages[1].model).unlink()
    with pytest.raises(EdgecError, match="stage s1: cannot read its sub-model"):
        StageRunner(str(out), plan.stages[1])


def test_session_settings_in_the_manifest_are_applied(out):
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["stages"][0]["session"] = {
        "intra_op_num_threads": 2, "inter_op_num_threads": 1, "execution_mode": "parallel",
        "graph_optimization_level": "basic", "session.intra_op_thread_affinities": "1",
        "config": {"session.disable_prepacking": "1"}, "enable_mem_pattern": False,
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    plan = read_pipeline(str(out))
    runner = StageRunner(str(out), plan.stages[0])
    so = runner.session.get_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    # (this onnxruntime may fall back to sequential in the session; the option was set)
    assert runner.options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.get_session_config_entry("session.intra_op_thread_affinities") == "1"
    assert so.get_session_config_entry("session.disable_prepacking") == "1"
    assert so.enable_mem_pattern is False
    out_a = runner.run({"x": np.ones((1, 8), np.float32)})
    assert list(out_a) == [t.name for t in plan.stages[0].outputs]


def test_threads_default_to_the_pinned_cores_unless_the_manifest_says(out):
    plan = read_pipeline(str(out))
    assert StageRunner(str(out), plan.stages[0], threads=1).session.get_session_options().intra_op_num_threads == 1
    assert session_options({"intra_op_num_threads": 3}, threads=1).intra_op_num_threads == 3


@pytest.mark.parametrize("settings, message", [
    ({"execution_mode": "sideways"}, "execution_mode: 'sideways' is not one of sequential, parallel"),
    ({"graph_optimization_level": "max"}, "graph_optimization_level: 'max' is not one of"),
    ({"warp_drive": 1}, "unknown ONNX Runtime session setting 'warp_drive'"),
    ({"config": ["a"]}, "config: expected an object"),
])
def test_bad_session_settings_name_the_setting(settings, message):
    with pytest.raises(EdgecError, match=message):
        session_options(settings)


def test_enum_spellings_of_onnxruntime_are_accepted():
    so = session_options({"graph_optimization_level": "ORT_ENABLE_EXTENDED", "execution_mode": "ORT_SEQUENTIAL"})
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert session_options({"graph_optimization_level": "disable_all"}).graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_backend_sessions_load_where_the_process_holds_other_cores(out):
    """A compiled neon session names the board's cores; run elsewhere, its affinities are dropped with a note."""
    manifest = json.loads((out / "manifest.json").read_text())
    held = sorted(os.sched_getaffinity(0))
    foreign = [max(held) + 100, max(held) + 101]
    manifest["stages"][0]["session"] = {
        "provider": "CPUExecutionProvider", "intra_op_num_threads": 64, "inter_op_num_threads": 1,
        "execution_mode": "ORT_SEQUENTIAL", "graph_optimization_level": "ORT_ENABLE_ALL",
        "config_entries": {AFFINITY_KEY: f"{foreign[1] + 1}"}, "cores": foreign, "main_thread_core": foreign[0]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    runner = StageRunner(str(out), read_pipeline(str(out)).stages[0])
    so = runner.session.get_session_options()
    with pytest.raises(Exception, match="does not have configuration"):
        so.get_session_config_entry(AFFINITY_KEY)
    assert so.intra_op_num_threads == len(held)
    assert runner.notes and "affinities dropped" in runner.notes[0]
    # on the cores it names, the session keeps them
    kept = runnable_settings({"cores": held, "config_entries": {AFFINITY_KEY: "2"}})
    assert kept["config_entries"] == {AFFINITY_KEY: "2"}


def test_a_tensorrt_stage_runs_on_the_tensorrt_provider_or_else_the_cpu():
    trt = {"providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
           "TensorrtExecutionProvider": {"trt_fp16_enable": True}}
    notes: list[str] = []
    providers = providers_for({"engine": "s0.engine", "ort_tensorrt_ep": trt}, notes)
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        assert providers[0] == ("TensorrtExecutionProvider", {"trt_fp16_enable": True}) and not notes
    else:
        assert providers == ["CPUExecutionProvider"] and "no TensorRT execution provider" in notes[0]
    assert providers_for({"providers": ["CPUExecutionProvider"]}) == ["CPUExecutionProvider"]
