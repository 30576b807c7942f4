"""The manifest and every file it lists are checked against sha256s; session options are limited to an
allow-list; `verify` holds the files to the manifest and the manifest to the sub-models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import edgec
from edgec.errors import EdgecError
from edgec.runtime import trust
from edgec.runtime.pipeline import read_pipeline
from edgec.runtime.stage import StageRunner

from conftest import save_text_model
from test_runtime_local import MULTI, compile_for_hosts


@pytest.fixture
def plan2(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    return compile_for_hosts(model, tmp_path, [0, 1])


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """The sample model compiled for the three boards: .session.json and TensorRT options in the bundle."""
    folder = tmp_path_factory.mktemp("trio")
    subprocess.run([sys.executable, "samples/make_sample_model.py", str(folder / "model.onnx")], check=True,
                   capture_output=True)
    return folder


def _compile_trio(trio, tmp_path):
    # the single-level plan: its bundle layout (xu4/s0, nano/...) is what these tests name
    return edgec.compile(trio / "model.onnx", "samples/clusters/edge-trio.json", tmp_path / "out",
                         strategy="pipeline").out_dir


def _edit_manifest(out, change, reseal=False):
    data = json.loads((out / "manifest.json").read_text())
    change(data)
    (out / "manifest.json").write_text(json.dumps(data, indent=2))
    if reseal:
        trust.seal(str(out))


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "edgec.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_compile_writes_the_manifest_digest_sha256sum_can_check(plan2):
    assert (plan2 / "manifest.sha256").read_text().endswith("  manifest.json\n")
    proc = subprocess.run(["sha256sum", "-c", "manifest.sha256"], cwd=plan2, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_serve_and_run_refuse_a_changed_manifest(plan2):
    _edit_manifest(plan2, lambda m: m["stages"][0]["outputs"][0]["shape"].append(1))
    for args in (["serve", plan2, "--device", "d0"], ["run", plan2, "--local", "--frames", "2"]):
        proc = _cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "manifest.json: sha256" in proc.stderr and "does not match manifest.sha256" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_session_option_outside_the_allow_list_is_refused_and_writes_nothing(plan2, tmp_path):
    target = tmp_path / "written-by-the-manifest.onnx"
    _edit_manifest(plan2, lambda m: m["stages"][0]["session"].update(optimized_model_filepath=str(target)),
                   reseal=True)
    plan = read_pipeline(str(plan2))
    with pytest.raises(EdgecError, match="session setting 'optimized_model_filepath' is not one the runtime allows"):
        StageRunner(str(plan2), plan.stages[0])
    proc = _cli("serve", plan2, "--device", "d0")
    assert proc.returncode == 2 and "optimized_model_filepath" in proc.stderr
    assert not target.exists()


@pytest.mark.parametrize("settings, message", [
    ({"config_entries": {"session.save_model_format": "ORT"}}, "config entry 'session.save_model_format'"),
    ({"providers": ["MyCustomExecutionProvider"]}, "execution provider 'MyCustomExecutionProvider'"),
    ({"enable_profiling": True}, "session setting 'enable_profiling'"),
    ({"ort_tensorrt_ep": {"providers": ["TensorrtExecutionProvider"],
                          "TensorrtExecutionProvider": {"trt_engine_cache_path": "../../etc"}}}, "outside the bundle"),
])
def test_the_session_allow_list(settings, message, tmp_path):
    with pytest.raises(EdgecError, match=message):
        trust.check_session(settings, str(tmp_path), "here")


def test_every_compiled_session_passes_the_allow_list(trio, tmp_path):
    out = _compile_trio(trio, tmp_path)
    for stage in read_pipeline(str(out)).stages:
        trust.check_session(stage.session, str(out), stage.name)


def test_a_changed_listed_file_is_refused_by_its_device_and_by_verify(trio, tmp_path):
    out = _compile_trio(trio, tmp_path)
    cfg = out / "xu4" / "s0.session.json"
    cfg.write_text(cfg.read_text().replace('"intra_op_num_threads": 4', '"intra_op_num_threads": 1'))
    proc = _cli("verify", out)
    assert proc.returncode == 2 and "xu4/s0.session.json: sha256" in proc.stderr and "does not match" in proc.stderr
    proc = _cli("serve", out, "--device", "xu4", "--no-pin")
    assert proc.returncode == 2 and "xu4/s0.session.json: sha256" in proc.stderr


def test_verify_refuses_a_changed_tensor_shape_with_or_without_a_new_digest(plan2):
    assert _cli("verify", plan2).returncode == 0

    def wider(m):
        m["stages"][0]["outputs"][0]["shape"][-1] += 1
    _edit_manifest(plan2, wider)
    proc = _cli("verify", plan2)
    assert proc.returncode == 2 and "does not match manifest.sha256" in proc.stderr
    trust.seal(str(plan2))
    proc = _cli("verify", plan2)
    assert proc.returncode == 2, proc.stdout
    assert "manifest.json: stage s0 output" in proc.stderr and "the sub-model's is float32" in proc.stderr
