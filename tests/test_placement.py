"""Backends decide placement: nodes run only where a unit can run them, and boards get what they load."""

from __future__ import annotations

import hashlib

import onnx
import pytest

import edgec
from edgec.backends.trt82_operators import OPERATORS
from edgec.cluster import parse_cluster
from edgec.errors import EdgecError

from conftest import MULTI, TRIO, save_text_model

# Shrink is not in TensorRT 8.2's ONNX parser; the convolutions around it are worth a GPU.
CONV_SHRINK_CONV = """
<ir_version: 8, opset_import: ["" : 13]>
gap (float[1,64,56,56] x) => (float[1,64,56,56] y)
    <float[64,64,3,3] w1, float[64,64,3,3] w2, float[64,64,3,3] w3, float[64,64,3,3] w4>
{
    a = Conv<pads=[1,1,1,1]>(x, w1)
    b = Relu(a)
    c = Conv<pads=[1,1,1,1]>(b, w2)
    s = Shrink<lambd=0.5>(c)
    f = Conv<pads=[1,1,1,1]>(s, w3)
    g = Relu(f)
    y = Conv<pads=[1,1,1,1]>(g, w4)
}
"""

# LayerNormalization arrived in opset 17 and has no form at 13.
COL2IM = """
<ir_version: 8, opset_import: ["" : 18]>
c2i (float[1,4,9] x) => (float[1,1,4,4] y) <float[9,9] w, int64[2] ims = {4, 4}, int64[2] blk = {2, 2}>
{
    a = MatMul(x, w)
    y = Col2Im(a, ims, blk)
}
"""


def one_board(kind: str, name: str, **overrides) -> edgec.cluster.Cluster:
    return parse_cluster({"devices": [{"name": name, "type": kind, **overrides}], "source": name, "sink": name})


def test_a_node_tensorrt_lacks_runs_on_the_nano_cpu_between_gpu_stages(tmp_path):
    model = save_text_model(CONV_SHRINK_CONV, tmp_path / "gap.onnx", seed=1)
    result = edgec.compile(model, one_board("jetson-nano", "nano"), tmp_path / "out")
    stages = result.manifest.stages
    assert [s.unit for s in stages] == ["gpu", "cpu", "gpu"], [(s.name, s.unit) for s in stages]
    for stage in stages:
        sub = onnx.load(str(result.out_dir / stage.model))
        ops = {n.op_type for n in sub.graph.node}
        if stage.unit == "gpu":
            assert "Shrink" not in ops and all(OPERATORS[op].supported for op in ops)
            assert stage.variant == "fp16" and stage.session["ort_tensorrt_ep"]["providers"][0] == "TensorrtExecutionProvider"
        else:
            assert "Shrink" in ops and stage.session["provider"] == "CPUExecutionProvider"
    assert edgec.verify(result.out_dir).passed
    run = (result.out_dir / "nano" / "run_nano.sh").read_text()
    assert "TensorrtExecutionProvider" in run and "taskset -c 0-3" in run


def test_the_ir_dump_marks_units_that_cannot_run_a_group(tmp_path):
    model = save_text_model(CONV_SHRINK_CONV, tmp_path / "gap.onnx")
    program = edgec.analyze(model, one_board("jetson-nano", "nano"))
    from edgec.passes.partition.capability import Capability

    program = Capability().run(program).program
    refused = [g for g, units in program.unsupported.items() if "nano.gpu" in units]
    assert len(refused) == 1 and "Shrink" in program.unsupported[refused[0]]["nano.gpu"]
    assert "nano.gpu cannot" in program.to_text()


