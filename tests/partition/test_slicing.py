"""Spatial slicing: a run of row-local nodes split into bands with halos computes what the original does.

Brute force: the unsplit model run by onnxruntime. Hand-written graphs cover stride 2, dilation,
asymmetric pads, SAME pads, ceil_mode pooling, branch Concat and residual Add; hypothesis draws conv stacks.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from edgec.ir import name_nodes
from edgec.passes.partition.halo import Window, needed_rows, split_rows
from edgec.passes.partition.slicing import find_run, slice_run
from edgec.runtime.session import inference_session


def _random_inits(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    defined = {i.name for i in model.graph.input} | {o for n in model.graph.node for o in n.output}
    for vi in list(model.graph.value_info):
        if vi.name not in defined:
            shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            arr = rng.standard_normal(shape).astype(np.float32) * 0.3
            if "var" in vi.name:
                arr = np.abs(arr) + 0.5
            model.graph.initializer.append(numpy_helper.from_array(arr, vi.name))
            model.graph.value_info.remove(vi)
    return onnx.shape_inference.infer_shapes(model)


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = inference_session(model.SerializeToString())
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _split_and_compare(model: onnx.ModelProto, bands_or_shares, *, nodes=None, seed: int = 0) -> dict:
    """Split the run (all nodes unless given by name) into bands; outputs equal the unsplit model's."""
    graph = gs.import_onnx(model)
    opset = {o.domain: o.version for o in model.opset_import}[""]
    chosen = [n for n in graph.nodes if nodes is None or n.name in nodes]
    run = find_run(graph, chosen)
    assert not isinstance(run, str), run
    bands = bands_or_shares if isinstance(bands_or_shares[0], tuple) else split_rows(run.height, bands_or_shares)
    rewrite = slice_run(graph, run, bands, opset)
    split = gs.export_onnx(graph)
    split.opset_import[0].version = opset
    onnx.checker.check_model(split, full_check=True)
    x_info = model.graph.input[0].type.tensor_type.shape.dim
    x = np.random.default_rng(seed).standard_normal([d.dim_value for d in x_info]).astype(np.float32)
    want, got = _run(model, x), _run(split, x)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    assert sum(1 for n in split.graph.node if n.op_type == "Concat" and n.name.endswith("__merge")) == 1
    return {"rewrite": rewrite, "split": split}


def _model(text: str) -> onnx.ModelProto:
    """Parse, name the nodes as load does, and let shape inference give the outputs' shapes."""
    model = onnx.parser.parse_model(text)
    name_nodes(model)
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    return _random_inits(model)


STRIDED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,33,20] x) => (float[1,8,9,4] y) <float[8,3,3,3] w1, float[8] b1, float[8,8,3,3] w2>
{
    a = Conv<strides=[2,2], pads=[1,1,1,1]>(x, w1, b1)
    r = Relu(a)
    c = Conv<dilations=[2,2], pads=[2,1,2,1]>(r, w2)
    y = MaxPool<kernel_shape=[3,3], strides=[2,2], pads=[0,0,1,1], ceil_mode=1>(c)
}
"""

ASYM = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,4,23,11] x) => (float[1,4,11,6] y) <float[4,4,5,3] w1, float[4,1,3,3] w2>
{
    a = Conv<pads=[3,1,0,1], strides=[1,1]>(x, w1)
    b = Conv<group=4, auto_pad="SAME_UPPER", strides=[2,2]>(a, w2)
    y = AveragePool<kernel_shape=[3,3], strides=[1,1], pads=[1,1,1,1], count_include_pad=1>(b)
}
"""

