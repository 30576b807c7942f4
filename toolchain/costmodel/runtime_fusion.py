"""Which nodes run inside another node's kernel, per runtime: the fusions a prediction must not charge twice.

ONNX Runtime's CPU provider (``onnxruntime``; what the bundles run on every
ARM CPU unit and what `edgec profile` measures), as its optimised graph shows
(tests/test_runtime_fusion.py reads it back from ONNX Runtime here):

- Conv/Gemm/MatMul take one activation into their kernel: the MLAS activation
  kinds Relu, Clip (ReLU6), LeakyRelu, Tanh, Sigmoid and HardSigmoid; a
  BatchNormalization and constant Mul/Add/Sub/Div fold into their weights. A
  residual Add/Sum joins the conv only on the blocked-layout (NCHWc) path
  (`residual=True`, for a profile with a ``layout_block``; not grouped convs):
  without it ONNX Runtime runs the Add, and the activation after it, apart.
  An activation fuses only when the producer's output has no other reader.
- SiLU, ``Mul(x, Sigmoid(x))``, becomes one elementwise pass (QuickGelu): the
  Mul is free, the Sigmoid costs one pass. HardSwish is not fused: it runs as
  HardSigmoid and Mul, two passes.

TensorRT (``tensorrt``; the Jetson Nano's GPU) fuses a whole DAG of pointwise
ops that starts at a Conv/Gemm/MatMul output into the producer's kernel (its
PointWise fusion): SiLU, HardSwish, Mish and GELU chains, BatchNormalization,
residual Add and the activations after it all ride on the conv.
"""

from __future__ import annotations

from typing import Iterable

import onnx_graphsurgeon as gs

from edgec.costmodel.work import op_class

RUNTIMES = ("onnxruntime", "tensorrt")
PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv"})
_ORT_EPILOGUES = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh",
                            "BatchNormalization", "Add", "Sum", "Mul", "Sub", "Div"})
_CONST_ONLY = frozenset({"Mul", "Sub", "Div"})  # ONNX Runtime folds these only with a constant operand
_POINTWISE = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
                        "Softplus", "Softsign", "Mish", "Gelu", "Erf", "PRelu", "BatchNormalization", "Add", "Sum",
                        "Mul", "Sub", "Div", "Pow", "Sqrt", "Abs", "Neg", "Exp", "Reciprocal", "Max", "Min"})


def fused_nodes(nodes: Iterable[gs.Node], runtime: str = "onnxruntime", *, residual: bool = True) -> set[str]:
    """Names of the nodes that cost nothing apart on `runtime`: they run inside another node's kernel.

    `residual`: ONNX Runtime fuses residual Adds into convs (its blocked-layout path). Only producers among
    `nodes` count, so an epilogue cut away from its Conv is costed on its own.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime '{runtime}'; expected one of {RUNTIMES}")
    nodes = list(nodes)
    return _tensorrt(nodes) if runtime == "tensorrt" else _onnxruntime(nodes, residual)


def _onnxruntime(nodes: list[gs.Node], residual: bool) -> set[str]:
    members = {id(n) for n in nodes}
    fused: set[str] = set()
    absorbing: dict[int, bool] = {}  # id of a node whose output an epilogue may join -> may a residual join
    for node in nodes:  # topological order
        if node.op in PRODUCERS:
            absorbing[id(node)] = residual and op_class(node) != "grouped"
            continue
        if _is_silu_mul(node):
            fused.add(node.name)  # one QuickGelu pass: the Sigmoid is charged, the Mul is not
            continue
        if node.op not in _ORT_EPILOGUES:
            continue
        variables = [t for t in node.inputs if not isinstance(t, gs.Constant)]
        constants = [t for t in node.inputs if isinstance(t, gs.Constant)]
        if node.op in _CONST_ONLY and not constants:
            continue
        for t in variables:
            producer = t.inputs[0] if len(t.inputs) == 1 else None
            if (producer is not None and id(producer) in members and id(producer) in absorbing
                    and len(t.outputs) == 1 and len(variables) <= 2
                    and (len(variables) == 1 or absorbing[id(producer)])):
                fused.add(node.name)
                absorbing[id(node)] = absorbing[id(producer)]
                break
    return fused


def _tensorrt(nodes: list[gs.Node]) -> set[str]:
    members = {id(n) for n in nodes}
    fused: set[str] = set()
    chain: set[int] = set()  # producers and the pointwise nodes fused into them
    for node in nodes:
        if node.op in PRODUCERS:
            chain.add(id(node))
            continue
        if node.op not in _POINTWISE:
            continue
        variables = [t for t in node.inputs if not isinstance(t, gs.Constant) and t.name]
        from_chain = [t for t in variables if len(t.inputs) == 1 and id(t.inputs[0]) in chain
                      and id(t.inputs[0]) in members]
        if from_chain and len(variables) <= 2:
            fused.add(node.name)
            chain.add(id(node))
    return fused


def _is_silu_mul(node: gs.Node) -> bool:
    """Mul(x, Sigmoid(x)), either operand order."""
    if node.op != "Mul" or len(node.inputs) != 2:
        return False
    a, b = node.inputs
    for x, s in ((a, b), (b, a)):
        sig = s.inputs[0] if len(s.inputs) == 1 else None
        if sig is not None and sig.op == "Sigmoid" and sig.inputs and sig.inputs[0] is x:
            return True
    return False
