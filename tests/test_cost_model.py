"""The cost model's grouped-conv class (efficiency and GEMM shape): profiles, fitting, predictions and fusion."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import EdgecError
from edgec.costmodel.work import OP_CLASSES, NodeWork, node_work
from edgec.costmodel.builtin import BUILTIN_PROFILES
from edgec.costmodel.microbench import BenchResult, _conv_shape, default_benches
from edgec.costmodel.predict import predict_ms
from edgec.costmodel.runtime_fusion import fused_nodes
from edgec.costmodel.profile import (UnitProfile, default_grouped_efficiency, parse_profile,
                           parse_unit_profile)
from edgec.costmodel.profiler import fit_profile


def unit_spec(**eff_overrides: float) -> dict:
    eff = {c: 0.5 for c in OP_CLASSES}
    eff.update(eff_overrides)
    return {"peak_gflops": 100.0, "bandwidth_gbs": 10.0, "overhead_ms": 0.01, "efficiency": eff}


def residual_block(group: int, cin_per_group: int, residual: bool = True) -> list[gs.Node]:
    """x -> Conv(group) -> Add(x) -> Relu (without `residual`: x -> Conv -> Relu), shapes inferred."""
    c = group * cin_per_group
    w = numpy_helper.from_array(np.zeros([c, cin_per_group, 1, 1], np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", group=group),
             helper.make_node("Add", ["c", "x"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    if not residual:
        nodes = [nodes[0], helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    return list(gs.import_onnx(model).nodes)


# -- profiles --------------------------------------------------------------------------------


def test_grouped_is_an_op_class_every_builtin_profile_has():
    assert "grouped" in OP_CLASSES
    for name, profile in BUILTIN_PROFILES.items():
        eff = profile.efficiency
        assert eff["grouped"] == pytest.approx(math.sqrt(eff["conv"] * eff["depthwise"]), abs=1e-3), name
        assert eff["depthwise"] <= eff["grouped"] <= eff["conv"], name


def test_profile_without_grouped_defaults_to_geometric_mean_and_says_so():
    spec = unit_spec(conv=0.9, depthwise=0.4)
    del spec["efficiency"]["grouped"]
    profile = parse_unit_profile(spec, "cpu")
    assert profile.efficiency["grouped"] == pytest.approx(0.6)
    assert "efficiency.grouped" in profile.sources
    assert profile.to_json()["efficiency"]["grouped"] == pytest.approx(0.6)  # written back in full


@pytest.mark.parametrize("bad", [0, -0.3, "fast", None, True])
def test_bad_grouped_efficiency_is_rejected_naming_the_field(bad):
    spec = unit_spec()
    spec["efficiency"]["grouped"] = bad
    with pytest.raises(EdgecError, match=r"\$\.units\.cpu\.efficiency\.grouped"):
        parse_profile({"version": 1, "host": {}, "units": {"cpu": spec}})


def test_missing_conv_is_reported_before_a_grouped_default_is_derived():
    spec = unit_spec()
    del spec["efficiency"]["grouped"], spec["efficiency"]["conv"]
    with pytest.raises(EdgecError, match=r"efficiency\.conv: missing field"):
        parse_unit_profile(spec, "cpu")


def test_default_grouped_efficiency_lies_between_its_inputs():
    assert default_grouped_efficiency(1.0, 0.25) == 0.5
    assert default_grouped_efficiency(0.3, 0.3) == 0.3


# -- micro-benchmarks and fitting ------------------------------------------------------------


def test_default_benches_measure_grouped_convs_with_several_channels_per_group():
    grouped = [b for b in default_benches() if b.op_class == "grouped"]
    assert grouped
    for bench in grouped:
        conv = next(n for n in gs.import_onnx(bench.build(1)).nodes if n.op == "Conv")
        assert node_work(conv).op_class == "grouped"
        assert conv.inputs[1].values.shape[1] >= 2, bench.name  # several channels per group, as ShuffleNet has
    shapes = [_conv_shape(b.build(2), "grouped") for b in grouped]
    assert len({r for r, _ in shapes}) >= 3 and len({p for _, p in shapes}) >= 3  # enough to fit grouped_shape


def test_conv_work_carries_its_gemm_shape():
    conv = residual_block(group=4, cin_per_group=34)[0]
    work = node_work(conv)
    assert (work.reduction, work.pixels) == (34 * 1 * 1, 8 * 8)
    relu = next(n for n in residual_block(group=4, cin_per_group=34) if n.op == "Relu")
    assert (node_work(relu).reduction, node_work(relu).pixels) == (0, 0)


def _shaped(name: str, reduction: int, pixels: int, eff: float, shape: tuple[float, float]) -> BenchResult:
    """A grouped bench timed as the GEMM-shape law says, at peak 100 GFLOP/s."""
    flops = 1e7
    factor = (1 + shape[0] / reduction) * (1 + shape[1] / pixels)
    ms = flops * factor / (100e9 * eff) * 1e3
    return BenchResult(name, "grouped", ms, NodeWork(flops, 0, 1000, 1000, "grouped", reduction, pixels))


def test_fit_recovers_the_grouped_gemm_shape_and_the_large_gemm_efficiency():
    true = (9.5, 15.5)
    results = [_result("conv", "conv", 1e8, 1.0)] + [
        _shaped(f"g{k}x{n}", k, n, 0.9, true) for k, n in ((6, 3136), (34, 784), (68, 196), (136, 49))]
    profile = fit_profile(results, 0.0, 1, None)
    assert profile.grouped_shape == pytest.approx(true)
    assert profile.efficiency["grouped"] == pytest.approx(0.9, rel=1e-3)
    for r in results[1:]:  # each bench predicted as measured
        assert profile.node_ms(r.work, overhead=False) == pytest.approx(r.ms, rel=1e-3)


def test_fit_ignores_a_memory_bound_grouped_bench():
    true = (9.5, 15.5)
    clean = [_shaped(f"g{k}x{n}", k, n, 0.9, true) for k, n in ((6, 3136), (34, 784), (68, 196))]
    slow_memory = BenchResult("g136x49", "grouped", 0.05,  # moves 10 MB at 10 GB/s: 1 ms, so memory-bound
                              NodeWork(1e7, 10_000_000, 1000, 1000, "grouped", 136, 49))
    results = [_result("conv", "conv", 1e8, 1.0)] + clean + [slow_memory]
    profile = fit_profile(results, 0.0, 1, None)
    assert profile.grouped_shape == pytest.approx(true)
    assert profile.efficiency["grouped"] == pytest.approx(0.9, rel=1e-3)


def test_blocked_grouped_conv_runs_no_gemm_per_group():
    shaped = parse_unit_profile(dict(unit_spec(), grouped_shape={"reduction": 6, "pixels": 0}), "cpu")
    work = NodeWork(1e9, 0, 1000, 1000, "grouped", 6, 3136)
    assert shaped.node_ms(work, blocked=True) == parse_unit_profile(unit_spec(), "cpu").node_ms(work)


def test_passes_keep_each_chain_lengths_fastest_time(monkeypatch):
    import edgec.costmodel.microbench as mb

    bench = next(b for b in default_benches() if b.name.startswith("relu"))  # lengths 1 and 5
    timed = iter([(1.0, 3.0), (0.5, 2.9), (0.8, 3.5)])  # a slow spell in pass 1 (short) and pass 3 (long)
    monkeypatch.setattr(mb, "time_bench", lambda *args, **kwargs: next(timed))
    result, = mb.run_benches([bench], 1, passes=3)
    assert result.ms == pytest.approx((2.9 - 0.5) / 4)


def test_fit_leaves_grouped_shape_out_without_benches_of_varied_shape():
    results = [_result("conv", "conv", 1e8, 1.0), _shaped("a", 34, 784, 0.8, (9.5, 15.5)),
               _shaped("b", 68, 784, 0.8, (9.5, 15.5))]
    assert fit_profile(results, 0.0, 1, None).grouped_shape == (0.0, 0.0)
    assert "grouped_shape" not in fit_profile(results, 0.0, 1, None).to_json()


def test_grouped_conv_with_few_channels_per_group_is_predicted_slower():
    shaped = parse_unit_profile(dict(unit_spec(), grouped_shape={"reduction": 6, "pixels": 0}), "cpu")
    flat = parse_unit_profile(unit_spec(), "cpu")
    work = NodeWork(1e9, 0, 1000, 1000, "grouped", 6, 3136)  # compute-bound at 100 GFLOP/s
    assert shaped.node_ms(work, overhead=False) == pytest.approx(2 * flat.node_ms(work, overhead=False))
    dense = NodeWork(1e9, 0, 1000, 1000, "conv", 6, 3136)  # other classes: no shape factor
    assert shaped.node_ms(dense) == flat.node_ms(dense)
    assert parse_unit_profile(shaped.to_json(), "cpu").grouped_shape == (6.0, 0.0)


@pytest.mark.parametrize("bad,where", [({"reduction": -1}, "grouped_shape.reduction"),
                                       ({"pixels": "many"}, "grouped_shape.pixels"),
                                       ({"k": 3}, "grouped_shape.k"), ([6, 15], "grouped_shape"),
                                       ({"reduction": 1e300}, "grouped_shape.reduction")])
def test_bad_grouped_shape_is_rejected_naming_the_field(bad, where):
    with pytest.raises(EdgecError, match=rf"\$\.units\.cpu\.{where}"):
        parse_profile({"version": 1, "host": {}, "units": {"cpu": dict(unit_spec(), grouped_shape=bad)}})


def _result(name: str, op_class: str, flops: float, ms: float) -> BenchResult:
    return BenchResult(name, op_class, ms, NodeWork(flops, 0, 1000, 1000, op_class))


def test_fit_gives_grouped_its_own_efficiency():
    results = [_result("conv", "conv", 1e8, 1.0), _result("dw", "depthwise", 1e6, 0.1),
               _result("gconv", "grouped", 5e7, 1.0)]
    profile = fit_profile(results, 0.0, 1, None)
    assert profile.peak_gflops == pytest.approx(100.0)
    assert profile.efficiency["grouped"] == pytest.approx(0.5, rel=1e-3)
    assert profile.efficiency["depthwise"] == pytest.approx(0.1, rel=1e-3)


def test_fit_without_grouped_benches_derives_grouped_from_conv_and_depthwise():
    results = [_result("conv", "conv", 1e8, 1.0), _result("dw", "depthwise", 1e6, 0.04)]
    profile = fit_profile(results, 0.0, 1, None)
    assert profile.efficiency["grouped"] == pytest.approx(math.sqrt(1.0 * 0.25), rel=1e-3)


# -- predictions and fusion ------------------------------------------------------------------


def test_grouped_conv_is_predicted_at_grouped_efficiency():
    conv = residual_block(group=4, cin_per_group=34)[0]
    work = node_work(conv)
    fast = parse_unit_profile(unit_spec(grouped=0.8), "cpu")
    slow = parse_unit_profile(unit_spec(grouped=0.2), "cpu")
    assert work.op_class == "grouped"
    compute = work.flops / (100e9 * 0.8) * 1e3
    assert fast.node_ms(work, overhead=False) == pytest.approx(max(compute, fast.memory_ms(
        work.param_bytes, work.activation_bytes)))
    assert slow.node_ms(work, overhead=False) == pytest.approx(4 * compute)


def test_grouped_conv_takes_its_activation_but_not_a_residual_add():
    grouped = residual_block(group=4, cin_per_group=34)
    assert fused_nodes(grouped) == set()  # Add is residual: stays a node, and so does the Relu after it
    dense = residual_block(group=1, cin_per_group=32)
    assert fused_nodes(dense) == {"add", "relu"}
    assert fused_nodes(residual_block(group=4, cin_per_group=34, residual=False)) == {"relu"}
    profile = UnitProfile("u", 100.0, 10.0, {c: 0.5 for c in OP_CLASSES}, 0.01)
    conv_only = sum(profile.node_ms(node_work(n)) for n in grouped[:1])
    assert predict_ms(grouped, profile) > conv_only + 2 * profile.overhead_ms - 1e-12


# -- layout ops ------------------------------------------------------------------------------


def test_layout_ops_run_at_memory_efficiency_of_the_activation_bandwidth():
    work = NodeWork(0.0, 0, 1_000_000, 1_000_000, "memory")
    full = parse_unit_profile(dict(unit_spec(memory=1.0), activation_bandwidth_gbs=100.0), "cpu")
    half = parse_unit_profile(dict(unit_spec(memory=0.5), activation_bandwidth_gbs=100.0), "cpu")
    assert full.node_ms(work, overhead=False) == pytest.approx(0.02)
    assert half.node_ms(work, overhead=False) == pytest.approx(0.04)
    relu = NodeWork(2e6, 0, 1_000_000, 1_000_000, "elementwise")  # other classes: unaffected
    assert half.node_ms(relu) == full.node_ms(relu)


def test_fit_memory_efficiency_from_layout_benches_against_elementwise_bandwidth():
    results = [_result("conv", "conv", 1e8, 1.0),
               BenchResult("add", "elementwise", 0.01, NodeWork(1e3, 0, 500_000, 500_000, "elementwise")),
               BenchResult("transpose", "memory", 0.04, NodeWork(0.0, 0, 500_000, 500_000, "memory"))]
    profile = fit_profile(results, 0.0, 1, None)
    assert profile.act_bandwidth_gbs == pytest.approx(100.0)  # from the element-wise bench only
    assert profile.efficiency["memory"] == pytest.approx(0.25)


def test_bench_work_leaves_out_views():
    shuffle = next(b for b in default_benches() if "shuffle" in b.name)
    result_work = [node_work(n) for n in gs.import_onnx(shuffle.build(1)).nodes if n.op == "Transpose"][0]
    from edgec.costmodel.microbench import _sum_work
    flops, params, inputs, outputs = _sum_work(shuffle.build(1))
    assert (inputs, outputs) == (result_work.input_bytes, result_work.output_bytes)


# -- what the runtime does to some ops: optional profile fields -------------------------------


RUNTIME_FIELDS = {"copy_bandwidth_gbs": 3.0, "im2col_bandwidth_gbs": 5.0, "winograd_gain": 2.25, "overlap": 0.0,
                  "float_bytes": 2, "group_overhead_ms": 0.002}


def test_runtime_fields_round_trip_and_are_optional():
    profile = parse_unit_profile(dict(unit_spec(), activation_bandwidth_gbs=6.0, **RUNTIME_FIELDS), "cpu")
    assert {k: getattr(profile, k) for k in RUNTIME_FIELDS} == RUNTIME_FIELDS
    assert parse_unit_profile(profile.to_json(), "cpu") == profile
    plain = parse_unit_profile(unit_spec(), "cpu")  # a file written before the fields existed
    assert (plain.copy_bandwidth_gbs, plain.im2col_bandwidth_gbs, plain.winograd_gain, plain.overlap,
            plain.float_bytes, plain.group_overhead_ms) == (None, None, 1.0, 1.0, 4, None)
    assert not set(RUNTIME_FIELDS) & set(plain.to_json())  # defaults are not written
    for name, profile in BUILTIN_PROFILES.items():
        assert parse_unit_profile(profile.to_json(), name) == profile, name


@pytest.mark.parametrize("field,bad", [("copy_bandwidth_gbs", 0), ("im2col_bandwidth_gbs", "fast"),
                                       ("group_overhead_ms", -0.001), ("group_overhead_ms", "slow"),
                                       ("winograd_gain", -1), ("overlap", 1.5), ("float_bytes", 3),
                                       ("float_bytes", True)])
def test_bad_runtime_field_is_rejected_naming_it(field, bad):
    with pytest.raises(EdgecError, match=rf"\$\.units\.cpu\.{field}"):
        parse_profile({"version": 1, "host": {}, "units": {"cpu": dict(unit_spec(), **{field: bad})}})


def test_winograd_gain_overlap_im2col_and_fp16_bytes():
    conv3 = NodeWork(1e9, 4_000_000, 2_000_000, 2_000_000, "conv", 576, 3136, winograd=True, column_bytes=8_000_000)
    base = parse_unit_profile(dict(unit_spec(conv=1.0), activation_bandwidth_gbs=4.0), "cpu")  # 10 ms compute
    memory = 4e6 / 10e9 * 1e3 + 4e6 / 4e9 * 1e3  # weights from DRAM, activations: 0.4 + 1.0 ms
    assert base.node_ms(conv3, overhead=False) == pytest.approx(10.0)  # roofline: memory hidden
    wino = replace(base, winograd_gain=2.0)
    assert wino.node_ms(conv3, overhead=False) == pytest.approx(5.0)
    serial = replace(base, overlap=0.0)
    assert serial.node_ms(conv3, overhead=False) == pytest.approx(10.0 + memory)
    im2col = replace(base, im2col_bandwidth_gbs=8.0)  # 8 MB written and read back at 8 GB/s: 2 ms
    assert im2col.node_ms(conv3, overhead=False) == pytest.approx(12.0)
    assert im2col.node_ms(conv3, overhead=False, blocked=True) == pytest.approx(10.0)  # NCHWc: a direct conv
    half = replace(serial, float_bytes=2)
    assert half.node_ms(conv3, overhead=False) == pytest.approx(10.0 + memory / 2)


def test_conv_work_marks_winograd_and_the_im2col_buffer():
    def conv(k: int, stride: int = 1, group: int = 1, pad: int = 0) -> NodeWork:
        w = numpy_helper.from_array(np.zeros([16, 16 // group, k, k], np.float32), "w")
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", strides=[stride] * 2, group=group,
                                pads=[pad] * 4)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
        m = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
        return node_work(gs.import_onnx(m).nodes[0])
    assert conv(3, pad=1).winograd and not conv(3, stride=2, pad=1).winograd and not conv(3, group=16, pad=1).winograd
    assert conv(3, group=16, pad=1).column_bytes == 9 * 64 * 16 * 4  # depthwise: 9 values per output
    assert conv(3, group=4, pad=1).column_bytes == 4 * 9 * 64 * 4 * 4  # grouped: each group's whole buffer
    assert conv(3, pad=1).column_bytes == conv(1).column_bytes == 0  # dense: segmented im2col, or a plain GEMM


# -- convs run as im2col + one GEMM per group; GEMVs; one-core timing ------------------------


def _im2col(name: str, cpg: int, gemm: BenchResult, column_bytes: int, bandwidth: float) -> BenchResult:
    """A grouped 3x3 bench: its GEMM's time (as `gemm` was timed) plus the column buffer written and read back."""
    ms = gemm.ms + 2 * column_bytes / (bandwidth * 1e6)
    return BenchResult(name, "grouped", ms, replace(gemm.work, column_bytes=column_bytes), channels_per_group=cpg)


