"""Which nodes run inside another node's kernel, per runtime: the fusions a prediction must not charge twice.

ONNX Runtime's CPU provider (``onnxruntime``; what the bundles run on every
ARM CPU unit and what `edgec profile` measures), as its optimised graph shows
(tests/test_runtime_fusion.py reads it back from ONNX Runtime here):

- Conv/Gemm/MatMul take one activation into their kernel: the MLAS activation
  kinds Relu, Clip (ReLU6), LeakyRelu, Tanh, Sigmoid and HardSigmoid; a
  BatchNormalization and constant Mul/Add/Sub/Div fold into their weights. A
  residual Add/Sum joins a Conv only on the blocked-layout (NCHWc) path
  (`residual=True`, for a profile with a ``layout_block``; not grouped convs,
  never a Gemm or MatMul), and only before the conv's activation and its
  first residual (``act(conv + x)``: an Add after a fused Relu runs apart);
  elsewhere ONNX Runtime runs the Add, and the activation after it, apart.
  An activation fuses only when the producer's output has no other reader.
- SiLU, ``Mul(x, Sigmoid(x))``, becomes one elementwise pass (QuickGelu): the
  Mul is free, the Sigmoid costs one pass. HardSwish as exporters write it,
  ``Mul(x, HardSigmoid(x))``, joins a Conv's kernel on the blocked-layout
  path (the NCHWc Conv's HardSwish activation; not grouped convs, not when
  the Mul writes a graph output), both nodes free; elsewhere it runs as
  HardSigmoid and Mul, two passes.
- GELU in its Erf form, ``x * 0.5 * (1 + Erf(x / sqrt 2))``, becomes one Gelu
  pass: the Erf is charged as that Gelu (:func:`is_gelu_erf`; twice a
  Sigmoid's time per element here), the Div, Add and Muls around it are not. (The Tanh
  form is left apart: ONNX Runtime's optimiser does not fuse it on the CPU.)
- LayerNorm as exporters write it, ``(x - mean) / sqrt(mean((x - mean)^2) +
  eps) * gamma + beta`` with a Pow, becomes one LayerNormalization pass: the
  Sub is charged, the Reduces, Pow, Add, Sqrt, Div and the affine Mul/Add are
  not. (With Mul(d, d) instead of the Pow ORT leaves it apart, and so do we.)
- A MatMul takes a Transpose of the last two axes and a Mul by a scalar
  constant of either input into its kernel (FusedMatMul: transA/transB and
  alpha), as attention's ``softmax(q * scale @ k^T)`` has them.

TensorRT (``tensorrt``; the Jetson Nano's GPU) fuses a whole DAG of pointwise
ops that starts at a Conv/Gemm/MatMul output into the producer's kernel (its
PointWise fusion): SiLU, HardSwish, Mish and GELU chains, BatchNormalization,
residual Add and the activations after it all ride on the conv. A Concat whose
inputs are all written by layers of the engine costs nothing: TensorRT makes
them write into the concatenation's output (the developer guide's layer-fusion
catalog, "Concatenation Layer Elimination"), as DenseNet's blocks have them.
"""

from __future__ import annotations

import math
from typing import Iterable

import onnx_graphsurgeon as gs

from edgec.costmodel.work import op_class

RUNTIMES = ("onnxruntime", "tensorrt")
PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv"})
_ORT_EPILOGUES = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh",
                            "BatchNormalization", "Add", "Sum", "Mul", "Sub", "Div"})
_NCHWC_CONVS = frozenset({"Conv", "FusedConv"})  # what ONNX Runtime's NCHWc path runs blocked, with a residual
_CONST_ONLY = frozenset({"Mul", "Sub", "Div"})  # ONNX Runtime folds these only with a constant operand
_FOLDS = frozenset({"Add", "Sum", "Mul", "Sub", "Div"})  # with a constant operand: folded into the weights
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
        if node.name in fused:  # taken in with an earlier node (a HardSwish's Mul)
            continue
        if node.op in PRODUCERS:
            absorbing[id(node)] = residual and node.op in _NCHWC_CONVS and op_class(node) != "grouped"
            if node.op == "MatMul":
                fused |= {p.name for p in _matmul_operands(node) if id(p) in members}
            continue
        if node.op == "Erf":
            fused |= {n.name for n in _gelu_around(node) if id(n) in members}
            continue
        if node.op == "Sub":
            layernorm = _layernorm_around(node)
            if layernorm:
                fused |= {n.name for n in layernorm if id(n) in members}
                continue
        hardswish = _hardswish_mul(node) if node.op == "HardSigmoid" else None
        if hardswish is not None:
            x = node.inputs[0]
            producer = _producer(x)
            if (producer is not None and id(producer) in members and absorbing.get(id(producer))
                    and id(hardswish) in members):
                fused |= {node.name, hardswish.name}
                absorbing[id(hardswish)] = False  # the conv has its activation: no residual Add joins it after
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
                # weights folds (BN, a constant operand) keep the conv open to a residual; an activation or a
                # residual Add closes it: the NCHWc kernel computes act(conv + sum), one sum, then one act
                absorbing[id(node)] = absorbing[id(producer)] and (
                    node.op == "BatchNormalization" or (node.op in _FOLDS and len(variables) == 1))
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
        if node.op == "Concat" and node.inputs and all(
                not isinstance(t, gs.Constant) and _producer(t) is not None and id(_producer(t)) in members
                for t in node.inputs):
            fused.add(node.name)
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


