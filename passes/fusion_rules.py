"""The rewrite rules of the `fusion` pass: ONNX-valid rewrites that exported models need.

A rule is a stateless object with

- ``name``: kebab-case, what ``Fusion(rules=...)`` lists;
- ``anchor``: the op types the pattern ends on, and ``pattern``: the structure it matches;
- ``check(graph, node)``: None when the rewrite applies at ``node``, else a one-line reason
  why not (``"Conv 'c1' output feeds 2 nodes"``);
- ``rewrite(graph, node)``: the rewrite, called only after ``check`` returned None.

Every rewrite keeps the graph valid ONNX and keeps graph input and output tensor
names. Nodes a rewrite removes are disconnected (no inputs, no outputs) and
taken out of ``graph.nodes``; the pass runs ``cleanup().toposort()`` afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

# -- graph helpers -------------------------------------------------------------------


def producer(t: gs.Tensor) -> gs.Node | None:
    return t.inputs[0] if t.inputs else None


def const_value(t: gs.Tensor | None) -> np.ndarray | None:
    """The value of a constant tensor, None for anything else."""
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def is_graph_output(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(o is t for o in graph.outputs)


def is_graph_input(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(i is t for i in graph.inputs)


def optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of ``node``, None when it is absent or left empty."""
    if index >= len(node.inputs) or not node.inputs[index].name:
        return None
    return node.inputs[index]


def used(graph: gs.Graph, t: gs.Tensor) -> bool:
    return bool(t.outputs) or is_graph_output(graph, t)


def fresh_name(graph: gs.Graph, base: str) -> str:
    """A tensor name not yet in the graph, derived from ``base``."""
    taken = graph.tensors().keys()
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def describe(node: gs.Node) -> str:
    return f"{node.op} '{node.name}'"


def sole_consumer_blocker(graph: gs.Graph, node: gs.Node, t: gs.Tensor) -> str | None:
    """Why ``t`` (an output of ``node``) cannot be folded away: more readers, or a graph output."""
    if is_graph_output(graph, t):
        return f"{describe(node)} output '{t.name}' is a graph output"
    readers = len({id(n) for n in t.outputs})
    if readers != 1:
        return f"{describe(node)} output feeds {readers} nodes"
    return None


def node_position(graph: gs.Graph, node: gs.Node) -> int:
    return next(i for i, n in enumerate(graph.nodes) if n is node)


def remove_node(graph: gs.Graph, node: gs.Node) -> None:
    """Disconnect ``node`` and take it out of the graph (by identity: gs nodes compare by value)."""
    node.inputs.clear()
    node.outputs.clear()
    del graph.nodes[node_position(graph, node)]


# -- the rule base -------------------------------------------------------------------


class Rule:
    name: ClassVar[str]
    anchor: ClassVar[tuple[str, ...]]
    pattern: ClassVar[str]

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        raise NotImplementedError

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<rule {self.name}: {self.pattern}>"


# -- BatchNormalization into Conv ----------------------------------------------------


