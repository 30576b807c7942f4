"""Blocked-layout (NCHWc) conversion points, their profile fields, fit and cost."""

from __future__ import annotations

import collections
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import numpy_helper

from edgec.errors import EdgecError
from edgec.costmodel.work import NodeWork, OP_CLASSES
from edgec.costmodel.microbench import BenchResult, nchwc_block_size
from edgec.costmodel.predict import layout_ms, predict_ms
from edgec.costmodel.runtime_fusion import fused_nodes
from edgec.costmodel.layout import blocked_nodes, conversions
from edgec.costmodel.builtin import BUILTIN_PROFILES
from edgec.costmodel.profile import parse_profile, parse_unit_profile
from edgec.costmodel.profiler import fit_layout_efficiency, fit_profile


def graph(text: str) -> onnx.ModelProto:
    """A model from ONNX text; the weights declared after the signature (``<float[..] w, ...>``) get values:
    random floats, or for int64 shapes the `SHAPES` entry of that name."""
    signature, body = text.split("{", 1)
    has_weights = signature.rstrip().endswith(">")
    declared = re.findall(r"(float|int64)\[([\d,]+)\] (\w+)", signature.split("<", 2)[-1]) if has_weights else []
    model = onnx.parser.parse_model((signature.rsplit("<", 1)[0] if has_weights else signature) + "{" + body)
    for i, node in enumerate(model.graph.node):
        node.name = f"{node.op_type.lower()}{i}"
    rng = np.random.default_rng(0)
    for dtype, dims, name in declared:
        shape = [int(d) for d in dims.split(",")]
        values = (np.array(SHAPES[name], np.int64) if dtype == "int64"
                  else rng.standard_normal(shape).astype(np.float32))
        model.graph.initializer.append(numpy_helper.from_array(values, name))
    return onnx.shape_inference.infer_shapes(model)


def nodes_of(model: onnx.ModelProto) -> list[gs.Node]:
    return list(gs.import_onnx(model).nodes)


def convs(model: onnx.ModelProto, block: int = 16) -> list[tuple[str, bool]]:
    nodes = nodes_of(model)
    return [(c.tensor, c.to_blocked) for c in conversions(nodes, block, fused_nodes(nodes))]


HEAD = '<ir_version: 8, opset_import: ["" : 13]>\n'
CONV_TRANSPOSE_CONV = HEAD + """
g (float[1,32,8,8] x) => (float[1,32,8,8] y) <float[32,32,1,1] w1, float[32,32,1,1] w2>
{
    a = Conv(x, w1)
    t = Transpose<perm = [0, 1, 3, 2]>(a)
    y = Conv(t, w2)
}
"""
CONV_RELU_CONV = HEAD + """
g (float[1,32,8,8] x) => (float[1,32,8,8] y) <float[32,32,3,3] w1, float[32,32,3,3] w2>
{
    a = Conv<pads = [1, 1, 1, 1]>(x, w1)
    r = Relu(a)
    y = Conv<pads = [1, 1, 1, 1]>(r, w2)
}
"""
RGB_STEM = HEAD + """
g (float[1,3,16,16] x) => (float[1,32,8,8] y) <float[32,3,3,3] w1>
{
    c = Conv<pads = [1, 1, 1, 1], strides = [2, 2]>(x, w1)
    y = MaxPool<kernel_shape = [2, 2], strides = [1, 1], pads = [0, 0, 1, 1]>(c)
}
"""
# ShuffleNet's unit: grouped 1x1 (34 channels per group: plain), channel shuffle, depthwise 3x3 (blocked),
# grouped 1x1, residual Sum
SHUFFLE_UNIT = HEAD + """
g (float[1,136,14,14] x) => (float[1,136,14,14] y)
  <float[136,34,1,1] w1, int64[5] s1, int64[4] s2, float[136,1,3,3] w2, float[136,34,1,1] w3>
{
    a = Conv<group = 4>(x, w1)
    r = Relu(a)
    g5 = Reshape(r, s1)
    t = Transpose<perm = [0, 2, 1, 3, 4]>(g5)
    f = Reshape(t, s2)
    d = Conv<group = 136, pads = [1, 1, 1, 1]>(f, w2)
    c = Conv<group = 4>(d, w3)
    y = Sum(c, x)
}
"""


SHAPES = {"s1": [1, 4, 34, 14, 14], "s2": [1, 136, 14, 14]}


def shuffle_unit() -> onnx.ModelProto:
    return graph(SHUFFLE_UNIT)


# -- conversion points -----------------------------------------------------------------------


