"""int8 lowering of a sub-model: static QDQ quantization by onnxruntime.quantization.

The ONNX Runtime CPU stages on the ARM boards run int8 as a QDQ model (the
sub-model in out/ is the quantized one); the variants pass measures the same
model on this machine's CPU (edgec.accuracy).

Which nodes are quantized is a rule, measured with ONNX Runtime 1.32's CPU
kernels (`python benchmarks/variants.py`, the int8 table):

- the sub-model is first pre-processed as onnxruntime.quantization recommends
  (`quant_pre_process`: BatchNormalization folded into its Conv, constants
  folded); unfolded, every BN runs in float between a DequantizeLinear and a
  QuantizeLinear and int8 ResNet-50 runs at 1.2x fp32 instead of 2x;
- grouped and depthwise convolutions (group > 1) stay fp32: QLinearConv runs
  them one group at a time, and ShuffleNet's 48 grouped convs took 2x their
  fp32 time in int8; so do convolutions of fewer than MIN_INT8_CHANNELS input
  channels (SqueezeNet's RGB stem: 2.3 ms in int8, 0.44 ms in fp32) and what
  only such nodes feed;
- the session runs without ONNX Runtime's Q/DQ propagation (INT8_SESSION);
- a sub-model is not quantized unless the convolutions and matrix products it
  would run int8 come to MIN_INT8_MACS multiply-adds or more, and to
  MIN_INT8_SHARE of all its convolution and matrix work: else the quantize /
  dequantize at the edges of the int8 part cost more than int8 saves (the
  half-width digits CNN ran 0.99x; SqueezeNet's stem stage 0.8x).
  `worth_quantizing` says which (via NeonBackend.worth); the variants pass
  keeps such a stage fp32 and the cost model charges it so.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnx.version_converter
import onnx_graphsurgeon as gs

MAX_QUANT_FRAMES = 128  # calibration frames the MinMax ranges are taken from
QDQ_OPSET = 13
# an int8 stage's ONNX Runtime session: no Q/DQ propagation. Propagated, the Q after an fp32 stem's MaxPool moves
# above it and the MaxPool runs as the NCHW uint8 kernel (SqueezeNet's stem: 8 ms against 0.2 ms in fp32)
INT8_SESSION = {"disabled_optimizers": ["QDQPropagationTransformer"]}
# dense multiply-adds below which a sub-model stays fp32: measured here (one thread, median of 3000 runs), the
# digits CNN's architecture ran 0.99x in int8 at 0.59 M multiply-adds (widths 16/32/64) and 1.61x at 2.36 M (32/64/128)
MIN_INT8_MACS = 1.5e6
# the share of a sub-model's conv / matmul work that must run int8: SqueezeNet's stem stage, whose one quantized
# conv is 13% of it (the RGB conv stays fp32), ran 0.8x in int8
MIN_INT8_SHARE = 0.5
MIN_INT8_CHANNELS = 8  # a convolution with fewer input channels stays fp32 (see the module docstring)
DENSE_OPS = frozenset({"Conv", "Gemm", "MatMul"})


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def conv_quantized(group: int, in_channels_per_group: int) -> bool:
    """Whether a Conv runs int8 in an int8 sub-model: ungrouped, with MIN_INT8_CHANNELS input channels or more."""
    return group == 1 and in_channels_per_group >= MIN_INT8_CHANNELS


def int8_excluded(model: onnx.ModelProto) -> list[str]:
    """The nodes left fp32 in an int8 sub-model: grouped and depthwise convolutions, convolutions of fewer than
    MIN_INT8_CHANNELS input channels (an RGB stem), and the other nodes that only such nodes or the sub-model's
    inputs feed (a stem's ReLU and pooling: quantized there, a MaxPool ran as ONNX Runtime's NCHW uint8 kernel,
    40x its fp32 time)."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    produced_by_excluded: set[str] = {i.name for i in model.graph.input}
    excluded = []
    for n in model.graph.node:
        if n.op_type == "Conv":
            leave = not conv_quantized(_attr(n, "group", 1), weights.get(n.input[1], [0, MIN_INT8_CHANNELS])[1])
        elif n.op_type in DENSE_OPS:
            leave = False
        else:
            data = [i for i in n.input if i and i not in weights]
            leave = bool(data) and all(i in produced_by_excluded for i in data)
        if leave:
            excluded.append(n.name)
            produced_by_excluded.update(n.output)
    return excluded


def runs_int8(node: gs.Node) -> bool:
    """Whether an int8 sub-model runs `node` in int8 (a graph node with shapes): Gemm and MatMul, and a Conv
    that `conv_quantized` (int8_excluded leaves the others fp32)."""
    if node.op == "Conv":
        shape = getattr(node.inputs[1], "shape", None) if len(node.inputs) > 1 else None
        return bool(shape) and conv_quantized(int(node.attrs.get("group", 1)), int(shape[1]))
    return node.op in DENSE_OPS


def dense_macs(model: onnx.ModelProto, quantized_only: bool = True) -> float:
    """Multiply-adds of the Conv, Gemm and MatMul nodes `model` runs int8 (shapes inferred): the work int8 speeds up;
    with `quantized_only` False, of all its Conv, Gemm and MatMul nodes."""
    from edgec.costmodel.work import node_flops

    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    counted = runs_int8 if quantized_only else (lambda node: node.op in DENSE_OPS)
    return sum(node_flops(n) / 2 for n in graph.nodes if counted(n))


def worth_quantizing(quantized_macs: float, compute_macs: float) -> bool:
    """Whether int8 is expected to beat fp32 on a sub-model whose quantized nodes come to `quantized_macs`
    multiply-adds, of `compute_macs` in all its convolutions and matrix products (see the module docstring)."""
    return quantized_macs >= MIN_INT8_MACS and quantized_macs >= MIN_INT8_SHARE * compute_macs


def int8_model(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]) -> onnx.ModelProto:
    """Static QDQ int8 quantization (onnxruntime.quantization, MinMax) calibrated on `feeds` (the model's inputs).

    Activations uint8, weights int8 (U8S8), per tensor: the form ONNX Runtime's CPU provider fuses into its
    integer kernels on x86-64 and ARM alike (S8S8 measured 2x slower than fp32 on this project's x86 host; see
    benchmarks/variants.py). A model below opset 13 is first converted to 13, where ONNX Runtime fuses the
    QDQ pairs (at the zoo's opset 9 it does not, and int8 runs no faster than fp32).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([dict(f) for f in feeds[:MAX_QUANT_FRAMES]])

        def get_next(self):
            return next(self.items, None)

    root = logging.getLogger()
    level = root.level
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), QDQ_OPSET)
    if opset < QDQ_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, QDQ_OPSET)
        except Exception:  # noqa: BLE001 - a model the converter cannot lift is quantized at its own opset
            pass
    with tempfile.TemporaryDirectory(prefix="edgec-int8-") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        root.setLevel(logging.ERROR)  # its advice to pre-process is printed on every call
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=False,
                            nodes_to_exclude=int8_excluded(onnx.load(str(pre))))
        finally:
            root.setLevel(level)
        return onnx.load(str(dst))
