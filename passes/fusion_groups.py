"""Fusion groups: the units a partition never cuts, as backends fuse them.

`build_groups` puts every node in exactly one :class:`~edgec.ir.FusionGroup`.
Group patterns (``FusionGroup.pattern``):

- ``attention``: [Transpose(K)] -> MatMul(Q, K^T) -> [Div | Mul scale] -> [Add mask]
  -> Softmax -> MatMul(., V);
- ``layernorm``: the decomposition ReduceMean, Sub, Pow, ReduceMean, Add(eps), Sqrt,
  Div, [Mul(gamma)], [Add(beta)];
- ``conv[-bn][-act][-add][-act]``: Conv (or ConvTranspose), then a BatchNormalization still there, an
  activation, the residual (or bias) Add and the activation after it;
- ``gemm[-bias][-act]``: Gemm or MatMul, then a constant-bias Add and an activation;
- ``single``: any other node, alone.

An activation is one op (Relu, Clip, LeakyRelu, Sigmoid, HardSwish, ...) or a
closed elementwise block holding a nonlinearity: x*Sigmoid(x) (SiLU),
x*HardSigmoid(x), and the Erf and Tanh forms of GELU.

Safety: a tensor made inside a group and read inside it is read by no node
outside it and is not a graph output; for chains this is "a node joins its
producer's group only if it is the only reader of the output it reads". Only
the group's last node writes tensors read outside, and every other node of the
group is an ancestor of it inside the group, which makes groups convex (no
path leaves a group and comes back); :func:`is_convex` checks it anyway.
Groups are named g0, g1, ... in a topological order of the group DAG, and the
graph's node list is reordered so that each group's nodes are contiguous.
"""

from __future__ import annotations

import heapq
from typing import Callable, Iterable

import onnx_graphsurgeon as gs

from edgec.ir import FusionGroup

PATTERNS = ("attention", "layernorm", "conv", "gemm")

ACTIVATIONS = frozenset({
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "PRelu", "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu",
})
_BLOCK_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Erf", "Tanh", "Sigmoid", "HardSigmoid", "Sqrt"})
_BLOCK_NONLINEAR = frozenset({"Erf", "Tanh", "Sigmoid", "HardSigmoid"})
_BLOCK_MAX_NODES = 10


# -- the node DAG --------------------------------------------------------------------


class Dag:
    """Top-level nodes in topological order, with readers of each tensor (a node reading
    a tensor inside one of its subgraphs counts as a reader)."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.nodes = list(graph.nodes)
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self._top: dict[int, gs.Node] = {}
        for node in self.nodes:
            self._top[id(node)] = node
            for sub in _subgraph_nodes(node):
                self._top[id(sub)] = node
        self._outputs = {id(t) for t in graph.outputs}

    def readers(self, t: gs.Tensor) -> list[gs.Node]:
        seen: dict[int, gs.Node] = {}
        for n in t.outputs:
            top = self._top.get(id(n))
            if top is not None:
                seen.setdefault(id(top), top)
        return list(seen.values())

    def producer(self, t: gs.Tensor) -> gs.Node | None:
        if t.inputs and id(t.inputs[0]) in self.index:
            return t.inputs[0]
        return None

    def is_output(self, t: gs.Tensor) -> bool:
        return id(t) in self._outputs

    def used_outputs(self, node: gs.Node) -> list[gs.Tensor]:
        return [t for t in node.outputs if self.readers(t) or self.is_output(t)]


def _subgraph_nodes(node: gs.Node) -> Iterable[gs.Node]:
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            for sub in value.nodes:
                yield sub
                yield from _subgraph_nodes(sub)


def is_convex(dag: Dag, nodes: Iterable[gs.Node]) -> bool:
    """No path leaves ``nodes`` and comes back into them."""
    nodes = list(nodes)
    members = {id(n) for n in nodes}
    if not members:
        return True
    last = max(dag.index[i] for i in members)
    stack = [r for n in nodes for t in n.outputs for r in dag.readers(t) if id(r) not in members]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen or dag.index[id(node)] > last:
            continue
        seen.add(id(node))
        for t in node.outputs:
            for r in dag.readers(t):
                if id(r) in members:
                    return False
                stack.append(r)
    return True


def is_safe(dag: Dag, nodes: list[gs.Node]) -> bool:
    """Tensors made and read inside ``nodes`` stay inside; only the last node's outputs leave; convex."""
    members = {id(n) for n in nodes}
    last = max(nodes, key=lambda n: dag.index[id(n)])
    for node in nodes:
        if node is last:
            continue
        for t in node.outputs:
            if dag.is_output(t) or any(id(r) not in members for r in dag.readers(t)):
                return False
    return is_convex(dag, nodes)