def test_fit_takes_the_im2col_bandwidth_from_the_grouped_3x3_benches_the_runtime_runs_plain():
    true = (9.5, 15.5)
    shaped = [_shaped(f"g{k}x{n}", k, n, 0.9, true) for k, n in ((6, 3136), (34, 784), (68, 196), (136, 49))]
    im2col = [_im2col("g3x3 4", 4, _shaped("a", 36, 3136, 0.9, true), 3_000_000, 7.5),
              _im2col("g3x3 8", 8, _shaped("b", 72, 784, 0.9, true), 2_000_000, 7.5)]
    results = [_result("conv", "conv", 1e8, 1.0)] + shaped + im2col
    profile = fit_profile(results, 0.0, 1, None)
    assert profile.im2col_bandwidth_gbs == pytest.approx(7.5, rel=1e-3)
    assert profile.grouped_shape == pytest.approx(true)  # the GEMM fit does not see the im2col benches
    assert profile.efficiency["grouped"] == pytest.approx(0.9, rel=1e-3)
    for r in im2col:
        assert profile.node_ms(r.work, overhead=False) == pytest.approx(r.ms, rel=1e-3)
        assert profile.node_ms(r.work, overhead=False, blocked=True) < r.ms  # blocked: no column buffer
    # a runtime that blocks 8 channels runs the 8-per-group conv blocked: only the other one says anything
    assert fit_profile(results, 0.0, 1, None, layout_block=8).im2col_bandwidth_gbs == pytest.approx(7.5, rel=1e-3)
    assert fit_profile(results, 0.0, 1, None, layout_block=4).im2col_bandwidth_gbs is None
    assert fit_profile(results[:-2], 0.0, 1, None).im2col_bandwidth_gbs is None