def test_transpose_between_dense_convs_costs_two_conversions():
    assert convs(graph(CONV_TRANSPOSE_CONV)) == [("x", True), ("a", False), ("t", True), ("y", False)]


def test_relu_between_convs_stays_blocked_only_the_edges_convert():
    assert convs(graph(CONV_RELU_CONV)) == [("x", True), ("y", False)]


def test_stem_conv_reads_plain_rgb_and_pool_follows_in_blocked_layout():
    model = graph(RGB_STEM)
    assert blocked_nodes(nodes_of(model), 16) == {n.name for n in nodes_of(model)}
    assert convs(model) == [("y", False)]  # a conv with under `block` input channels reads NCHW itself


def test_shufflenet_unit_converts_around_the_depthwise_conv_only():
    nodes = nodes_of(shuffle_unit())
    assert blocked_nodes(nodes, 16, fused_nodes(nodes)) == {"conv5"}  # the depthwise conv
    assert convs(shuffle_unit()) == [("f", True), ("d", False)]


def test_no_block_no_conversions():
    assert convs(graph(CONV_TRANSPOSE_CONV), block=0) == []


def test_stage_outputs_leave_plain():
    nodes = nodes_of(graph(CONV_RELU_CONV))[:2]  # a stage ending after the Relu: its output is read outside
    assert [(c.tensor, c.to_blocked) for c in conversions(nodes, 16, fused_nodes(nodes))] == [("x", True),
                                                                                             ("r", False)]


@pytest.mark.skipif(nchwc_block_size() == 0, reason="ONNX Runtime runs no blocked layout on this machine")
@pytest.mark.parametrize("make", [lambda: graph(CONV_TRANSPOSE_CONV), lambda: graph(CONV_RELU_CONV),
                                  lambda: graph(RGB_STEM), shuffle_unit])
def test_conversion_points_match_onnxruntime(make):
    import onnxruntime as ort

    model = make()
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    ours = convs(model, nchwc_block_size())
    assert (ops["ReorderInput"], ops["ReorderOutput"]) == (sum(b for _, b in ours), sum(not b for _, b in ours))


# -- profile fields --------------------------------------------------------------------------


def unit_spec(**extra: object) -> dict:
    spec = {"peak_gflops": 100.0, "bandwidth_gbs": 10.0, "activation_bandwidth_gbs": 100.0, "overhead_ms": 0.01,
            "efficiency": {c: 0.5 for c in OP_CLASSES}}
    spec.update(extra)
    return spec


def test_missing_layout_fields_default_to_no_conversions_and_say_so():
    profile = parse_unit_profile(unit_spec(), "cpu")
    assert (profile.layout_block, profile.layout_efficiency) == (0, 1.0)
    assert "layout_block" in profile.sources
    assert profile.conversion_ms(1e6) == 0.0
    again = parse_unit_profile(parse_unit_profile(unit_spec(layout_block=16, layout_efficiency=0.5), "c").to_json(),
                               "c")
    assert (again.layout_block, again.layout_efficiency) == (16, 0.5)


@pytest.mark.parametrize("field,bad", [("layout_block", -1), ("layout_block", 1.5), ("layout_block", "16"),
                                       ("layout_block", True), ("layout_efficiency", 0),
                                       ("layout_efficiency", -0.2), ("layout_efficiency", "fast"),
                                       ("layout_efficiency", None)])
def test_bad_layout_field_is_rejected_naming_it(field, bad):
    with pytest.raises(EdgecError, match=rf"\$\.units\.cpu\.{field}"):
        parse_profile({"version": 1, "host": {}, "units": {"cpu": unit_spec(**{field: bad})}})


def test_builtin_profiles_charge_no_conversions():
    for name, profile in BUILTIN_PROFILES.items():
        assert profile.layout_block == 0, name


# -- cost ------------------------------------------------------------------------------------


def test_prediction_grows_by_the_conversion_cost():
    nodes = nodes_of(graph(CONV_TRANSPOSE_CONV))
    plain = parse_unit_profile(unit_spec(), "cpu")
    blocked = parse_unit_profile(unit_spec(layout_block=16, layout_efficiency=0.25), "cpu")
    tensor = 32 * 8 * 8 * 4
    one = 2 * tensor / 0.25 / 100e9 * 1e3 + 0.01  # read + write at a quarter of 100 GB/s, plus one node
    assert blocked.conversion_ms(tensor) == pytest.approx(one)
    assert layout_ms(nodes, blocked) == pytest.approx(4 * one)
    assert predict_ms(nodes, blocked) == pytest.approx(predict_ms(nodes, plain) + 4 * one)