# -- matching helpers ----------------------------------------------------------------


class _Claims:
    def __init__(self) -> None:
        self.owner: dict[int, int] = {}

    def free(self, node: gs.Node | None) -> bool:
        return node is not None and id(node) not in self.owner


def _next(dag: Dag, node: gs.Node, claims: _Claims, ops: Iterable[str] | None = None,
          slot: int | None = None) -> gs.Node | None:
    """The only reader of ``node``'s only used output, if free, reading it directly
    (at input ``slot`` when given) and of one of ``ops``."""
    outs = dag.used_outputs(node)
    if len(outs) != 1 or dag.is_output(outs[0]):
        return None
    readers = dag.readers(outs[0])
    if len(readers) != 1 or not claims.free(readers[0]):
        return None
    reader = readers[0]
    if not any(t is outs[0] for t in reader.inputs):
        return None
    if slot is not None and (len(reader.inputs) <= slot or reader.inputs[slot] is not outs[0]):
        return None
    if ops is not None and reader.op not in ops:
        return None
    return reader


def _others_constant(node: gs.Node, t: gs.Tensor) -> bool:
    return all(x is t or not x.name or isinstance(x, gs.Constant) for x in node.inputs)


def _activation(dag: Dag, node: gs.Node, claims: _Claims) -> list[gs.Node] | None:
    """The activation applied to ``node``'s output: one op, or a closed elementwise block."""
    outs = dag.used_outputs(node)
    if len(outs) != 1 or dag.is_output(outs[0]):
        return None
    t = outs[0]
    single = _next(dag, node, claims, ACTIVATIONS, slot=0)
    if single is not None and _others_constant(single, t):
        return [single]
    return _closed_block(dag, t, claims)


def _closed_block(dag: Dag, t: gs.Tensor, claims: _Claims) -> list[gs.Node] | None:
    """Elementwise nodes with constant side inputs that read every reader of ``t`` and
    end in one output (SiLU, HardSwish and GELU decompositions), topologically ordered."""
    block: list[gs.Node] = []
    members: set[int] = set()
    avail: dict[int, gs.Tensor] = {id(t): t}

    def ready(n: gs.Node) -> bool:
        return (claims.free(n) and id(n) not in members and n.op in _BLOCK_OPS and len(n.outputs) == 1
                and all(id(x) in avail or isinstance(x, gs.Constant) for x in n.inputs))

    def open_tensors() -> list[gs.Tensor]:
        return [x for x in avail.values()
                if dag.is_output(x) or any(id(r) not in members for r in dag.readers(x))]

    while len(block) < _BLOCK_MAX_NODES:
        candidates = [r for x in avail.values() for r in dag.readers(x) if ready(r)]
        if not candidates:
            return None
        node = min(candidates, key=lambda n: dag.index[id(n)])
        block.append(node)
        members.add(id(node))
        avail[id(node.outputs[0])] = node.outputs[0]
        still_open = open_tensors()
        if len(still_open) == 1 and still_open[0] is not t and any(n.op in _BLOCK_NONLINEAR for n in block):
            exit_node = still_open[0].inputs[0]
            last = max(block, key=lambda n: dag.index[id(n)])
            if exit_node is not last:
                return None
            if any(n.op in ("Erf", "Tanh") for n in block):  # GELU's trailing "* 0.5"
                scale = _next(dag, last, claims, ("Mul", "Div"))
                if scale is not None and _others_constant(scale, last.outputs[0]):
                    block.append(scale)
            return sorted(block, key=lambda n: dag.index[id(n)])
    return None


