"""tensorrt backend: TensorRT 8.2 support predicate, GPU sub-model preparation, fp16, build script."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgec.backends import fp16 as lower16
from edgec.backends import tensorrt as trt
from edgec.backends.base import device_bundle
from edgec.backends.registry import backend_for
from edgec.backends.trt82_operators import OPERATORS
from edgec.cluster import parse_cluster
from edgec.errors import EdgecError
from edgec.ir import Program
from edgec.manifest import StageSpec, TensorSpec
from edgec.passes.fusion import Fusion
from edgec.passes.load import Load
from edgec.passes.shape_inference import ShapeInference
from edgec.zoo import ZOO, zoo_models

# Ops of the bundled zoo CNNs; every one is in TensorRT 8.2's table and within its limits.
ZOO_OPS = {"Conv", "Relu", "LRN", "MaxPool", "Reshape", "Gemm", "Dropout", "Softmax", "BatchNormalization", "Mul",
           "Add", "Concat", "AveragePool", "GlobalAveragePool", "Sum", "Transpose", "Unsqueeze"}
NUMERIC_ZOO = ("squeezenet", "shufflenet", "inception_v1", "resnet50")


def cluster(**nano):
    return parse_cluster({"devices": [{"name": "nano", "type": "jetson-nano", **nano},
                                      {"name": "rpi4", "type": "raspberry-pi-4"}],
                          "network": {"bandwidth_mbps": 940}, "source": "rpi4", "sink": "rpi4"})


def graph_of(text: str) -> gs.Graph:
    model = onnx.shape_inference.infer_shapes(onnx.parser.parse_model(text), data_prop=True)
    return gs.import_onnx(model)


def verdicts(text: str, opset: int | None = None) -> dict[str, str | None]:
    graph = graph_of(text)
    opset = opset or graph.opset
    return {n.name or n.outputs[0].name: trt.supports(n, opset) for n in graph.nodes}


def head(opset: int = 13, ir: int = 7) -> str:
    return f'<ir_version: {ir}, opset_import: ["" : {opset}]>'


def zoo_graph(name: str) -> gs.Graph:
    """A bundled zoo model with static shapes everywhere, its ConstantOfShape weights as zero-copy constants."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(zoo_models()[name])), data_prop=True)
    graph = gs.import_onnx(model)
    for node in [n for n in graph.nodes if n.op == "ConstantOfShape"]:
        shape = tuple(int(d) for d in node.inputs[0].values)
        value = node.attrs.get("value")
        fill = np.asarray(value.values).reshape(-1)[0] if value is not None else np.float32(0)
        out = node.outputs[0]
        const = gs.Constant(out.name + "_w", np.broadcast_to(fill, shape))
        for consumer in list(out.outputs):
            consumer.inputs[consumer.inputs.index(out)] = const
        node.outputs.clear()
    graph.cleanup()
    return graph


def pipeline_model(path) -> onnx.ModelProto:
    """A model as codegen sees it: loaded, shapes inferred (onnxsim), fusion rewrites applied."""
    program = Program.empty()
    for p in (Load(str(path)), ShapeInference(), Fusion()):
        program = p.run(program).program
    return program.to_onnx()


def cpu_run(model: onnx.ModelProto, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def random_feeds(model: onnx.ModelProto, seed: int = 0):
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input if i.name not in inits}


# -- the predicate on the zoo ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_node_is_judged_as_the_table_says(name):
    graph = zoo_graph(name)
    ops = {n.op for n in graph.nodes}
    assert ops <= ZOO_OPS, ops - ZOO_OPS
    for node in graph.nodes:
        expected = OPERATORS[node.op].supported
        reason = trt.supports(node, graph.opset)
        assert (reason is None) == expected, (node.name, node.op, reason)


def test_the_table_is_tensorrt_8_2s():
    assert trt.OPERATORS["Einsum"].supported and trt.OPERATORS["ScatterND"].supported  # added in 8.2 EA
    assert not trt.OPERATORS["Xor"].supported and not trt.OPERATORS["Shrink"].supported  # added in 8.4 GA
    assert not trt.OPERATORS["NonZero"].supported and not trt.OPERATORS["Mod"].supported  # added in 8.5 GA
    assert "LayerNormalization" not in trt.OPERATORS  # opset 17; the 8.2 parser reads opset <= 13


# -- prepared GPU sub-models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(random_zoo):
    out = {}
    for name in NUMERIC_ZOO:
        model = pipeline_model(random_zoo(name))
        out[name] = (model, trt.prepare_submodel(model))
    return out