BRANCHES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,24,16] x) => (float[1,12,12,8] y) <float[4,4,1,1] w1, float[4,4,3,3] w2, float[4,4,5,5] w3,
    float[4] s, float[4] bias, float[4] mean, float[4] var>
{
    p = MaxPool<kernel_shape=[2,2], strides=[2,2]>(x)
    b1 = Conv(p, w1)
    b2 = Conv<pads=[1,1,1,1]>(p, w2)
    b3 = Conv<pads=[2,2,2,2]>(p, w3)
    n = BatchNormalization(b3, s, bias, mean, var)
    res = Add(b2, p)
    y0 = Concat<axis=1>(b1, res, n)
    y = LeakyRelu(y0)
}
"""

AVG_CEIL = """
<ir_version: 8, opset_import: ["" : 11]>
g (float[1,2,17,17] x) => (float[1,2,8,8] y) <float[2,2,3,3] w>
{
    a = Conv<pads=[1,1,1,1], kernel_shape=[3,3]>(x, w)
    y = AveragePool<kernel_shape=[3,3], strides=[2,2], ceil_mode=1>(a)
}
"""


@pytest.mark.parametrize("text", [STRIDED, ASYM, BRANCHES, AVG_CEIL], ids=["stride-dilation-ceil", "asym-same-group",
                                                                          "branch-concat", "avgpool-ceil"])
@pytest.mark.parametrize("shares", [[1, 1], [3, 1, 2], [1] * 5])
def test_hand_written_graphs_split_exactly(text, shares):
    model = _model(text)
    result = _split_and_compare(model, shares)
    rows = result["rewrite"].rows
    assert [r.out for r in rows] == split_rows(rows[-1].out[1], shares)
    rewrite = result["rewrite"]
    assert all(r.redundant_flops >= 0 for r in rows)
    # what the bands repeat is exactly the work beyond the unsplit run's (crops cost nothing)
    assert abs(sum(r.flops for r in rows) - rewrite.flops_unsplit - rewrite.redundant_flops) <= 1e-6 * rewrite.flops_unsplit


def test_opset9_crops_with_slice_attributes():
    text = STRIDED.replace('"" : 17', '"" : 9').replace(", ceil_mode=1", "").replace("dilations=[2,2], ", "")
    split = _split_and_compare(_model(text), [2, 1])["split"]
    assert all(len(n.input) == 1 for n in split.graph.node if n.op_type == "Slice")


def test_every_band_a_single_row():
    model = _model(STRIDED)
    _split_and_compare(model, [(k, k + 1) for k in range(9)])


def test_halo_rows_of_a_3x3_stack():
    """Two 3x3 convs (pad 1): a middle band of output rows [4, 8) reads input rows [2, 10): 2 halo rows each side."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,1,12,4] x) => (float[1,1,12,4] y) <float[1,1,3,3] w1, float[1,1,3,3] w2>
    {
        a = Conv<pads=[1,1,1,1]>(x, w1)
        y = Conv<pads=[1,1,1,1]>(a, w2)
    }
    """
    model = _model(text)
    result = _split_and_compare(model, [(0, 4), (4, 8), (8, 12)])
    rows = result["rewrite"].rows
    assert [r.reads for r in rows] == [(0, 6), (2, 10), (6, 12)]
    assert [r.halo for r in rows] == [(0, 2), (2, 2), (2, 0)]
    # the middle branch pads no row above or below; the outer ones keep the image border's pad
    pads = {n.name: [list(a.ints) for a in n.attribute if a.name == "pads"][0]
            for n in result["split"].graph.node if n.op_type == "Conv"}
    assert pads["Conv_0__s1"] == [0, 1, 0, 1] and pads["Conv_1__s1"] == [0, 1, 0, 1]
    assert pads["Conv_0__s0"] == [1, 1, 0, 1] and pads["Conv_1__s2"] == [0, 1, 1, 1]


def test_window_arithmetic():
    w = Window(extent=5, stride=2, pad_top=2, pad_bottom=2)  # dilated 3x3 (d=2), stride 2
    assert w.reads((0, 3), 12) == (0, 7)
    assert w.pads_for((0, 3), 12) == (2, 0)
    assert w.reads((3, 6), 12) == (4, 12)
    assert w.pads_for((3, 6), 12) == (0, 1)


def test_not_a_run():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,2,8,8] x) => (float[1,2,8,8] y, float[1,128] z) <float[2,2,3,3] w, int64[2] shape>
    {
        a = Conv<pads=[1,1,1,1]>(x, w)
        y = Relu(a)
        z = Reshape(a, shape)
    }
    """
    graph = gs.import_onnx(_model(text))
    conv, relu, reshape = graph.nodes
    assert "Reshape" in find_run(graph, [conv, relu, reshape])
    assert "read outside" in find_run(graph, [conv, relu])
    assert not isinstance(find_run(graph, [relu]), str)
    concat_rows = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,2,8,8] x) => (float[1,2,16,8] y)
    {
        y = Concat<axis=2>(x, x)
    }
    """
    graph = gs.import_onnx(_model(concat_rows))
    assert "rows" in find_run(graph, list(graph.nodes))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(6, 30), st.data())
def test_hypothesis_conv_stacks(height, data):
    lines, inits, last, shares = data.draw(_stack(height))
    decl = f" <{', '.join(inits)}>" if inits else ""
    text = (f'<ir_version: 8, opset_import: ["" : 17]>\ng (float[1,2,{height},3] x) => (float[1,2,?,3] {last})'
            f'{decl}\n{{\n' + "\n".join(lines) + "\n}\n")
    model = _model(text)
    out_h = model.graph.output[0].type.tensor_type.shape.dim[2].dim_value
    shares = shares[:out_h]
    _split_and_compare(model, shares)


def _stack(height: int):
    @st.composite
    def build(draw):
        h = height
        lines, inits = [], []
        prev = "x"
        for i in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["conv", "conv", "max", "avg"]))
            k = draw(st.integers(1, 4))
            d = draw(st.integers(1, 2)) if kind != "avg" else 1
            s = draw(st.integers(1, 3))
            extent = (k - 1) * d + 1
            top = draw(st.integers(0, min(extent - 1, 3)))
            bottom = draw(st.integers(0, min(extent - 1, 3)))
            if h + top + bottom < extent:
                break
            pads = f"pads=[{top},0,{bottom},0]"
            if kind == "conv":
                inits.append(f"float[2,2,{k},1] w{i}")
                lines.append(f"t{i} = Conv<strides=[{s},1], dilations=[{d},1], {pads}>({prev}, w{i})")
            else:
                op = "MaxPool" if kind == "max" else "AveragePool"
                include = draw(st.integers(0, 1)) if kind == "avg" else 0
                ceil = draw(st.integers(0, 1))
                extra = f", dilations=[{d},1]" if kind == "max" else f", count_include_pad={include}"
                lines.append(f"t{i} = {op}<kernel_shape=[{k},1], strides=[{s},1], {pads}, ceil_mode={ceil}{extra}>"
                             f"({prev})")
            lines.append(f"r{i} = Relu(t{i})")
            model = _try_shape(lines, inits, height, f"r{i}")
            if model is None:
                lines, inits = lines[:-2], [w for w in inits if w.split()[-1] != f"w{i}"]
                break
            prev = f"r{i}"
            h = model
        if prev == "x":
            lines, prev = ["r0 = Relu(x)"], "r0"
        return lines, inits, prev, draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    return build()


def _try_shape(lines, inits, height, last) -> int | None:
    decl = f" <{', '.join(inits)}>" if inits else ""
    text = (f'<ir_version: 8, opset_import: ["" : 17]>\ng (float[1,2,{height},3] x) => (float[1,2,?,3] {last})'
            f'{decl}\n{{\n' + "\n".join(lines) + "\n}\n")
    try:
        model = _model(text)
        h = model.graph.output[0].type.tensor_type.shape.dim[2].dim_value
        # the rows a runtime really makes: shape inference and onnxruntime must agree
        x = np.zeros((1, 2, height, 3), np.float32)
        got = _run(model, x)[0]
        return h if h >= 1 and got.shape[2] == h else None
    except Exception:
        return None


def test_needed_rows_hull_over_readers():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,1,10,4] x) => (float[1,1,10,4] y) <float[1,1,3,3] w, float[1,1,5,5] v>
    {
        a = Relu(x)
        b = Conv<pads=[1,1,1,1]>(a, w)
        c = Conv<pads=[2,2,2,2]>(a, v)
        y = Add(b, c)
    }
    """
    graph = gs.import_onnx(_model(text))
    need = needed_rows(graph.nodes, {"y": (4, 6)})
    assert need["b"] == need["c"] == (4, 6)
    assert need["a"] == need["x"] == (2, 8)