def test_default_grouped_3x3_benches_carry_their_column_buffer():
    from edgec.costmodel.microbench import bench_result

    benches = [b for b in default_benches() if b.channels_per_group is not None]
    assert benches
    for bench in benches:
        work = bench_result(bench, (1.0, 2.0)).work
        conv = next(n for n in gs.import_onnx(bench.build(1)).nodes if n.op == "Conv")
        groups = int(conv.attrs["group"])
        assert conv.inputs[1].values.shape[1] == bench.channels_per_group
        assert work.column_bytes == work.reduction * work.pixels * groups * 4 > 0


def test_a_weight_streaming_gemv_sets_the_bandwidth_not_the_gemm_efficiency():
    matmul = _result("matmul", "gemm", 2.0e8, 2.0)  # 100 GFLOP/s: efficiency 1 at peak 100
    gemv = BenchResult("fc", "gemm", 6.0, NodeWork(3.2e7, 64_000_000, 16_000, 16_000, "gemm"))
    profile = fit_profile([_result("conv", "conv", 1e8, 1.0), matmul, gemv], 0.0, 1, None)
    assert profile.bandwidth_gbs == pytest.approx(64_000_000 / 6e6, rel=0.01)
    assert profile.efficiency["gemm"] == pytest.approx(1.0, rel=1e-3)