@pytest.mark.parametrize("name", NUMERIC_ZOO)
def test_prepared_submodel_is_what_tensorrt_8_2_parses(prepared, name):
    _, sub = prepared[name]
    assert all(o.version <= 13 for o in sub.opset_import if o.domain in ("", "ai.onnx"))
    assert sub.ir_version <= 7
    onnx.checker.check_model(sub, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(sub, strict_mode=True)
    g = inferred.graph
    for v in list(g.input) + list(g.output) + list(g.value_info):
        assert all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim), v.name
    for node in sub.graph.node:
        assert OPERATORS[node.op_type].supported, node.op_type
        assert onnx.defs.get_schema(node.op_type, 13).since_version <= 13


@pytest.mark.parametrize("name", NUMERIC_ZOO)
def test_prepared_submodel_reproduces_fp32_and_fp16_stays_within_tolerance(prepared, name):
    model, sub = prepared[name]
    feeds = random_feeds(model)
    for a, b in zip(cpu_run(model, feeds), cpu_run(sub, feeds)):
        assert np.abs(a - b).max() <= 1e-4 * (a.max() - a.min())
    fp16 = lower16.to_fp16(sub)
    onnx.checker.check_model(fp16, full_check=True)
    assert [i.type.tensor_type.elem_type for i in fp16.graph.input] == [onnx.TensorProto.FLOAT] * len(feeds)
    assert {t.data_type for t in fp16.graph.initializer} <= {onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64}
    checks = lower16.check_fp16(sub, feeds, fp16)
    assert checks and all(c.passed for c in checks), checks
    y32, y16 = cpu_run(sub, feeds)[0], cpu_run(fp16, feeds)[0]
    assert y16.dtype == np.float32 and y32.argmax() == y16.argmax()