def _sole_consumer(t: gs.Tensor) -> gs.Node | None:
    return t.outputs[0] if len(t.outputs) == 1 else None


def _producer(t: gs.Tensor) -> gs.Node | None:
    return t.inputs[0] if len(t.inputs) == 1 else None


def _scalar_operand(node: gs.Node) -> gs.Tensor | None:
    """The other operand of a binary node with one scalar constant operand, else None."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    for const, other in ((a, b), (b, a)):
        if isinstance(const, gs.Constant) and math.prod(const.shape) == 1 and not isinstance(other, gs.Constant):
            return other
    return None


def _matmul_operands(matmul: gs.Node) -> list[gs.Node]:
    """Transposes of the last two axes and scalar Muls that ONNX Runtime folds into this MatMul (FusedMatMul)."""
    out = []
    for t in matmul.inputs[:2]:
        node = _producer(t)
        while node is not None and _sole_consumer(t) is not None:
            if node.op == "Transpose" and _swaps_last_two(node):
                pass
            elif node.op == "Mul" and _scalar_operand(node) is not None:
                pass
            else:
                break
            out.append(node)
            t = _scalar_operand(node) if node.op == "Mul" else node.inputs[0]
            node = _producer(t)
    return out


def _swaps_last_two(transpose: gs.Node) -> bool:
    perm = list(transpose.attrs.get("perm", []))
    n = len(perm)
    return n >= 2 and perm == list(range(n - 2)) + [n - 1, n - 2]


def is_gelu_erf(node: gs.Node, runtime: str = "onnxruntime") -> bool:
    """An Erf that `runtime` runs as a whole GELU (ONNX Runtime's Gelu kernel), so it costs a Gelu's work."""
    return runtime == "onnxruntime" and node.op == "Erf" and bool(_gelu_around(node))


def _gelu_around(erf: gs.Node) -> list[gs.Node]:
    """The Div (or Mul), Add and Muls of ``x * 0.5 * (1 + Erf(x / sqrt 2))`` around `erf`; [] if not that."""
    pre = _producer(erf.inputs[0])
    if pre is None or pre.op not in ("Div", "Mul") or _scalar_operand(pre) is None:
        return []
    x = _scalar_operand(pre)
    add = _sole_consumer(erf.outputs[0])
    if add is None or add.op != "Add" or _scalar_operand(add) is None:
        return []
    chain, t, seen_x = [pre, add], add.outputs[0], False
    for _ in range(2):  # Mul(x, 1 + erf) and Mul(., 0.5), in either order
        mul = _sole_consumer(t)
        if mul is None or mul.op != "Mul":
            return []
        others = [i for i in mul.inputs if i is not t]
        half = _producer(others[0]) if others and not isinstance(others[0], gs.Constant) else None
        if others and others[0] is x:
            seen_x = True
        elif half is not None and half.op == "Mul" and _scalar_operand(half) is x:
            seen_x = True
            chain.append(half)
        elif _scalar_operand(mul) is None:
            return []
        chain.append(mul)
        t = mul.outputs[0]
        if seen_x and len(chain) >= 4:
            break
    return chain if seen_x else []


def _layernorm_around(sub: gs.Node) -> list[gs.Node]:
    """The other nodes of a Pow-form LayerNorm whose ``x - mean`` is `sub`; [] if not that."""
    if len(sub.inputs) != 2:
        return []
    x, mean_t = sub.inputs
    mean = _producer(mean_t)
    if mean is None or mean.op != "ReduceMean" or mean.inputs[0] is not x:
        return []
    d = sub.outputs[0]
    by_op = {n.op: n for n in d.outputs}
    pow_, div = by_op.get("Pow"), by_op.get("Div")
    if len(d.outputs) != 2 or pow_ is None or div is None or _scalar_operand(pow_) is not d:
        return []
    chain = [mean, pow_]
    node = pow_
    for op in ("ReduceMean", "Add", "Sqrt"):
        node = _sole_consumer(node.outputs[0])
        if node is None or node.op != op:
            return []
        chain.append(node)
    if _sole_consumer(node.outputs[0]) is not div or div.inputs[0] is not d:
        return []
    chain.append(div)
    node = div
    for op in ("Mul", "Add"):  # the affine gamma, beta
        nxt = _sole_consumer(node.outputs[0])
        if nxt is None or nxt.op != op or not any(isinstance(t, gs.Constant) for t in nxt.inputs):
            break
        chain.append(nxt)
        node = nxt
    return chain


def _hardswish_mul(hardsigmoid: gs.Node) -> gs.Node | None:
    """The Mul of ``Mul(x, HardSigmoid(x))`` (alpha 1/6, beta 0.5) when x has no other reader and a node reads
    the Mul (ONNX Runtime leaves a HardSwish that writes a graph output apart); else None."""
    if abs(float(hardsigmoid.attrs.get("alpha", 0.2)) - 1 / 6) > 1e-6 or float(hardsigmoid.attrs.get("beta", 0.5)) != 0.5:
        return None
    x, h = hardsigmoid.inputs[0], hardsigmoid.outputs[0]
    mul = _sole_consumer(h)
    if mul is None or mul.op != "Mul" or len(mul.inputs) != 2 or {id(t) for t in mul.inputs} != {id(x), id(h)}:
        return None
    return mul if len(x.outputs) == 2 and mul.outputs[0].outputs else None


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
