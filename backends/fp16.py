"""fp16 lowering of a sub-model and the check that it stays accurate.

`to_fp16` writes an ONNX model that computes in float16 with float32 inputs
and outputs; `check_fp16` runs it against the fp32 model under ONNX Runtime's
CPU provider. The TensorRT backend uses both: a GPU stage's engine is built
with `trtexec --fp16` from the fp32 sub-model, and this is how its accuracy is
judged before a board is at hand (edgec.backends.tensorrt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

# fp16 accuracy check (`check_fp16`): the fp16 model (`to_fp16`, run under
# ONNX Runtime CPU) against the fp32 one, per output y:
#
#     max|y16 - y32| <= max(FP16_TOLERANCE * range(y32), sqrt(depth) * s)
#
# - fp16 keeps 11 significant bits (unit roundoff u = 2**-11 ~ 4.9e-4). A
#   well-conditioned network adds ~u relative error at each tensor it rounds,
#   growing like sqrt(depth) for independent roundings: ~2.5e-3 of the range
#   after 25 layers, ~5e-3 after 100. 1e-2 of the output's range leaves 2x or
#   more over that for the zoo's networks (measured: 4e-4 to 5e-3) and still
#   catches an overflow to inf/NaN or a wrong cast, which move an output by
#   O(range).
# - Some networks amplify any perturbation: s = max|y32(fp16(x)) - y32(x)| is the
#   model's own response to rounding only its inputs to fp16 (1e-2 of the range
#   for the random-weight ResNet-50, 4e-6 for DenseNet-121). fp16 rounds once
#   per layer along the longest input-to-output path (`depth` nodes); each
#   rounding is amplified no more than the input's, and independent ones add
#   in quadrature, hence sqrt(depth) * s. No tolerance can ask fp16 to beat its
#   own input rounding.
# ONNX Runtime computes in fp32 between fp16 tensors, so this checks storage
# rounding; an engine's fp16 accumulation adds to it and is checked on the
# board with the same measure. Classifiers should also keep their top-1.
FP16_TOLERANCE = 1e-2

_F32, _F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
_FP16_MAX = float(np.finfo(np.float16).max)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model computing in float16, its float32 inputs and outputs kept (Cast at the edges).

    Float32 initializers and Constant values become float16 (clipped to
    +-65504); Cast(to=FLOAT) becomes Cast(to=FLOAT16). An input the operator
    schema allows only as float32 (Resize `scales`, ...) keeps a float32
    tensor (the initializer itself, a float32 twin of it, or a Cast), and an
    output that is then float32 gets a Cast back. Nodes with subgraphs stay
    float32 between Casts.
    """
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.value_info) + list(g.output)}
    inits = {t.name: t for t in g.initializer}
    types.update({name: t.data_type for name, t in inits.items()})
    taken = set(types) | {o for n in g.node for o in n.output} | {n.name for n in g.node}

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    slots32 = _fp32_slots(g, opset, types)  # (node index, input index) that must read float32
    used16 = {name for k, n in enumerate(g.node) for i, name in enumerate(n.input)
              if name in inits and types[name] == _F32 and (k, i) not in slots32}
    used32 = {g.node[k].input[i] for k, i in slots32} & set(inits)
    twin32 = {}
    for name in sorted(used16 & used32):  # read both ways: keep a float32 twin
        twin32[name] = fresh(f"{name}_fp32")
        g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[name]), twin32[name]))
    for name in used16:
        _to16(inits[name])

    graph_in = {i.name for i in g.input if types.get(i.name) == _F32}
    rename = {name: fresh(f"{name}_fp16") for name in graph_in}
    rename.update({o.name: fresh(f"{o.name}_fp16") for o in g.output if types.get(o.name) == _F32})
    nodes = [helper.make_node("Cast", [name], [rename[name]], to=_F16, name=fresh(f"{name}_to_fp16"))
             for name in sorted(graph_in)]
    cast32: dict[str, str] = {}
    for k, node in enumerate(g.node):
        for i, name in enumerate(node.input):
            if not name or types.get(name) != _F32:
                continue
            if (k, i) not in slots32:
                node.input[i] = rename.get(name, name)
            elif name in inits or name in graph_in:
                node.input[i] = twin32.get(name, name)
            else:
                if name not in cast32:
                    cast32[name] = fresh(f"{name}_fp32")
                    nodes.append(helper.make_node("Cast", [rename.get(name, name)], [cast32[name]], to=_F32,
                                                  name=fresh(f"{name}_to_fp32")))
                node.input[i] = cast32[name]
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == _F32:
                a.i = _F16
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == _F32:
                _to16(a.t)
        tail = []
        for j, out in enumerate(node.output):
            if not out:
                continue
            node.output[j] = rename.get(out, out)
            if types.get(out) == _F32 and _output_stays32(node, k, j, opset, slots32):
                final = node.output[j]
                node.output[j] = fresh(f"{out}_fp32")
                tail.append(helper.make_node("Cast", [node.output[j]], [final], to=_F16,
                                             name=fresh(f"{out}_to_fp16")))
        nodes.append(node)
        nodes.extend(tail)
    for o in g.output:
        if o.name in rename:
            nodes.append(helper.make_node("Cast", [rename[o.name]], [o.name], to=_F32, name=fresh(f"{o.name}_to_fp32")))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _to16(t: onnx.TensorProto) -> None:
    arr = numpy_helper.to_array(t).astype(np.float32)
    t.CopyFrom(numpy_helper.from_array(np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16), t.name))


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _fp32_slots(g: onnx.GraphProto, opset: int, types: dict[str, int]) -> set[tuple[int, int]]:
    """(node index, input index) of float inputs that must stay float32.

    Those whose schema type excludes float16, and every input of a node with subgraphs.
    """
    out = set()
    for k, node in enumerate(g.node):
        schema = node_schema(node, opset)
        whole = _has_subgraph(node) or schema is None
        for i, name in enumerate(node.input):
            if name and types.get(name) == _F32 and (whole or not _allows16(schema, formal_at(schema.inputs, i))):
                out.add((k, i))
    return out