def test_fp16_keeps_float32_where_the_schema_wants_it():
    text = f"""{head()} g (float[1,2,4,4] x) => (float[1,2,8,8] y, int64[4] s) {{
        c = Conv(x, w)
        r = Resize<mode="linear">(c, , scales)
        y = Relu(r)
        s = Shape(y)
    }}"""
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    model.graph.initializer.extend([
        numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    fp16 = lower16.to_fp16(model)
    onnx.checker.check_model(fp16, full_check=True)
    inits = {t.name: t.data_type for t in fp16.graph.initializer}
    assert inits == {"w": onnx.TensorProto.FLOAT16, "scales": onnx.TensorProto.FLOAT}
    assert [o.type.tensor_type.elem_type for o in fp16.graph.output] == [onnx.TensorProto.FLOAT,
                                                                          onnx.TensorProto.INT64]
    feeds = {"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)}
    (a, sa), (b, sb) = cpu_run(model, feeds), cpu_run(fp16, feeds)
    assert np.abs(a - b).max() <= lower16.FP16_TOLERANCE * (a.max() - a.min()) and (sa == sb).all()


# -- refusals, with reasons -----------------------------------------------------------------------


def test_ops_tensorrt_8_2_lacks_are_refused_with_a_reason():
    v = verdicts(f"""{head()} g (float[4,3] x, float[1,4,4] bx, float[1,1,4] scores) =>
                     (int64[2,12] nz, float[4,3] m, int64[3,3] sel) {{
        k = Constant<value=int64[1] {{3}}>()
        nz = NonZero(x)
        m = Mod<fmod=1>(x, x)
        sel = NonMaxSuppression(bx, scores, k)
    }}""")
    assert "NonZero is unsupported by TensorRT 8.2" in v["nz"]
    assert "Mod is unsupported" in v["m"]
    assert "NonMaxSuppression is experimental" in v["sel"]
    assert v["k"] is None


def test_ops_newer_than_opset_13_are_refused_or_converted():
    v = verdicts(f"""{head(17, 8)} g (float[2,4] x, float[4] s) => (float[2,4] y, float[2,4] z) {{
        y = LayerNormalization(x, s)
        z = Relu(x)
    }}""")
    assert ("LayerNormalization runs on TensorRT 8.2 only as its ONNX function body, which needs Reciprocal: "
            "not in the parser") in v["y"]
    assert v["z"] is None  # Relu-14 only widened its types: Relu-13 on float
    v = verdicts(f"""{head(19, 9)} g (float[2,4] x) => (float[4,6] y) {{
        p = Constant<value=int64[4] {{1,1,1,1}}>()
        y = Pad<mode="wrap">(x, p)
    }}""")
    assert "opset <= 13" in v["y"] and "wrap" in v["y"]


@pytest.mark.parametrize("body, expect", [
    ('y = Resize<mode="cubic">(x, , sc)', "Resize mode 'cubic'"),
    ('y = Resize<mode="linear", coordinate_transformation_mode="tf_crop_and_resize">(x, , sc)',
     "coordinate_transformation_mode"),
    ('y = Resize<mode="nearest", nearest_mode="round_prefer_ceil">(x, , sc)', None),
    ('p = Constant<value=int64[8] {0,0,1,1,0,0,1,1}>() q = Pad<mode="reflect">(x, p) y = Resize(q, , sc)', None),
    ('c = Conv(x, x) y = Resize(c, , sc)', "weights `W` must be an initializer"),
])
def test_attribute_and_constness_limits(body, expect):
    text = f"""{head()} g (float[1,1,4,4] x) => (float[1,1,8,8] y) {{
        sc = Constant<value=float[4] {{1,1,2,2}}>()
        {body}
    }}"""
    reasons = [r for r in verdicts(text).values() if r]
    if expect is None:
        assert reasons == []
    else:
        assert any(expect in r for r in reasons), reasons


@pytest.mark.parametrize("text, expect", [
    (f"""{head()} g (float[1,2,8] x, float[2,2,3] w) => (float[1,2,6] y) {{ y = Conv(x, w) }}""", "2D or 3D only"),
    (f"""{head()} g (float[1,1,4,4] x) => (float[1,1,2,2] y, int64[1,1,2,2] i) {{
        y, i = MaxPool<kernel_shape=[2,2], strides=[2,2]>(x) }}""", "`Indices` output"),
    (f"""{head()} g (double[2,2] x) => (double[2,2] y) {{ y = Relu(x) }}""", "DOUBLE"),
    (f"""{head()} g (int8[2,2] x) => (int8[2,2] y) {{ y = Identity(x) }}""", "no INT8 path"),
    (f"""{head()} g (int64[2] x) => (int64[2] y) {{
        b = Constant<value=int64[2] {{5000000000, 1}}>() y = Add(x, b) }}""", "outside INT32"),
    (f"""{head()} g (float[2,3] a, float[3,4] b) => (float[2,4] y) {{ y = Einsum<equation="...i,ij->...j">(a, b) }}""",
     "ellipsis"),
    (f"""{head()} g (float[3,3] a) => (float[3] y) {{ y = Einsum<equation="ii->i">(a) }}""", "diagonal"),
    (f"""{head()} g (float[2,3] x) => (double[2,3] y) {{ y = Cast<to=11>(x) }}""", "DOUBLE"),
    (f"""{head()} g (float[2,3] x) => (float[2,3] y) {{ y = Relu(x) }}""", None),
    (f"""{head()} g (float[N,3] x) => (float[N,3] y) {{ y = Relu(x) }}""", "no static shape"),
])
def test_tensor_type_shape_and_op_limits(text, expect):
    reasons = [r for r in verdicts(text).values() if r]
    if expect is None:
        assert reasons == []
    else:
        assert any(expect in r for r in reasons), reasons


def test_shape_inputs_must_be_constants():
    x = gs.Variable("x", np.float32, [1, 1, 4, 4])
    s = gs.Variable("s", np.int64, [4])
    r = gs.Variable("r", np.float32, [1, 1, 4, 4])
    gs.Node("Shape", "shape", inputs=[x], outputs=[s])
    reshape = gs.Node("Reshape", "reshape", inputs=[x, s], outputs=[r])
    assert "input 1 ('s') of Reshape must be a constant" in trt.supports(reshape, 13)
    reshape.inputs[1] = gs.Constant("s_const", np.array([1, 1, 4, 4], np.int64))
    assert trt.supports(reshape, 13) is None


def test_custom_domains_and_bidirectional_lstm_activations():
    model = onnx.parser.parse_model(f"""{head()} g (float[2,4] x) => (float[2,4] y) {{ y = Relu(x) }}""")
    node = gs.import_onnx(model).nodes[0]
    node.domain = "com.microsoft"
    assert "domain 'com.microsoft'" in trt.supports(node, 13)
    x = gs.Variable("x", np.float32, [5, 1, 3])
    w = gs.Constant("w", np.zeros((2, 16, 3), np.float32))
    r = gs.Constant("r", np.zeros((2, 16, 4), np.float32))
    y = gs.Variable("y", np.float32, [5, 2, 1, 4])
    lstm = gs.Node("LSTM", "lstm", attrs={"direction": "bidirectional", "hidden_size": 4,
                                          "activations": ["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Relu"]},
                   inputs=[x, w, r], outputs=[y])
    assert "same for both directions" in trt.supports(lstm, 13)
    lstm.attrs["activations"] = ["Sigmoid", "Tanh", "Tanh"] * 2
    assert trt.supports(lstm, 13) is None


def test_prepare_names_the_node_it_cannot_take():
    model = onnx.parser.parse_model(f"""{head()} g (float[4,3] x) => (float[4,3] y, int64[2,12] nz) {{
        y = Relu(x)
        nz = NonZero(y)
    }}""")
    model.graph.node[1].name = "find_nonzero"
    with pytest.raises(EdgecError, match=r"node 'find_nonzero' \(NonZero\).*Nano's CPU unit"):
        trt.prepare_submodel(model)


def test_prepare_converts_an_opset_17_submodel_down_to_13():
    model = onnx.parser.parse_model(f"""{head(17, 8)} g (float[1,2,3,3] x) => (float[1,2,3,3] y) {{
        z = Relu(x)
        b = BatchNormalization(z, s, bb, m, v)
        y = Identity(b)
    }}""")
    for name in ("s", "bb", "m", "v"):
        model.graph.initializer.append(numpy_helper.from_array(np.full(2, 0.5, np.float32), name))
    sub = trt.prepare_submodel(model)
    assert sub.opset_import[0].version == 13 and sub.ir_version == 7
    feeds = random_feeds(model)
    assert np.allclose(cpu_run(model, feeds)[0], cpu_run(sub, feeds)[0])


def test_int64_bindings_are_refused():
    model = onnx.parser.parse_model(f"""{head()} g (float[4,3] x) => (int64[2] y) {{ y = Shape(x) }}""")
    with pytest.raises(EdgecError, match="'y' is INT64"):
        trt.prepare_submodel(model)


# -- bundle ---------------------------------------------------------------------------------------


def gpu_stage(variant: str = "fp16") -> StageSpec:
    return StageSpec(name="s1", device="nano", unit="gpu", backend="tensorrt", variant=variant, model="nano/s1.onnx",
                     sha256="0" * 64, inputs=[TensorSpec("images", "float32", [1, 3, 224, 224]),
                                              TensorSpec("mask", "float32", [1, 1, 56, 56])],
                     outputs=[TensorSpec("feat", "float32", [1, 256, 56, 56])], receives=["images"], sends=["feat"],
                     predicted_ms=1.0, memory_bytes=1)


def cpu_stage() -> StageSpec:
    return StageSpec(name="s2", device="nano", unit="cpu", backend="neon", variant="fp32", model="nano/s2.onnx",
                     sha256="0" * 64, inputs=[TensorSpec("feat", "float32", [1, 256, 56, 56])],
                     outputs=[TensorSpec("out", "float32", [1, 10])], receives=["feat"], sends=["out"],
                     predicted_ms=1.0, memory_bytes=1)


def test_the_gpu_stage_runs_under_the_tensorrt_provider_with_an_engine_cache():
    stage = gpu_stage()
    nano = cluster().devices["nano"]
    session = trt.session_config(nano, stage, workspace_mib=512)
    ep = session["ort_tensorrt_ep"]
    assert ep["providers"][0] == "TensorrtExecutionProvider"
    opts = ep["TensorrtExecutionProvider"]
    assert opts["trt_fp16_enable"] is True and opts["trt_int8_enable"] is False
    assert opts["trt_max_workspace_size"] == 512 * 2**20 and opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == "nano/trt_cache"
    assert trt.session_config(nano, gpu_stage("fp32"))["ort_tensorrt_ep"]["TensorrtExecutionProvider"][
        "trt_fp16_enable"] is False
    with pytest.raises(EdgecError, match="no INT8 path"):
        trt.session_config(nano, gpu_stage("int8"))
    assert "engine" not in session and "build" not in session  # no second, unused engine path


def test_nano_bundle_holds_both_backends():
    nano = cluster().devices["nano"]
    files = device_bundle(nano, [gpu_stage(), cpu_stage()])
    assert {"s2.session.json", "run_nano.sh", "README.md", "Dockerfile"} == set(files)
    run = files["run_nano.sh"]
    assert "'TensorrtExecutionProvider' in o.get_available_providers()" in run and "exit 2" in run
    assert "mkdir -p nano/trt_cache" in run
    assert run.endswith('exec taskset -c 0-3 python3 -m edgec.runtime serve . --device nano --deployment '
                        'deployment.json "$@"\n')
    assert run.index("TensorrtExecutionProvider") < run.index("serve")
    assert "## GPU stages (TensorRT 8.2" in files["README.md"] and "## CPU stages" in files["README.md"]
    assert files["Dockerfile"].startswith("# nano") and "FROM nvcr.io/nvidia/l4t-base:r32.7.1" in files["Dockerfile"]
    session = backend_for(nano, "gpu").session_config(gpu_stage())
    assert session["precision"] == "fp16"