def test_one_thread_timing_counts_cpu_time_not_time_given_to_others():
    import time

    from edgec.costmodel.timing import time_session

    class Waiting:  # a run that spends its time off the CPU, as one preempted by other processes does
        def run(self, outputs, feeds):
            time.sleep(0.02)

    assert time_session(Waiting(), {}, runs=3, warmup=0, cpu_time=True) < 5.0
    assert time_session(Waiting(), {}, runs=3, warmup=0, budget_s=0.1, max_others=1.0) >= 20.0


def test_streaming_elementwise_benches_set_the_bandwidth_not_the_elementwise_efficiency():
    """Add and Relu (1 FLOP per 8-12 bytes) fix the activation bandwidth; the slower of the two, a little under
    the median, must not count as arithmetic: the element-wise efficiency is Sigmoid's."""
    add = BenchResult("add", "elementwise", 0.080, NodeWork(2e5, 0, 1_600_000, 800_000, "elementwise"))
    relu = BenchResult("relu", "elementwise", 0.160, NodeWork(8e5, 0, 3_200_000, 3_200_000, "elementwise"))
    sigmoid = BenchResult("sigmoid", "elementwise", 0.080, NodeWork(8e5, 0, 800_000, 800_000, "elementwise"))
    profile = fit_profile([_result("conv", "conv", 1e8, 1.0), add, relu, sigmoid], 0.0, 1, None)
    assert profile.act_bandwidth_gbs == pytest.approx((2.4e6 / 0.080 + 6.4e6 / 0.160) / 2 / 1e6)
    assert profile.efficiency["elementwise"] == pytest.approx(8e5 / (100e9 * 0.080e-3))
    assert profile.node_ms(sigmoid.work) == pytest.approx(0.080, rel=0.01)