class BatchNormIntoConv(Rule):
    """Fold an inference BatchNormalization into the Conv before it.

    Rewrite cases:
    - Conv(X, W) -> BN: the Conv gets a bias input ``b' = (0 - mean) * k + beta``;
    - Conv(X, W, b) -> BN: ``b' = (b - mean) * k + beta``;
    with ``k = scale / sqrt(var + epsilon)`` per output channel and ``W' = W * k``.
    New constants are made (the old W may be shared); the Conv writes the BN's
    output tensor, so the name the rest of the graph reads is kept.
    Not applied: the Conv output has another reader or is a graph output; W,
    the Conv bias or any BN parameter is not a constant; BN in training mode
    or with its running-statistics outputs used; non-float types.
    """

    name = "bn-into-conv"
    anchor = ("BatchNormalization",)
    pattern = "Conv(X, W, b?) -> BatchNormalization(scale, B, mean, var)"

    def check(self, graph: gs.Graph, bn: gs.Node) -> str | None:
        conv = producer(bn.inputs[0])
        if conv is None or conv.op != "Conv":
            return f"{describe(bn)} does not follow a Conv"
        if bn.inputs[0] is not conv.outputs[0]:
            return f"{describe(bn)} does not read the Conv output"
        reason = sole_consumer_blocker(graph, conv, conv.outputs[0])
        if reason:
            return reason
        if bn.attrs.get("training_mode", 0):
            return f"{describe(bn)} is in training mode"
        if not bn.attrs.get("spatial", 1):
            return f"{describe(bn)} has spatial=0"
        if any(used(graph, t) for t in bn.outputs[1:]):
            return f"{describe(bn)} running statistics outputs are used"
        w = const_value(conv.inputs[1])
        if w is None:
            return f"{describe(conv)} weight is not constant"
        if not np.issubdtype(w.dtype, np.floating):
            return f"{describe(conv)} weight is {w.dtype}, not a float type"
        bias = optional_input(conv, 2)
        if bias is not None and const_value(bias) is None:
            return f"{describe(conv)} bias is not constant"
        for label, index in (("scale", 1), ("B", 2), ("mean", 3), ("var", 4)):
            value = const_value(bn.inputs[index])
            if value is None:
                return f"BN {label} is not constant"
            if value.size != w.shape[0]:
                return f"BN {label} has {value.size} values for {w.shape[0]} output channels"
        return None

    def rewrite(self, graph: gs.Graph, bn: gs.Node) -> None:
        conv = producer(bn.inputs[0])
        w = const_value(conv.inputs[1])
        channels = w.shape[0]
        scale, beta, mean, var = (const_value(bn.inputs[i]).astype(np.float64).reshape(channels)
                                  for i in range(1, 5))
        bias = optional_input(conv, 2)
        b = const_value(bias).astype(np.float64).reshape(channels) if bias is not None else np.zeros(channels)
        k = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        new_w = (w.astype(np.float64) * k.reshape((channels,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        new_b = ((b - mean) * k + beta).astype(w.dtype)
        w_name = fresh_name(graph, f"{conv.name}.weight_bn")
        b_name = fresh_name(graph, f"{conv.name}.bias_bn")
        conv.inputs[1] = gs.Constant(w_name, new_w)
        if len(conv.inputs) > 2:
            conv.inputs[2] = gs.Constant(b_name, new_b)
        else:
            conv.inputs.append(gs.Constant(b_name, new_b))
        y = bn.outputs[0]
        remove_node(graph, bn)
        conv.outputs[0] = y


# -- MatMul + Add into Gemm ----------------------------------------------------------


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts one way (numpy rules) to ``target``."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False))


class MatMulAddIntoGemm(Rule):
    """Turn MatMul(A, B) + constant bias into Gemm(A, B, C).

    Rewrite cases:
    - Add(MatMul(A, B), C) and Add(C, MatMul(A, B)): Gemm(A, B, C), named as the
      MatMul was, writing the Add's output tensor.
    Not applied: A is not 2-D; B is not a constant 2-D tensor; C is not a
    constant or does not broadcast to [M, N]; the MatMul output has another
    reader or is a graph output; non-float types (Gemm in old opsets).
    """

    name = "matmul-add-into-gemm"
    anchor = ("Add",)
    pattern = "MatMul(A[M,K], B:const[K,N]) -> Add(C:const)"

    def _parts(self, add: gs.Node) -> tuple[gs.Node, gs.Tensor] | None:
        for i in (0, 1):
            mm = producer(add.inputs[i])
            if mm is not None and mm.op == "MatMul":
                return mm, add.inputs[1 - i]
        return None

    def check(self, graph: gs.Graph, add: gs.Node) -> str | None:
        parts = self._parts(add)
        if parts is None:
            return f"{describe(add)} has no MatMul input"
        mm, c = parts
        if add.inputs[0] is add.inputs[1]:
            return f"{describe(add)} adds the MatMul output to itself"
        reason = sole_consumer_blocker(graph, mm, mm.outputs[0])
        if reason:
            return reason
        a, b = mm.inputs
        if a.shape is None or len(a.shape) != 2:
            rank = "unknown rank" if a.shape is None else f"rank {len(a.shape)}"
            return f"{describe(mm)} input A has {rank}, Gemm needs 2-D"
        b_value = const_value(b)
        if b_value is None or b_value.ndim != 2:
            return f"{describe(mm)} input B is not a constant 2-D tensor"
        if not np.issubdtype(b_value.dtype, np.floating):
            return f"{describe(mm)} weight is {b_value.dtype}, Gemm here needs a float type"
        c_value = const_value(c)
        if c_value is None:
            return f"bias of {describe(add)} is not constant"
        target = (a.shape[0], b_value.shape[1])
        if not _broadcasts_to(c_value.shape, target):
            return f"bias of {describe(add)} has shape {list(c_value.shape)}, not broadcastable to {list(target)}"
        if graph.opset < 7:
            return f"opset {graph.opset} Gemm needs the broadcast attribute"
        return None

    def rewrite(self, graph: gs.Graph, add: gs.Node) -> None:
        mm, c = self._parts(add)
        a, b = mm.inputs
        y = add.outputs[0]
        name = mm.name
        position = node_position(graph, mm)
        remove_node(graph, add)
        remove_node(graph, mm)
        gemm = gs.Node("Gemm", name=name, inputs=[a, b, c], outputs=[y])
        graph.nodes.insert(position, gemm)


# -- Pad into Conv and pooling -------------------------------------------------------


@dataclass
class _PadSpec:
    pads: list[int]  # begin..., end... over every dim of the input
    value: float


def _pad_spec(pad: gs.Node) -> _PadSpec | str:
    """What a Pad node does, or why it cannot be folded."""
    mode = pad.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "constant":
        return f"{describe(pad)} mode is '{mode}', not 'constant'"
    x = pad.inputs[0]
    if x.shape is None:
        return f"{describe(pad)} input rank is unknown"
    rank = len(x.shape)
    if "pads" in pad.attrs:  # opset < 11
        pads = [int(p) for p in pad.attrs["pads"]]
        value = float(pad.attrs.get("value", 0.0))
    else:
        pads_value = const_value(optional_input(pad, 1))
        if pads_value is None:
            return f"{describe(pad)} pads are not constant"
        pads = [int(p) for p in pads_value.reshape(-1)]
        value_t = optional_input(pad, 2)
        value = 0.0
        if value_t is not None:
            v = const_value(value_t)
            if v is None:
                return f"{describe(pad)} pad value is not constant"
            value = float(v.reshape(-1)[0]) if v.size else 0.0
        axes_t = optional_input(pad, 3)
        if axes_t is not None:
            axes = const_value(axes_t)
            if axes is None:
                return f"{describe(pad)} axes are not constant"
            full = [0] * (2 * rank)
            axes = [int(a) % rank for a in axes.reshape(-1)]
            for k, axis in enumerate(axes):
                full[axis] = pads[k]
                full[rank + axis] = pads[len(axes) + k]
            pads = full
    if len(pads) != 2 * rank:
        return f"{describe(pad)} has {len(pads)} pads for rank {rank}"
    if any(p < 0 for p in pads):
        return f"{describe(pad)} has negative pads (a crop)"
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        return f"{describe(pad)} pads the batch or channel dim"
    return _PadSpec(pads, value)


def _merged_pads(node: gs.Node, spec: _PadSpec) -> list[int] | str:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad not in ("NOTSET", "VALID"):
        return f"{describe(node)} has auto_pad={auto_pad}"
    rank = len(spec.pads) // 2
    spatial = rank - 2
    own = [0] * (2 * spatial)
    if auto_pad == "NOTSET":
        own = [int(p) for p in node.attrs.get("pads", own)]
    begin = [own[i] + spec.pads[2 + i] for i in range(spatial)]
    end = [own[spatial + i] + spec.pads[rank + 2 + i] for i in range(spatial)]
    return begin + end


def _pad_before(node: gs.Node) -> gs.Node | None:
    pad = producer(node.inputs[0])
    return pad if pad is not None and pad.op == "Pad" else None


def _fold_pad(graph: gs.Graph, node: gs.Node, pads: list[int]) -> None:
    pad = _pad_before(node)
    x = pad.inputs[0]
    node.attrs.pop("auto_pad", None)
    node.attrs["pads"] = pads
    node.inputs[0] = x
    remove_node(graph, pad)


class PadIntoConv(Rule):
    """Fold a zero constant Pad on spatial dims into the Conv that reads it.

    Rewrite cases:
    - Pad(X, pads, 0) -> Conv{pads=p}: Conv(X){pads = p + spatial pads}; auto_pad
      VALID becomes explicit pads.
    Not applied: Pad mode is not constant; pads or value not constant; value is
    not 0; batch or channel dims padded; negative pads; the Conv has auto_pad
    SAME_*; the Pad output has another reader or is a graph output.
    """

    name = "pad-into-conv"
    anchor = ("Conv",)
    pattern = "Pad(X, pads:const, 0) -> Conv"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        pad = _pad_before(node)
        if pad is None:
            return f"{describe(node)} does not read a Pad"
        spec = _pad_spec(pad)
        if isinstance(spec, str):
            return spec
        if spec.value != 0.0:
            return f"{describe(pad)} pad value is {spec.value}, not 0"
        reason = sole_consumer_blocker(graph, pad, pad.outputs[0])
        if reason:
            return reason
        merged = _merged_pads(node, spec)
        return merged if isinstance(merged, str) else None

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        _fold_pad(graph, node, _merged_pads(node, _pad_spec(_pad_before(node))))


class PadIntoPool(Rule):
    """Fold a constant Pad on spatial dims into the AveragePool or MaxPool that reads it.

    Rewrite cases:
    - Pad(X, pads, 0) -> AveragePool{count_include_pad=1}: the padded zeros
      count in the average either way, so the pool takes the pads;
    - Pad(X, pads, -inf) -> MaxPool: -inf never wins a max, as the pool's own pads.
    Not applied: AveragePool with count_include_pad=0 (the divisor would
    change); MaxPool with a finite pad value or its Indices output used;
    ceil_mode=1 (windows starting in the right pad are dropped only for the
    pool's own pads); merged pads not smaller than the kernel; the Pad cases
    of pad-into-conv.
    """

    name = "pad-into-pool"
    anchor = ("AveragePool", "MaxPool")
    pattern = "Pad(X, pads:const, 0 | -inf) -> AveragePool | MaxPool"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        pad = _pad_before(node)
        if pad is None:
            return f"{describe(node)} does not read a Pad"
        spec = _pad_spec(pad)
        if isinstance(spec, str):
            return spec
        if node.op == "AveragePool":
            if not node.attrs.get("count_include_pad", 0):
                return f"{describe(node)} has count_include_pad=0"
            if spec.value != 0.0:
                return f"{describe(pad)} pad value is {spec.value}, not 0"
        else:
            if not (math.isinf(spec.value) and spec.value < 0):
                return f"{describe(pad)} pad value is {spec.value}, not -inf"
            if any(used(graph, t) for t in node.outputs[1:]):
                return f"{describe(node)} Indices output is used"
        if node.attrs.get("ceil_mode", 0):
            return f"{describe(node)} has ceil_mode=1"
        reason = sole_consumer_blocker(graph, pad, pad.outputs[0])
        if reason:
            return reason
        merged = _merged_pads(node, spec)
        if isinstance(merged, str):
            return merged
        kernel = list(node.attrs.get("kernel_shape", []))
        spatial = len(kernel)
        if any(merged[i] >= kernel[i % spatial] for i in range(len(merged))):
            return f"{describe(node)} pads {merged} would not be smaller than the kernel {kernel}"
        return None

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        _fold_pad(graph, node, _merged_pads(node, _pad_spec(_pad_before(node))))


# -- Sum into Add --------------------------------------------------------------------


class SumIntoAdd(Rule):
    """Turn a two-input Sum into Add.

    Rewrite cases:
    - Sum(a, b): Add(a, b), same node name and output (both broadcast alike).
    Not applied: any other number of inputs.
    """

    name = "sum-into-add"
    anchor = ("Sum",)
    pattern = "Sum(a, b)"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        if len(node.inputs) != 2:
            return f"{describe(node)} has {len(node.inputs)} inputs"
        return None

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        node.op = "Add"


# -- Identity and Dropout removal ----------------------------------------------------


def _bypass_blocker(graph: gs.Graph, node: gs.Node, x: gs.Tensor, y: gs.Tensor) -> str | None:
    """Why ``y = node(x)`` cannot be replaced by ``x``."""
    if not is_graph_output(graph, y):
        return None
    if is_graph_output(graph, x):
        return f"{describe(node)} input '{x.name}' and output '{y.name}' are both graph outputs"
    if is_graph_input(graph, x):
        return f"{describe(node)} connects graph input '{x.name}' to graph output '{y.name}'"
    if isinstance(x, gs.Constant) or producer(x) is None:
        return f"{describe(node)} output '{y.name}' is a graph output and its input is a constant"
    return None


def _bypass(graph: gs.Graph, node: gs.Node, x: gs.Tensor, y: gs.Tensor) -> None:
    """Remove ``y = node(x)``: readers of ``y`` read ``x``; a graph output ``y`` keeps its name
    by having the producer of ``x`` write ``y`` and the readers of ``x`` read ``y``."""
    remove_node(graph, node)
    if not is_graph_output(graph, y):
        for reader in list(y.outputs):
            for i, t in enumerate(reader.inputs):
                if t is y:
                    reader.inputs[i] = x
        return
    src = producer(x)
    for reader in list(x.outputs):
        for i, t in enumerate(reader.inputs):
            if t is x:
                reader.inputs[i] = y
    for i, t in enumerate(src.outputs):
        if t is x:
            src.outputs[i] = y


class RemoveIdentity(Rule):
    """Remove an Identity; its readers read its input.

    Rewrite cases:
    - y = Identity(x), y not a graph output: readers of y read x;
    - y a graph output: the producer of x writes y instead, and readers of x read y
      (graph output names never change).
    Not applied: y is a graph output and x is a graph input, a graph output or a constant.
    """

    name = "remove-identity"
    anchor = ("Identity",)
    pattern = "Identity(x)"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        return _bypass_blocker(graph, node, node.inputs[0], node.outputs[0])

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        _bypass(graph, node, node.inputs[0], node.outputs[0])


class RemoveDropout(Rule):
    """Remove an inference Dropout (a no-op); its readers read its input.

    Rewrite cases: as remove-identity, for ``y = Dropout(x, ratio?, training_mode?)``.
    Not applied: the mask output is used; training_mode is not a constant false
    (or, before opset 7, is_test is 0); the remove-identity graph output cases.
    """

    name = "remove-dropout"
    anchor = ("Dropout",)
    pattern = "Dropout(x) with training_mode false and mask unused"

    def check(self, graph: gs.Graph, node: gs.Node) -> str | None:
        if any(used(graph, t) for t in node.outputs[1:]):
            return f"{describe(node)} mask output is used"
        if "is_test" in node.attrs and not node.attrs["is_test"]:
            return f"{describe(node)} has is_test=0 (training)"
        mode = optional_input(node, 2)
        if mode is not None:
            value = const_value(mode)
            if value is None:
                return f"{describe(node)} training_mode is not constant"
            if bool(value.reshape(-1)[0]):
                return f"{describe(node)} training_mode is true"
        return _bypass_blocker(graph, node, node.inputs[0], node.outputs[0])

    def rewrite(self, graph: gs.Graph, node: gs.Node) -> None:
        _bypass(graph, node, node.inputs[0], node.outputs[0])


# -- registry and driver -------------------------------------------------------------

RULES: dict[str, Rule] = {rule.name: rule for rule in (
    RemoveIdentity(), RemoveDropout(), SumIntoAdd(), BatchNormIntoConv(), PadIntoConv(), PadIntoPool(),
    MatMulAddIntoGemm(),
)}


def apply_rules(graph: gs.Graph, rules: list[Rule], max_rounds: int = 8) -> int:
    """Apply ``rules`` until none applies (or ``max_rounds`` sweeps); returns the number of rewrites."""
    by_op: dict[str, list[Rule]] = {}
    for rule in rules:
        for op in rule.anchor:
            by_op.setdefault(op, []).append(rule)
    count = 0
    for _ in range(max_rounds):
        before = count
        for node in list(graph.nodes):
            for rule in by_op.get(node.op, ()):
                if not node.outputs or node.op not in rule.anchor:  # removed or changed by a rewrite
                    break
                if rule.check(graph, node) is None:
                    rule.rewrite(graph, node)
                    count += 1
                    break
        if count == before:
            break
    return count


@dataclass(frozen=True)
class Skip:
    """A rule whose pattern anchor was found but which did not apply, and why."""

    rule: str
    node: str
    reason: str


def explain(graph: gs.Graph, rules: list[Rule]) -> list[Skip]:
    """For each node a rule is anchored on, why the rule does not apply there (now)."""
    out = []
    for node in graph.nodes:
        for rule in rules:
            if node.op in rule.anchor:
                reason = rule.check(graph, node)
                if reason is not None:
                    out.append(Skip(rule.name, node.name, reason))
    return out
