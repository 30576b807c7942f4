"""Bad input: one line naming what and where, exit code 2, and no out/ left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx

from edgec.zoo import zoo_models

from conftest import TRIO, save_text_model

SQUEEZENET = zoo_models()["squeezenet"]


def edgec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgec.cli", *map(str, args)], capture_output=True, text=True)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def compile_fails(tmp_path: Path, model: Path, cluster: Path, *needles: str, extra=()) -> None:
    out = tmp_path / "out"
    assert_user_error(edgec("compile", model, "-t", cluster, "-o", out, *extra), *needles)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def write_cluster(tmp_path: Path, mutate) -> Path:
    spec = json.loads(TRIO.read_text())
    mutate(spec)
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(spec))
    return path


def test_not_onnx(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n" * 20)
    compile_fails(tmp_path, bad, TRIO, str(bad), "not an ONNX model")


def test_truncated_model(tmp_path):
    data = SQUEEZENET.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) * 2 // 3])
    compile_fails(tmp_path, bad, TRIO, str(bad))


def test_unknown_op_domain(tmp_path):
    model = save_text_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,4] x) => (float[1,4] y) { y = Relu(x) }
    """, tmp_path / "m.onnx")
    m = onnx.load(str(model))
    m.graph.node[0].domain = "acme.vision"
    m.graph.node[0].op_type = "Warp"
    m.opset_import.append(onnx.helper.make_opsetid("acme.vision", 1))
    onnx.save(m, str(model))
    compile_fails(tmp_path, model, TRIO, "acme.vision", "Warp")


def contrib_model(tmp_path: Path, op: str) -> Path:
    """MatMul -> com.microsoft.<op> -> MatMul: the middle tensor has no ONNX shape inference."""
    model = save_text_model("""
    <ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
    g (float[1,16] x) => (float[1,16] y) <float[16,16] w>
    { a = MatMul(x, w)
      g = com.microsoft.Gelu(a)
      y = MatMul(g, w) }
    """, tmp_path / f"{op.lower()}.onnx")
    m = onnx.load(str(model))
    m.graph.node[1].op_type = op
    onnx.save(m, str(model))
    return model


def test_contrib_op_shapes_come_from_onnxruntime_and_the_plan_verifies(tmp_path):
    out = tmp_path / "out"
    proc = edgec("compile", contrib_model(tmp_path, "Gelu"), "-t", TRIO, "-o", out)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    for stage in manifest["stages"]:  # TensorRT has no com.microsoft ops: the Gelu runs on a CPU
        ops = {(n.domain, n.op_type) for n in onnx.load(str(out / stage["model"])).graph.node}
        assert stage["unit"] != "gpu" or ("com.microsoft", "Gelu") not in ops
    assert any(("com.microsoft", "Gelu") in {(n.domain, n.op_type) for n in onnx.load(str(out / s["model"])).graph.node}
               for s in manifest["stages"])
    proc = edgec("verify", out)
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr


def test_shape_arithmetic_after_a_contrib_op_is_measured_too(tmp_path):
    """Shape -> Gather -> Concat -> Reshape of a contrib op's output: ONNX types these partly (unknown dims)."""
    model = save_text_model("""
    <ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
    g (float[2,4,16] x) => (float[2,64] y) <int64 zero = {0}, int64[1] zero1 = {0}, int64[1] minus1 = {-1}>
    { b = com.microsoft.Gelu(x)
      s = Shape(b)
      n = Gather<axis = 0>(s, zero)
      nn = Unsqueeze(n, zero1)
      sh = Concat<axis = 0>(nn, minus1)
      y = Reshape(b, sh) }
    """, tmp_path / "m.onnx")
    out = tmp_path / "out"
    proc = edgec("compile", model, "-t", TRIO, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["outputs"][0]["shape"] == [2, 64]
    assert "PASS" in edgec("verify", out).stdout


def test_data_dependent_shape_after_a_contrib_op_is_not_guessed_from_one_run(tmp_path):
    model = save_text_model("""
    <ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
    g (float[1,16] x) => (int64[2,N] y)
    { b = com.microsoft.Gelu(x)
      y = NonZero(b) }
    """, tmp_path / "m.onnx")
    compile_fails(tmp_path, model, TRIO, "tensor 'y'", "NonZero")


def test_contrib_op_onnxruntime_cannot_run_is_a_user_error(tmp_path):
    compile_fails(tmp_path, contrib_model(tmp_path, "NoSuchKernel"), TRIO, "tensor 'g'", "node ",
                  "com.microsoft.NoSuchKernel", "standard ONNX ops")


def test_model_the_onnx_checker_rejects_is_a_user_error(tmp_path):
    model = save_text_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,4] x) => (float[1,4] y) { y = Relu(x) }
    """, tmp_path / "m.onnx")
    m = onnx.load(str(model))
    m.graph.output[0].type.tensor_type.ClearField("shape")
    m.graph.output[0].type.tensor_type.elem_type = 0  # an output without a type
    onnx.save(m, str(model))
    compile_fails(tmp_path, model, TRIO, str(model), "not a valid ONNX model")


def test_dynamic_dim_without_input_shape(tmp_path):
    model = save_text_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,4] x) => (float[N,4] y) { y = Relu(x) }
    """, tmp_path / "dyn.onnx")
    compile_fails(tmp_path, model, TRIO, "tensor 'x'", "dynamic dim 'N'", "--input-shape x=1x4")
    out = tmp_path / "ok"
    proc = edgec("compile", model, "-t", TRIO, "-o", out, "--input-shape", "x=2x4")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["inputs"][0]["shape"] == [2, 4]


def test_cluster_missing_field(tmp_path):
    cluster = write_cluster(tmp_path, lambda s: s.pop("sink"))
    compile_fails(tmp_path, SQUEEZENET, cluster, str(cluster), "$", "sink")


def test_cluster_device_missing_type(tmp_path):
    cluster = write_cluster(tmp_path, lambda s: s["devices"][1].pop("type"))
    compile_fails(tmp_path, SQUEEZENET, cluster, "$.devices[1]", "type")


def test_unknown_device_type(tmp_path):
    cluster = write_cluster(tmp_path, lambda s: s["devices"][2].update(type="jetson-orin"))
    compile_fails(tmp_path, SQUEEZENET, cluster, "$.devices[2].type", "jetson-orin", "raspberry-pi-4")


def test_negative_bandwidth(tmp_path):
    cluster = write_cluster(tmp_path, lambda s: s["network"].update(bandwidth_mbps=-5))
    compile_fails(tmp_path, SQUEEZENET, cluster, "$.network.bandwidth_mbps", "-5")


def test_source_device_does_not_exist(tmp_path):
    cluster = write_cluster(tmp_path, lambda s: s.update(source="laptop"))
    compile_fails(tmp_path, SQUEEZENET, cluster, "$.source", "laptop")


def test_link_to_unknown_device(tmp_path):
    cluster = write_cluster(tmp_path, lambda s: s.update(links=[{"between": ["xu4", "tx2"], "bandwidth_mbps": 100}]))
    compile_fails(tmp_path, SQUEEZENET, cluster, "$.links[0].between[1]", "tx2")


def test_output_folder_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    proc = edgec("compile", SQUEEZENET, "-t", TRIO, "-o", blocker / "out")
    assert_user_error(proc, "cannot write the output folder")


def test_output_folder_with_foreign_files_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert_user_error(edgec("compile", SQUEEZENET, "-t", TRIO, "-o", out), "not empty")
    assert (out / "thesis.tex").read_text() == "precious"