def test_passes_timed_apart_refit_the_profile_to_each_chains_fastest_time(monkeypatch):
    """A pass taken later (between other measurements) lowers a chain's time only where it ran faster, and the
    profile fitted to the kept times is the one run_benches' passes give."""
    import edgec.costmodel.microbench as mb
    from edgec.costmodel.profiler import fit_bench_times

    benches = [mb.overhead_bench(), next(b for b in default_benches() if b.name.startswith("conv3x3 64ch")),
               next(b for b in default_benches() if b.name.startswith("relu"))]
    passes = [[(0.01, 0.02), (2.0, 9.0), (0.1, 0.5)], [(0.01, 0.02), (1.8, 8.6), (0.2, 0.7)]]
    timed = iter(t for p in passes for t in p)
    monkeypatch.setattr(mb, "time_bench", lambda *args, **kwargs: next(timed))
    best = [[math.inf, math.inf] for _ in benches]
    mb.bench_pass(benches, best, 1)
    mb.bench_pass(benches, best, 1)
    assert best == [[0.01, 0.02], [1.8, 8.6], [0.1, 0.5]]
    timed = iter(t for p in passes for t in p)
    overhead, *results = mb.run_benches(benches, 1, passes=2)
    assert fit_bench_times(benches, best, 1, None, 0, "cpu") == fit_profile(results, overhead.ms, 1, None, "cpu", 0)


