"""The calibration recipe: two free parameters solved from two models, and the published rows it uses."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.costmodel.builtin import (BUILTIN_CLOCK_GHZ, BUILTIN_PROFILES, CALIBRATION_MODELS, ORT_OVER_NCNN,
                                     WINOGRAD_GAIN_NCNN, YOLOV8_ORT_NCNN_MS, YOLOV8_WINOGRAD_SHARE, ort_over_ncnn,
                                     gemm_eff)
from edgec.costmodel.calibrate import solve_pair
from edgec.costmodel.predict import predict_ms

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("published_latency", ROOT / "benchmarks" / "published_latency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("published_latency", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def chain(kind: str) -> list[gs.Node]:
    """A compute-heavy chain (3x3 convs) or a memory-heavy one (depthwise convs and Relus)."""
    c, k, group = (64, 3, 1) if kind == "compute" else (64, 3, 64)
    w = numpy_helper.from_array(np.zeros([c, c // group, k, k], np.float32), "w")
    nodes, x = [], "x"
    for i in range(3):
        nodes.append(helper.make_node("Conv", [x, "w"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4, group=group))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 56, 56])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], [w])
    m = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    return list(gs.import_onnx(m).nodes)


def test_solve_pair_recovers_the_efficiency_and_bandwidth_that_made_the_latencies():
    base = BUILTIN_PROFILES["raspberry-pi-4.cpu"]

    def build(e: float, act: float):
        return replace(base, efficiency=gemm_eff(e), activation_bandwidth_gbs=act, im2col_bandwidth_gbs=2 * act)

    compute, memory = chain("compute"), chain("memory")
    truth = build(0.61, 3.3)
    e, act = solve_pair(build, (compute, predict_ms(compute, truth)), (memory, predict_ms(memory, truth)),
                        start=(0.2, 10.0), bounds=((1e-3, 5.0), (0.05, 500.0)))
    assert (e, act) == (pytest.approx(0.61, rel=1e-4), pytest.approx(3.3, rel=1e-4))
    with pytest.raises(ValueError, match="no solution"):
        solve_pair(build, (compute, 1e-9), (memory, 1.0), start=(0.5, 4.0), bounds=((1e-3, 5.0), (0.05, 500.0)))


# -- the published rows the recipe uses ------------------------------------------------------


@pytest.fixture(scope="module")
def rows():
    return _bench().load_rows()


def test_gpu_rows_are_tensorrt_fp16_only_and_cpu_rows_four_thread_ncnn(rows):
    data = json.loads((ROOT / "benchmarks" / "data" / "published_latency.json").read_text())
    used = [r for r in rows if r.role != "excluded"]
    for r in used:
        src = data[r.index]
        if r.unit == "jetson-nano.gpu":
            assert "TensorRT" in src["runtime"] and "Vulkan" not in src["runtime"] and r.ratio == 1.0
            assert str(src["precision"]).startswith("fp16")
        else:
            assert (src["runtime"], src["threads"], src["precision"]) == ("ncnn", 4, "fp32")
            assert r.ratio == ORT_OVER_NCNN  # before its Winograd share is known (published_latency.predict)
            assert r.clock_scale == pytest.approx(float(src["clock_ghz"]) / BUILTIN_CLOCK_GHZ[r.unit])
    assert all(r.reason for r in rows if r.role == "excluded")
    assert any(r.reason.startswith("ncnn-Vulkan") for r in rows if r.unit == "jetson-nano.gpu")


def test_at_most_two_calibration_models_per_unit_and_the_rest_validation(rows):
    for unit in BUILTIN_CLOCK_GHZ:
        calibration = {r.architecture for r in rows if r.unit == unit and r.role == "calibration"}
        validation = [r for r in rows if r.unit == unit and r.role == "validation"]
        assert calibration == set(CALIBRATION_MODELS[unit]) and len(calibration) <= 2
        assert len(validation) >= 10 and not calibration & {r.architecture for r in validation}


def test_the_committed_table_matches_the_selection(rows):
    table = json.loads((ROOT / "benchmarks" / "data" / "bundle_runtime_latency.json").read_text())
    assert (table["ort_over_ncnn"], table["winograd_gain_ncnn"]) == (ORT_OVER_NCNN, WINOGRAD_GAIN_NCNN)
    assert [(t["index"], t["role"], t["reason"], t["architecture"]) for t in table["rows"]] == \
           [(r.index, r.role, r.reason, r.architecture) for r in rows]
    for t in table["rows"]:
        if t["role"] != "excluded":
            assert t["bundle_ms"] == pytest.approx(t["published_ms"] * t["clock_scale"] * t["ratio"], rel=1e-3)
            expected = 1.0 if t["unit"] == "jetson-nano.gpu" else ort_over_ncnn(t["winograd_share"])
            assert t["ratio"] == pytest.approx(expected, rel=1e-3)


# -- ncnn figures converted per conv class ---------------------------------------------------


def test_yolov8_layer_lists_reproduce_ultralytics_flops_and_give_the_shares_the_ratio_is_solved_with():
    bench = _bench()
    for name, width, gflops in (("YOLOv8n", 0.25, 8.7), ("YOLOv8s", 0.50, 28.6)):  # Ultralytics' model table
        convs = bench.yolov8_conv_macs(width, 0.33)
        total = sum(m for m, _ in convs)
        assert 2 * total / 1e9 == pytest.approx(gflops, rel=0.01)
        assert YOLOV8_WINOGRAD_SHARE[name] == pytest.approx(sum(m for m, w in convs if w) / total, abs=5e-4)


def test_ort_over_ncnn_reproduces_the_yolov8_pair_and_grows_with_the_winograd_share():
    for name, (ort, ncnn) in YOLOV8_ORT_NCNN_MS.items():
        # one ratio solved from two figures: each within 3% (the pair is 1.35 and 1.38, the shares 0.66 and 0.61)
        assert ort_over_ncnn(YOLOV8_WINOGRAD_SHARE[name]) == pytest.approx(ort / ncnn, rel=0.03)
    assert ort_over_ncnn(0.0) == ORT_OVER_NCNN
    assert ort_over_ncnn(1.0) == pytest.approx(ORT_OVER_NCNN * WINOGRAD_GAIN_NCNN)
    assert ort_over_ncnn(0.2) < ort_over_ncnn(0.5) < ort_over_ncnn(0.9)


def test_winograd_gain_benchmark_finds_the_dense_3x3_stride_1_convs_of_an_ncnn_graph():
    spec = importlib.util.spec_from_file_location("winograd_gain", ROOT / "benchmarks" / "winograd_gain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    layers = module.conv3x3s1_layers((module.PARAMS / "resnet50.param").read_text())
    # Caffe ResNet-50 (stride in the 1x1): every bottleneck's 3x3, 3 + 4 + 6 + 3 of them; not the 7x7 stem
    assert len(layers) == 16
    assert [shape for _, shape, _ in layers[:1] + layers[-1:]] == [(64, 56, 56), (512, 7, 7)]
    vgg = module.conv3x3s1_layers((module.PARAMS / "vgg16.param").read_text())
    assert len(vgg) == 13 and vgg[0][1] == (3, 224, 224)
