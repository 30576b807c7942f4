"""edgec.backends.int8's rule: which nodes run int8, which sub-models stay fp32, and the session it runs in."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.backends.int8 import (INT8_SESSION, MIN_INT8_MACS, dense_macs, int8_excluded, int8_model,
                                 worth_quantizing)
from edgec.errors import EdgecError
from edgec.runtime.session import inference_session
from edgec.runtime.trust import check_session


def _stem_net(h: int = 32, groups: int = 4, bn: bool = True) -> onnx.ModelProto:
    """RGB stem conv (3 -> 16) + ReLU + MaxPool, a dense conv (16 -> 32) with BN, a grouped conv, a dense conv."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    inits = [w("w0", 16, 3, 3, 3), w("w1", 32, 16, 3, 3), w("w2", 32, 32 // groups, 3, 3), w("w3", 32, 32, 1, 1),
             numpy_helper.from_array(np.ones(32, np.float32), "bn_s"), numpy_helper.from_array(np.zeros(32, np.float32), "bn_b"),
             numpy_helper.from_array(np.zeros(32, np.float32), "bn_m"), numpy_helper.from_array(np.ones(32, np.float32), "bn_v")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], "stem", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"], "stem_relu"),
             helper.make_node("MaxPool", ["r0"], ["p0"], "stem_pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p0", "w1"], ["c1"], "dense1", pads=[1, 1, 1, 1])]
    last = "c1"
    if bn:
        nodes.append(helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"], "bn1"))
        last = "b1"
    nodes += [helper.make_node("Relu", [last], ["r1"], "relu1"),
              helper.make_node("Conv", ["r1", "w2"], ["c2"], "grouped", pads=[1, 1, 1, 1], group=groups),
              helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
              helper.make_node("Conv", ["r2", "w3"], ["y"], "dense2")]
    graph = helper.make_graph(nodes, "stem_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, h // 2, h // 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _feeds(model: onnx.ModelProto, n: int = 8) -> list[dict[str, np.ndarray]]:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def test_stem_and_grouped_convs_stay_fp32_and_dense_ones_run_int8() -> None:
    model = _stem_net()
    # and what only those feed: the stem's ReLU and pool, the grouped conv's ReLU
    assert set(int8_excluded(model)) == {"stem", "stem_relu", "stem_pool", "grouped", "relu2"}
    q = int8_model(model, _feeds(model))
    convs = {n.name: n for n in q.graph.node if n.op_type == "Conv"}
    dq_outputs = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}

    def int8_weight(name: str) -> bool:  # a quantized conv reads its weight through a DequantizeLinear
        return convs[name].input[1] in dq_outputs

    assert not int8_weight("stem") and not int8_weight("grouped")
    assert int8_weight("dense1") and int8_weight("dense2")
    assert "BatchNormalization" not in {n.op_type for n in q.graph.node}  # folded before quantizing


def test_int8_stays_close_to_fp32() -> None:
    model = _stem_net()
    feeds = _feeds(model, 16)
    q = int8_model(model, feeds)
    ref = inference_session(model.SerializeToString())
    got = inference_session(q.SerializeToString(), {"graph_optimization_level": "all", **INT8_SESSION}, 1)
    for f in feeds[:4]:
        a, b = ref.run(None, f)[0], got.run(None, f)[0]
        sqnr = 10 * np.log10(np.sum(a ** 2) / np.sum((a - b) ** 2))
        assert 15 < sqnr < 80


def test_dense_work_decides_whether_a_sub_model_is_quantized() -> None:
    small, big = _stem_net(h=8), _stem_net(h=64)
    # dense1 at h/2 x h/2 (16 -> 32, 3x3) plus dense2 (32 -> 32, 1x1); the stem and the grouped conv do not count
    expect = lambda h: (h // 2) ** 2 * 32 * (16 * 9 + 32)  # noqa: E731
    assert dense_macs(small) == expect(8) and dense_macs(big) == expect(64)
    assert expect(8) < MIN_INT8_MACS < expect(64)
    everything = lambda m: dense_macs(m, quantized_only=False)  # noqa: E731
    assert everything(big) > dense_macs(big)  # the stem and the grouped conv
    assert not worth_quantizing(dense_macs(small), everything(small))
    assert worth_quantizing(dense_macs(big), everything(big))
    # most of the work in convolutions int8 leaves fp32 (a stem): quantizing the rest does not pay
    assert not worth_quantizing(dense_macs(big), 3 * dense_macs(big))


def test_int8_session_runs_without_qdq_propagation_and_the_runtime_allows_only_that() -> None:
    check_session(dict(INT8_SESSION), "/out", "s0.session.json")
    with pytest.raises(EdgecError, match="disabled_optimizers .* allows a list of QDQPropagationTransformer only"):
        check_session({"disabled_optimizers": ["ConstantFolding"]}, "/out", "s0.session.json")
    with pytest.raises(EdgecError, match="expected a list of transformer names"):
        inference_session(_stem_net().SerializeToString(), {"disabled_optimizers": "QDQPropagationTransformer"})