# -- measuring -------------------------------------------------------------------------------


def test_fit_layout_efficiency_from_conversion_benches():
    work = NodeWork(0.0, 0, 0, 0, "layout")
    # two conversions of 1 MB each, read and written at 100 GB/s: 0.04 ms ideal
    half = BenchResult("reorder a", "layout", 2 * 0.01 + 0.08, work, 2, 2_000_000)  # 0.08 ms: 0.5
    eighth = BenchResult("reorder b", "layout", 2 * 0.01 + 0.32, work, 2, 2_000_000)  # 0.32 ms: 0.125
    assert fit_layout_efficiency([half], 0.01, 100.0) == pytest.approx(0.5)
    assert fit_layout_efficiency([half, eighth], 0.01, 100.0) == pytest.approx(0.25)  # geometric mean
    assert fit_layout_efficiency([BenchResult("dw", "depthwise", 0.03, work)], 0.01, 100.0) == 1.0


def test_fit_profile_records_the_block():
    results = [BenchResult("conv", "conv", 1.0, NodeWork(1e8, 0, 1000, 1000, "conv"))]
    assert fit_profile(results, 0.0, 1, None, layout_block=8).layout_block == 8
    assert fit_profile(results, 0.0, 1, None).layout_block == 0


@pytest.mark.skipif(nchwc_block_size() == 0, reason="ONNX Runtime runs no blocked layout on this machine")
def test_conversion_benches_run_and_convert_twice_per_step():
    from edgec.costmodel.microbench import _sum_work, layout_benches
    from edgec.costmodel.timing import random_feeds, session

    for bench in layout_benches():
        assert _sum_work(bench.build(1))[2] > 0  # bytes counted: the chain's tensors have shapes
        model = bench.build(2)
        assert [n.op_type for n in model.graph.node] == ["ReorderInput", "ReorderOutput"] * 2
        assert bench.conversions == 2
        sess = session(model, 1)
        feeds = random_feeds(sess)
        out = sess.run(None, feeds)[0]
        np.testing.assert_array_equal(out, next(iter(feeds.values())))  # a round trip changes nothing


# -- what blocked kernels cost: whole channel blocks; plain-layout ops -----------------------

CONV24 = HEAD + """
g (float[1,24,8,8] x) => (float[1,24,8,8] y) <float[24,24,3,3] w>
{
    y = Conv<pads = [1, 1, 1, 1]>(x, w)
}
"""
CONV32 = CONV24.replace("24", "32")
POOL24 = HEAD + """
g (float[1,24,8,8] x) => (float[1,24,8,8] y)
{
    y = MaxPool<kernel_shape = [3, 3], pads = [1, 1, 1, 1]>(x)
}
"""


def test_channel_padding_rounds_blocked_channels_up_to_whole_blocks():
    from edgec.costmodel.layout import channel_padding

    conv24, = nodes_of(graph(CONV24))
    stem, _ = nodes_of(graph(RGB_STEM))   # 3 -> 32 channels: reads plain, 32 already whole
    dw, = [n for n in nodes_of(shuffle_unit()) if n.name == "conv5"]  # 136 channels depthwise
    grouped = nodes_of(shuffle_unit())[0]  # runs plain: no blocks
    assert channel_padding(conv24, 16) == pytest.approx((32 / 24) ** 2)
    assert channel_padding(conv24, 8) == 1.0
    assert channel_padding(conv24, 0) == 1.0
    assert channel_padding(stem, 16) == 1.0
    assert channel_padding(dw, 16) == pytest.approx(144 / 136)
    assert channel_padding(grouped, 16) == 1.0
    assert channel_padding(nodes_of(graph(POOL24))[0], 16) == 1.0


def test_blocked_conv_of_24_channels_costs_what_32_channels_cost():
    blocked = parse_unit_profile(unit_spec(layout_block=16, peak_gflops=1.0), "cpu")  # compute-bound
    plain = parse_unit_profile(unit_spec(peak_gflops=1.0), "cpu")
    conv24, conv32 = nodes_of(graph(CONV24)), nodes_of(graph(CONV32))
    assert predict_ms(conv24, blocked) - layout_ms(conv24, blocked) == pytest.approx(
        predict_ms(conv32, blocked) - layout_ms(conv32, blocked))
    assert predict_ms(conv24, plain) < predict_ms(conv32, plain)  # no blocks: the 24 channels it has