def test_fit_takes_the_overlap_from_benches_whose_weights_stream_as_long_as_they_compute():
    """Two convs at 100 GFLOP/s; a weight-heavy one takes its arithmetic plus half its 1 ms weight stream: the
    runtime hides half of the shorter time, and the profile predicts that bench as measured."""
    conv = _result("conv", "conv", 1e8, 1.0)
    heavy = BenchResult("heavy", "conv", 2.5, NodeWork(2e8, 10_000_000, 0, 0, "conv"), overlap=True)
    gemv = BenchResult("fc", "gemm", 1.0, NodeWork(1e7, 10_000_000, 0, 0, "gemm"))  # 10 GB/s
    profile = fit_profile([conv, heavy, gemv], 0.0, 1, None)
    assert profile.bandwidth_gbs == pytest.approx(10.0, rel=0.01)
    assert profile.overlap == pytest.approx(0.5, abs=0.02)
    assert profile.node_ms(heavy.work) == pytest.approx(2.5, rel=0.02)
    assert profile.efficiency["conv"] == pytest.approx(1.0, rel=0.02)  # the heavy bench sets no efficiency
    # with weights in the dense benches, the peak is the arithmetic's rate: no efficiency above 1, same predictions
    matmul = BenchResult("matmul", "gemm", 2.05, NodeWork(2e8, 2_000_000, 0, 0, "gemm"))  # 1.95 ms arithmetic
    weighted = fit_profile([conv, matmul, heavy, gemv], 0.0, 1, None)
    assert max(weighted.efficiency[c] for c in ("conv", "gemm")) == pytest.approx(1.0)
    assert weighted.peak_gflops > 100.0
    for r in (conv, matmul, heavy):
        assert weighted.node_ms(r.work, overhead=False) == pytest.approx(r.ms, rel=0.03), r.name
    roofline = fit_profile([conv, replace(heavy, ms=2.0), gemv], 0.0, 1, None)
    assert roofline.overlap == pytest.approx(1.0)
    assert fit_profile([conv, gemv], 0.0, 1, None).overlap == 1.0  # no such bench: the roofline