# -- group patterns ------------------------------------------------------------------


def _conv_group(dag: Dag, conv: gs.Node, claims: _Claims) -> tuple[str, list[gs.Node]] | None:
    if conv.op not in ("Conv", "ConvTranspose"):
        return None
    nodes, parts, cur = [conv], ["conv"], conv
    bn = _next(dag, cur, claims, ("BatchNormalization",), slot=0)
    if bn is not None:
        nodes.append(bn), parts.append("bn")
        cur = bn
    act = _activation(dag, cur, claims)
    if act:
        nodes += act
        parts.append("act")
        cur = act[-1]
    add = _next(dag, cur, claims, ("Add",))
    if add is not None:
        nodes.append(add), parts.append("add")
        cur = add
        act = _activation(dag, cur, claims)
        if act:
            nodes += act
            parts.append("act")
    return "-".join(parts), nodes


def _gemm_group(dag: Dag, seed: gs.Node, claims: _Claims) -> tuple[str, list[gs.Node]] | None:
    if seed.op not in ("Gemm", "MatMul"):
        return None
    nodes, parts, cur = [seed], ["gemm"], seed
    add = _next(dag, cur, claims, ("Add",))
    if add is not None and _others_constant(add, cur.outputs[0]):
        nodes.append(add), parts.append("bias")
        cur = add
    act = _activation(dag, cur, claims)
    if act:
        nodes += act
        parts.append("act")
    return "-".join(parts), nodes


def _attention_group(dag: Dag, softmax: gs.Node, claims: _Claims) -> tuple[str, list[gs.Node]] | None:
    if softmax.op != "Softmax" or not claims.free(softmax):
        return None
    av = _next(dag, softmax, claims, ("MatMul",), slot=0)
    if av is None:
        return None
    chain: list[gs.Node] = []
    node = dag.producer(softmax.inputs[0])
    while node is not None and claims.free(node) and node.op in ("Add", "Div", "Mul") and len(chain) < 3:
        chain.append(node)
        node = _score_input(dag, node)
    if node is None or node.op != "MatMul" or not claims.free(node):
        return None
    nodes = [node, *reversed(chain), softmax, av]
    k_t = dag.producer(node.inputs[1])
    if k_t is not None and k_t.op == "Transpose" and claims.free(k_t) and _next(dag, k_t, claims) is node:
        nodes.insert(0, k_t)
    return "attention", nodes


def _score_input(dag: Dag, node: gs.Node) -> gs.Node | None:
    """The producer of the attention-score input of a scale (Div/Mul by a constant) or mask Add."""
    if node.op == "Div":
        return dag.producer(node.inputs[0]) if isinstance(node.inputs[1], gs.Constant) else None
    variable = [t for t in node.inputs if not isinstance(t, gs.Constant)]
    if node.op == "Mul" and len(variable) != 1:
        return None
    producers = [dag.producer(t) for t in variable]
    for p in producers:
        if p is not None and p.op == "MatMul":
            return p
    for p in producers:
        if p is not None and p.op in ("Div", "Mul", "Add"):
            return p
    return None