def _output_stays32(node: onnx.NodeProto, k: int, j: int, opset: int, slots32: set[tuple[int, int]]) -> bool:
    schema = node_schema(node, opset)
    if schema is None or _has_subgraph(node):
        return True
    formal = formal_at(schema.outputs, j)
    if formal is None:
        return False
    if not _allows16(schema, formal):
        return True
    # an output sharing a type parameter with an input kept float32 is float32 too
    return any((k, i) in slots32 and (f := formal_at(schema.inputs, i)) is not None and f.type_str == formal.type_str
               for i in range(len(node.input)))


def node_schema(node: onnx.NodeProto, opset: int) -> onnx.defs.OpSchema | None:
    """The node's operator schema at `opset`; None for an unknown op."""
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return None


def formal_at(formals, i: int):
    """Formal parameter i, the last (variadic) one past the end."""
    if i < len(formals):
        return formals[i]
    return formals[-1] if formals else None


def _allows16(schema, formal) -> bool:
    if formal is None:
        return True
    for c in schema.type_constraints:
        if c.type_param_str == formal.type_str:
            return "tensor(float16)" in c.allowed_type_strs
    return formal.type_str == "tensor(float16)"


@dataclass(frozen=True)
class Fp16Check:
    output: str
    max_abs_error: float
    tolerance: float
    input_rounding: float  # s: the fp32 model's response to fp16-rounded inputs
    depth: int

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.max_abs_error <= self.tolerance


def check_fp16(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
               fp16_model: onnx.ModelProto | None = None) -> list[Fp16Check]:
    """Compare the fp16 model with the fp32 one on `feeds` (ONNX Runtime CPU, optimizations off)."""
    fp16_model = fp16_model or to_fp16(model)
    run32, run16 = _cpu_session(model), _cpu_session(fp16_model)
    names = [o.name for o in model.graph.output]
    y32 = run32.run(names, feeds)
    y16 = run16.run(names, feeds)
    rounded = {k: v.astype(np.float16).astype(v.dtype) if v.dtype == np.float32 else v for k, v in feeds.items()}
    yr = run32.run(names, rounded)
    depths = _depths(model)
    out = []
    for name, a, b, r in zip(names, y32, y16, yr):
        a64, b64, r64 = (np.asarray(v, np.float64) for v in (a, b, r))
        span = float(a64.max() - a64.min()) if a64.size else 0.0
        s = float(np.abs(r64 - a64).max()) if a64.size else 0.0
        err = float(np.abs(b64 - a64).max()) if a64.size else 0.0
        depth = depths.get(name, 1)
        tol = max(FP16_TOLERANCE * span, float(np.sqrt(depth)) * s)
        out.append(Fp16Check(name, err, tol, s, depth))
    return out


def _cpu_session(model: onnx.ModelProto):
    from edgec.runtime.session import inference_session

    return inference_session(model.SerializeToString(), {"graph_optimization_level": "disable_all"})


def _depths(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor -> nodes on the longest path from a graph input to it (nodes are in topological order)."""
    depth: dict[str, int] = {}
    for node in model.graph.node:
        d = 1 + max((depth.get(i, 0) for i in node.input if i), default=0)
        for o in node.output:
            depth[o] = d
    return depth