def test_a_board_declaring_an_older_runtime_gets_converted_submodels(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    cluster = parse_cluster({
        "devices": [{"name": "old", "type": "raspberry-pi-4", "onnxruntime": "1.10", "max_opset": 13},
                    {"name": "new", "type": "raspberry-pi-4"}],
        "network": {"bandwidth_mbps": 940}, "source": "new", "sink": "new"})
    result = edgec.compile(model, cluster, tmp_path / "out", objective="latency", strategy="even")
    on_old = [s for s in result.manifest.stages if s.device == "old"]
    assert on_old, "the plan should use both boards"
    for stage in result.manifest.stages:
        sub = onnx.load(str(result.out_dir / stage.model))
        opset = {o.domain: o.version for o in sub.opset_import}[""]
        assert opset == (13 if stage.device == "old" else 17) and sub.ir_version <= 8
        onnx.checker.check_model(sub, full_check=True)
    assert edgec.verify(result.out_dir).passed


def test_a_node_no_board_can_load_is_a_clear_error(tmp_path):
    model = save_text_model(COL2IM, tmp_path / "c2i.onnx")
    out = tmp_path / "out"
    with pytest.raises(EdgecError) as info:
        edgec.compile(model, one_board("raspberry-pi-4", "pi", max_opset=13), out)
    message = str(info.value)
    assert "Col2Im" in message and "pi.cpu" in message and "no compute unit" in message
    assert not out.exists()


def test_every_file_of_out_is_in_the_manifest_with_its_sha256(tmp_path):
    model = save_text_model(CONV_SHRINK_CONV, tmp_path / "gap.onnx")
    result = edgec.compile(model, one_board("jetson-nano", "nano"), tmp_path / "out")
    listed = {f["path"]: f["sha256"] for f in result.manifest.files}
    on_disk = {str(p.relative_to(result.out_dir)) for p in result.out_dir.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json", "manifest.sha256", "deployment.json"} == set(listed)
    for path, sha in listed.items():
        assert hashlib.sha256((result.out_dir / path).read_bytes()).hexdigest() == sha
    for script in ("nano/run_nano.sh",):
        assert (result.out_dir / script).stat().st_mode & 0o111


# ArgMax makes int64, which no TensorRT 8.2 engine binding can be; Cast to DOUBLE has to run on a CPU.
INT64_EDGE = """
<ir_version: 8, opset_import: ["" : 13]>
edge (float[1,64,56,56] x) => (float[1,64,56,56] y)
    <float[64,64,3,3] w1, float[64,64,3,3] w2, float[64,1,3,3] w3, float[64,64,3,3] w4>
{
    a = Conv<pads=[1,1,1,1]>(x, w1)
    b = Relu(a)
    c = Conv<pads=[1,1,1,1]>(b, w2)
    i = ArgMax<axis=1, keepdims=1>(c)
    d = Cast<to=11>(i)
    f = Cast<to=1>(d)
    g = Conv<pads=[1,1,1,1]>(f, w3)
    y = Conv<pads=[1,1,1,1]>(g, w4)
}
"""


def test_gpu_stages_begin_and_end_only_where_tensors_can_be_engine_bindings(tmp_path):
    model = save_text_model(INT64_EDGE, tmp_path / "edge.onnx")
    result = edgec.compile(model, one_board("jetson-nano", "nano"), tmp_path / "out")
    units = {}
    for stage in result.manifest.stages:
        sub = onnx.load(str(result.out_dir / stage.model))
        for node in sub.graph.node:
            units[node.op_type] = units.get(node.op_type, set()) | {stage.unit}
        if stage.unit == "gpu":
            assert all(t.dtype in ("float32", "float16", "int32", "bool") for t in stage.inputs + stage.outputs)
    assert units["ArgMax"] == {"cpu"} and "gpu" in units["Conv"]
    assert edgec.verify(result.out_dir).passed


# ONNX Runtime turns Constant nodes into initializers and inlines ONNX functions such as HardSwish.
CONSTANT_AND_FUNCTION = """
<ir_version: 8, opset_import: ["" : 14]>
cf (float[1,16] x) => (float[1,16] y)
{
    c = Constant<value = float[1] {2.0}>()
    a = Mul(x, c)
    y = HardSwish(a)
}
"""

# Softmax-13 normalises over one axis; Softmax-11 flattens to 2-D at `axis`: axis 1 of 3 needs moving.
SOFTMAXES = """
<ir_version: 8, opset_import: ["" : 13]>
sm (float[2,4,8] x) => (float[2,4,8] y, float[2,4,8] z)
{
    y = Softmax<axis=1>(x)
    z = LogSoftmax<axis=-1>(x)
}
"""

# The If's branches read `a` from the outer graph: the stage that makes `a` must send it on.
IF_OUTER_SCOPE = """
<ir_version: 8, opset_import: ["" : 16]>
ifm (float[1,64] x, bool cond) => (float[1,64] y) <float[64,64] w1, float[64,64] w2>
{
    a = MatMul(x, w1)
    b = If(cond) <then_branch = g1 () => (float[1,64] t) { t = Relu(a) },
                  else_branch = g2 () => (float[1,64] e) { e = Sigmoid(a) }>
    y = MatMul(b, w2)
}
"""


def test_constant_nodes_and_onnx_functions_run_on_a_cpu(tmp_path):
    model = save_text_model(CONSTANT_AND_FUNCTION, tmp_path / "cf.onnx")
    result = edgec.compile(model, one_board("raspberry-pi-4", "pi"), tmp_path / "out")
    assert edgec.verify(result.out_dir).passed


def test_softmax_over_any_axis_keeps_its_meaning_on_an_opset_11_board(tmp_path):
    model = save_text_model(SOFTMAXES, tmp_path / "sm.onnx")
    result = edgec.compile(model, one_board("raspberry-pi-4", "pi", max_opset=11), tmp_path / "out")
    sub = onnx.load(str(result.out_dir / result.manifest.stages[0].model))
    assert {o.domain: o.version for o in sub.opset_import}[""] == 11
    assert [n.op_type for n in sub.graph.node].count("Transpose") == 2  # only the axis-1 Softmax moves
    assert edgec.verify(result.out_dir).passed


def test_a_node_with_subgraphs_stays_off_units_that_would_need_it_converted(tmp_path):
    model = save_text_model(IF_OUTER_SCOPE, tmp_path / "if.onnx")
    result = edgec.compile(model, TRIO, tmp_path / "out")
    on = {n.op_type: f"{s.device}.{s.unit}"
          for s in result.manifest.stages for n in onnx.load(str(result.out_dir / s.model)).graph.node}
    assert on["If"] not in ("nano.gpu", "nano.cpu")  # TensorRT reads opset 13, the Nano's ORT 15; If is 16
    assert edgec.verify(result.out_dir).passed