def _layernorm_group(dag: Dag, mean: gs.Node, claims: _Claims) -> tuple[str, list[gs.Node]] | None:
    if mean.op != "ReduceMean" or not claims.free(mean):
        return None
    x = mean.inputs[0]
    sub = _next(dag, mean, claims, ("Sub",), slot=1)
    if sub is None or sub.inputs[0] is not x:
        return None
    d = sub.outputs[0]
    readers = dag.readers(d)
    if dag.is_output(d) or len(readers) != 2 or not all(claims.free(r) for r in readers):
        return None
    square = next((r for r in readers if r.op == "Pow" or (r.op == "Mul" and r.inputs[0] is d and r.inputs[1] is d)),
                  None)
    div = next((r for r in readers if r.op == "Div" and r.inputs[0] is d), None)
    if square is None or div is None:
        return None
    nodes = [mean, sub, square]
    cur = square
    for ops in (("ReduceMean",), ("Add",), ("Sqrt",)):
        cur = _next(dag, cur, claims, ops)
        if cur is None:
            return None
        nodes.append(cur)
    if _next(dag, cur, claims, ("Div",), slot=1) is not div:
        return None
    nodes.append(div)
    cur = div
    for ops in (("Mul",), ("Add",)):
        step = _next(dag, cur, claims, ops)
        if step is None or not _others_constant(step, cur.outputs[0]):
            break
        nodes.append(step)
        cur = step
    return "layernorm", nodes


_MATCHERS: dict[str, Callable[[Dag, gs.Node, _Claims], tuple[str, list[gs.Node]] | None]] = {
    "attention": _attention_group, "layernorm": _layernorm_group, "conv": _conv_group, "gemm": _gemm_group,
}
_ANCHORED = ("attention", "layernorm")  # matched first, anywhere; the rest grow forward in topological order


def build_groups(graph: gs.Graph, patterns: Iterable[str] = PATTERNS) -> dict[str, FusionGroup]:
    """Group every node of ``graph`` (topologically sorted) and reorder ``graph.nodes`` so that
    groups are contiguous, in the order of their names."""
    dag = Dag(graph)
    claims = _Claims()
    found: list[tuple[str, list[gs.Node]]] = []

    def claim(match: tuple[str, list[gs.Node]] | None) -> bool:
        if match is None:
            return False
        pattern, nodes = match
        if len(nodes) > 1 and is_safe(dag, nodes):
            for n in nodes:
                claims.owner[id(n)] = len(found)
            found.append((pattern, sorted(nodes, key=lambda n: dag.index[id(n)])))
            return True
        return False

    patterns = list(patterns)
    for pattern in [p for p in patterns if p in _ANCHORED]:
        for node in dag.nodes:
            if claims.free(node):
                claim(_MATCHERS[pattern](dag, node, claims))
    for node in dag.nodes:
        if not claims.free(node):
            continue
        for pattern in [p for p in patterns if p not in _ANCHORED]:
            if claim(_MATCHERS[pattern](dag, node, claims)):
                break
        else:
            claims.owner[id(node)] = len(found)
            found.append(("single", [node]))

    order = _group_order(dag, found, claims)
    graph.nodes = [n for k in order for n in found[k][1]]
    return {f"g{i}": FusionGroup(f"g{i}", [n.name for n in found[k][1]], found[k][0]) for i, k in enumerate(order)}


def _group_order(dag: Dag, found: list[tuple[str, list[gs.Node]]], claims: _Claims) -> list[int]:
    """Topological order of the group DAG, earliest first node first among the ready ones."""
    succ: list[set[int]] = [set() for _ in found]
    indegree = [0] * len(found)
    for k, (_, nodes) in enumerate(found):
        for n in nodes:
            for t in n.outputs:
                for r in dag.readers(t):
                    j = claims.owner[id(r)]
                    if j != k and j not in succ[k]:
                        succ[k].add(j)
                        indegree[j] += 1
    first = [dag.index[id(nodes[0])] for _, nodes in found]
    heap = [(first[k], k) for k in range(len(found)) if indegree[k] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, k = heapq.heappop(heap)
        order.append(k)
        for j in succ[k]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(heap, (first[j], j))
    if len(order) != len(found):
        raise AssertionError("fusion: the groups form a cycle")
    return order