def test_default_benches_carry_weight_heavy_convs_for_the_overlap():
    heavy = [b for b in default_benches() if b.overlap]
    assert heavy and all(b.op_class in ("conv", "pointwise") for b in heavy)


def test_fit_takes_a_per_group_cost_from_grouped_benches_of_few_pixels_per_group():
    """Three im2col benches: two large buffers over 32 groups, one small over 32 groups: what they take beyond their
    GEMMs splits into the buffer at 7.5 GB/s and 3 us per group, and each is predicted as measured."""
    true = (9.5, 15.5)
    shaped = [_shaped(f"g{k}x{n}", k, n, 0.9, true) for k, n in ((6, 3136), (34, 784), (68, 196), (136, 49))]

    def grouped(name: str, cpg: int, gemm: BenchResult, column_bytes: int) -> BenchResult:
        r = _im2col(name, cpg, gemm, column_bytes, 7.5)
        return replace(r, ms=r.ms + 32 * 0.003, work=replace(r.work, groups=32))

    im2col = [grouped("g3x3 4", 4, _shaped("a", 36, 3136, 0.9, true), 3_000_000),
              grouped("g3x3 8", 8, _shaped("b", 72, 784, 0.9, true), 2_000_000),
              grouped("g3x3 8 7x7", 8, _shaped("c", 72, 49, 0.9, true), 125_000)]
    profile = fit_profile([_result("conv", "conv", 1e8, 1.0)] + shaped + im2col, 0.0, 1, None)
    assert profile.im2col_bandwidth_gbs == pytest.approx(7.5, rel=1e-3)
    assert profile.group_overhead_ms == pytest.approx(0.003, rel=1e-3)
    for r in im2col:
        assert profile.node_ms(r.work, overhead=False) == pytest.approx(r.ms, rel=1e-3)
        assert profile.node_ms(r.work, overhead=False, blocked=True) < r.ms - 32 * 0.003  # blocked: neither cost
    depthwise = replace(im2col[0].work, op_class="depthwise")  # one channel per group: no GEMM per group
    assert profile.node_ms(depthwise) == pytest.approx(replace(profile, group_overhead_ms=None).node_ms(depthwise))
    # benches of one bytes-per-group ratio cannot tell the terms apart: the bandwidth alone, as before
    alike = fit_profile([_result("conv", "conv", 1e8, 1.0)] + shaped + im2col[:1], 0.0, 1, None)
    assert alike.group_overhead_ms is None and alike.im2col_bandwidth_gbs is not None


def test_grouped_3x3_benches_carry_their_group_count():
    from edgec.costmodel.microbench import bench_result

    small = next(b for b in default_benches() if b.name == "gconv3x3 g32 256ch 7x7")
    work = bench_result(small, (1.0, 2.0)).work
    assert (work.groups, work.pixels, work.column_bytes) == (32, 49, 72 * 49 * 32 * 4)