def test_pool_run_in_plain_layout_takes_the_plain_efficiency():
    pool = nodes_of(graph(POOL24))
    assert blocked_nodes(pool, 16) == set()  # 24 channels: no whole blocks
    plain_slow = parse_unit_profile(unit_spec(layout_block=16, peak_gflops=0.01,
                                              plain_efficiency={"pool": 0.125}), "cpu")
    no_blocks = parse_unit_profile(unit_spec(peak_gflops=0.01, plain_efficiency={"pool": 0.125}), "cpu")
    without = parse_unit_profile(unit_spec(layout_block=16, peak_gflops=0.01), "cpu")
    flops = 24 * 8 * 8 * 9
    assert predict_ms(pool, plain_slow) == pytest.approx(flops / (0.01e9 * 0.125) * 1e3 + 0.01)
    assert predict_ms(pool, no_blocks) == predict_ms(pool, without) == pytest.approx(
        flops / (0.01e9 * 0.5) * 1e3 + 0.01)  # efficiency.pool: all pools of a runtime without blocks


def test_plain_efficiency_is_for_pools_only_not_reductions_of_the_pool_class():
    reduce = nodes_of(graph(POOL24.replace("MaxPool<kernel_shape = [3, 3], pads = [1, 1, 1, 1]>(x)",
                                           "ReduceMean<axes = [1], keepdims = 1>(x)").replace(
        "float[1,24,8,8] y", "float[1,1,8,8] y")))
    assert reduce[0].op == "ReduceMean"
    slow = parse_unit_profile(unit_spec(layout_block=16, plain_efficiency={"pool": 0.01}), "cpu")
    without = parse_unit_profile(unit_spec(layout_block=16), "cpu")
    assert predict_ms(reduce, slow) == predict_ms(reduce, without)


@pytest.mark.skipif(nchwc_block_size() != 16, reason="ONNX Runtime does not block 16 channels on this machine")
@pytest.mark.parametrize("text,blocked", [(POOL24, False), (POOL24.replace("24", "32"), True),
                                          (CONV24, True)])
def test_which_ops_run_blocked_matches_onnxruntime(text, blocked):
    import onnxruntime as ort

    model = graph(text)
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        domains = [n.domain for n in onnx.load(so.optimized_model_filepath).graph.node
                   if n.op_type in ("MaxPool", "Conv")]
    assert domains == ["com.microsoft.nchwc" if blocked else ""]
    assert bool(blocked_nodes(nodes_of(model), 16)) == blocked


def test_plain_efficiency_round_trips_and_bad_entries_are_named():
    profile = parse_unit_profile(unit_spec(layout_block=16, plain_efficiency={"pool": 0.1}), "cpu")
    assert parse_unit_profile(profile.to_json(), "cpu").plain_efficiency == {"pool": 0.1}
    assert "plain_efficiency" not in parse_unit_profile(unit_spec(), "cpu").to_json()
    for bad, where in (({"pools": 0.1}, "plain_efficiency.pools"), ({"pool": 0}, "plain_efficiency.pool"),
                       ({"pool": "slow"}, "plain_efficiency.pool"), ([0.1], "plain_efficiency")):
        with pytest.raises(EdgecError, match=rf"\$\.units\.cpu\.{where}"):
            parse_profile({"version": 1, "host": {}, "units": {"cpu": unit_spec(plain_efficiency=bad)}})


def test_fit_keeps_plain_benches_out_of_the_class_efficiency():
    work = NodeWork(1e8, 0, 1000, 1000, "pool")
    dense = BenchResult("conv", "conv", 1.0, NodeWork(1e8, 0, 1000, 1000, "conv"))  # peak 100 GFLOP/s
    blocked = BenchResult("pool blocked", "pool", 2.0, work)  # half of peak
    plain = BenchResult("pool plain", "pool", 8.0, work, plain=True)  # an eighth
    profile = fit_profile([dense, blocked, plain], 0.0, 1, None, layout_block=16)
    assert profile.efficiency["pool"] == pytest.approx(0.5)
    assert profile.plain_efficiency == {"pool": pytest.approx(0.125)}
    assert fit_profile([dense, blocked, plain], 0.0, 1, None).plain_efficiency == {}  # no blocks, no plain


@pytest.mark.skipif(nchwc_block_size() == 0, reason="ONNX Runtime runs no blocked layout on this machine")
def test_plain_benches_run_in_plain_layout():
    from edgec.costmodel.microbench import plain_benches

    block = nchwc_block_size()
    for bench in plain_benches(block):
        nodes = nodes_of(onnx.shape_inference.infer_shapes(bench.build(2)))
        assert bench.plain and blocked_nodes(nodes, block) == set()