def test_failed_recompile_keeps_previous_out(tmp_path):
    out = tmp_path / "out"
    assert edgec("compile", SQUEEZENET, "-t", TRIO, "-o", out).returncode == 0
    before = (out / "manifest.json").read_text()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    assert_user_error(edgec("compile", bad, "-t", TRIO, "-o", out))
    assert (out / "manifest.json").read_text() == before


def test_missing_model_file(tmp_path):
    compile_fails(tmp_path, tmp_path / "nope.onnx", TRIO, "nope.onnx", "not found")


def test_bad_input_shape_flag(tmp_path):
    compile_fails(tmp_path, SQUEEZENET, TRIO, "--input-shape", extra=("--input-shape", "data_0=1xthree"))


def test_verify_without_manifest(tmp_path):
    assert_user_error(edgec("verify", tmp_path), "manifest.json")


def test_verify_tampered_submodel(tmp_path):
    out = tmp_path / "out"
    assert edgec("compile", SQUEEZENET, "-t", TRIO, "-o", out).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    sub = out / manifest["stages"][0]["model"]
    sub.write_bytes(sub.read_bytes() + b"\x00")
    assert_user_error(edgec("verify", out), "sha256")


def test_output_folder_that_holds_the_current_folder_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for out in (".", ".."):
        proc = subprocess.run([sys.executable, "-m", "edgec.cli", "compile", str(SQUEEZENET), "-t", str(TRIO),
                               "-o", out], capture_output=True, text=True, cwd=work)
        assert_user_error(proc, "current folder", "-o out/")
    assert list(work.iterdir()) == []


def test_out_is_readable_by_others_as_the_umask_allows(tmp_path):
    import os

    out = tmp_path / "out"
    assert edgec("compile", SQUEEZENET, "-t", TRIO, "-o", out).returncode == 0
    expected = 0o777 & ~_current_umask()
    assert out.stat().st_mode & 0o777 == expected
    assert os.access(out / "manifest.json", os.R_OK)


def _current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _external_weights_model(tmp_path: Path) -> Path:
    import numpy as np
    from onnx import numpy_helper

    model = save_text_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,64] x) => (float[1,64] y) <float[64,64] w>
    { y = MatMul(x, w) }
    """, tmp_path / "src.onnx")
    m = onnx.load(str(model))
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.eye(64, dtype=np.float32), "w"))
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(m, str(folder / "m.onnx"), save_as_external_data=True, location="m.weights", size_threshold=0)
    return folder / "m.onnx"


def test_external_weights_load_from_the_models_folder_whatever_the_cwd(tmp_path):
    model = _external_weights_model(tmp_path)
    out = tmp_path / "out"
    proc = edgec("compile", model, "-t", TRIO, "-o", out)  # run from the repository root, not the model's folder
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in edgec("verify", out).stdout


def test_missing_external_weights_file(tmp_path):
    model = _external_weights_model(tmp_path)
    (model.parent / "m.weights").unlink()
    compile_fails(tmp_path, model, TRIO, str(model), "m.weights", "next to the model")


def test_truncated_external_weights_file(tmp_path):
    model = _external_weights_model(tmp_path)
    weights = model.parent / "m.weights"
    weights.write_bytes(weights.read_bytes()[:1000])
    compile_fails(tmp_path, model, TRIO, str(model), "truncated or corrupt")


def test_ir3_model_with_initializers_not_listed_as_inputs_still_compiles(tmp_path):
    """IR 3 wanted every initializer among the graph inputs; ONNX Runtime runs such models without that."""
    model = save_text_model("""
    <ir_version: 8, opset_import: ["" : 9]>
    g (float[1,64] x) => (float[1,64] y) <float[64,64] w>
    { y = MatMul(x, w) }
    """, tmp_path / "m.onnx")
    m = onnx.load(str(model))
    m.ir_version = 3
    onnx.save(m, str(model))
    out = tmp_path / "out"
    proc = edgec("compile", model, "-t", TRIO, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in edgec("verify", out).stdout
