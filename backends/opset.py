"""Converting a (sub-)model down to the opset and IR version a board's runtime loads.

A runtime reads models up to some opset and IR version: ONNX Runtime those
of the ONNX release it was built against (edgec.backends.versions), TensorRT
8.2's parser opset 13. `convert_for_device` rewrites a model to fit, and
`node_convertible` answers the same question for one node so that a
backend's support predicate can say no before a partition is made.

Down-conversion: `onnx.version_converter` has adapters for only some
operator changes (none for Relu 14 -> 13, BatchNormalization 15 -> 14,
Identity 16 -> 14, ...). Most opset bumps only widen the accepted types or add
an attribute with a default; for those a node whose attributes, inputs and
dtypes all exist in the older version is kept as it is ("restamped"). Where a
same-looking signature changed meaning (`_CHANGED_MEANING`) the converter's
adapter is used or the node is refused. Ops whose newer form neither can take
down are rewritten first (edgec.backends.opset_forms).
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import defs, helper, numpy_helper

from edgec.backends.decompose import expand_for_opset
from edgec.backends.opset_forms import (no_form, rewrite_new_forms, schema_at, softmax_over_last_axis,
                                        tensor_info)
from edgec.errors import EdgecError
from edgec.weights import check_model

# (op, since_version): versions whose inputs/attributes look like the previous
# version's but compute something else, so a node is never restamped across them.
_CHANGED_MEANING = {
    ("Softmax", 13), ("LogSoftmax", 13), ("Hardmax", 13),  # axis: one axis instead of flatten-to-2D
    ("RoiAlign", 16),  # coordinate_transformation_mode default changed to half_pixel
    ("Resize", 11), ("Upsample", 9), ("Upsample", 10),
}

# (op, since_version): attribute values that version added; a node using one is not restamped.
_NEW_ATTR_VALUES = {
    ("Pad", 19): {"mode": {"wrap"}},
    ("Resize", 19): {"coordinate_transformation_mode": {"half_pixel_symmetric"}},
    ("ScatterND", 18): {"reduction": {"max", "min"}},
    ("ScatterElements", 18): {"reduction": {"max", "min"}},
}

# Tensor element types and the IR version that introduced them (onnx/onnx docs/IR.md).
_TYPE_MIN_IR = {
    onnx.TensorProto.BFLOAT16: 4,
    onnx.TensorProto.FLOAT8E4M3FN: 9, onnx.TensorProto.FLOAT8E4M3FNUZ: 9,
    onnx.TensorProto.FLOAT8E5M2: 9, onnx.TensorProto.FLOAT8E5M2FNUZ: 9,
    onnx.TensorProto.UINT4: 10, onnx.TensorProto.INT4: 10,
}
if hasattr(onnx.TensorProto, "FLOAT4E2M1"):
    _TYPE_MIN_IR[onnx.TensorProto.FLOAT4E2M1] = 11

_HOLD = "edgec.hold"  # a domain the version converter leaves alone


# -- converting a model --------------------------------------------------------------------


def model_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def convert_for_device(model: onnx.ModelProto, max_opset: int, max_ir: int) -> onnx.ModelProto:
    """The model at opset <= max_opset and IR version <= max_ir, or an EdgecError naming the node.

    Checked with onnx.checker (full check) before it is returned. The input
    model is not modified.
    """
    out = convert_opset(model, max_opset)
    _lower_ir(out, max_ir)
    try:
        check_model(out, full_check=True)  # large weights may be placeholders
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EdgecError(f"the model converted to opset {model_opset(out)} / IR {out.ir_version} does not pass "
                         f"onnx.checker: {str(exc).strip().splitlines()[0]}") from None
    return out


def convert_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """The model with its ONNX-domain opset lowered to `target` (a copy; unchanged if already <= target)."""
    source = model_opset(model)
    out = copy.deepcopy(model)
    if source <= target:
        return out
    expand_for_opset(out, source, target)  # function ops the target lacks become their bodies
    types, shapes, consts = tensor_info(out)
    for node in out.graph.node:
        if node.domain in ("", "ai.onnx"):
            rewrite_new_forms(out, node, source, target, shapes, consts)
    last_axis = softmax_over_last_axis(out, source, target, shapes)
    held: list[onnx.NodeProto] = []
    converter_needed: list[onnx.NodeProto] = []
    why_not: dict[int, str] = {}
    for node in out.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        schema = schema_at(node.op_type, source)
        if schema is None:
            raise EdgecError(f"node '{node.name}' ({node.op_type}) is not an ONNX operator at opset {source}")
        if schema.since_version <= target:
            continue
        if _has_subgraph(node):
            raise EdgecError(no_form(node, source, target, "nodes with subgraphs are not converted across "
                                                            "opsets"))
        why = None if node.output[0] in last_axis else _restampable(node, source, target, types)
        if why is None:
            held.append(node)
        else:
            converter_needed.append(node)
            why_not[id(node)] = why
    for node in held:
        node.domain = _HOLD
        old_attrs = schema_at(node.op_type, target).attributes
        kept = [a for a in node.attribute if a.name in old_attrs]  # the rest equal their defaults
        del node.attribute[:]
        node.attribute.extend(kept)
    if held:
        out.opset_import.append(helper.make_opsetid(_HOLD, 1))
    if converter_needed:
        try:
            out = onnx.version_converter.convert_version(out, target)
        except Exception as exc:  # the converter raises RuntimeError with a C++ assertion text
            culprit = _culprit(str(exc), converter_needed)
            why = _converter_reason(str(exc), culprit)
            if "No Previous Version" not in str(exc):
                why += f" ({why_not[id(culprit)]})"
            raise EdgecError(no_form(culprit, source, target, why)) from None
    else:
        for o in out.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = target
    for node in out.graph.node:
        if node.domain == _HOLD:
            node.domain = ""
    kept = [o for o in out.opset_import if o.domain != _HOLD]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    _drop_unread_initializers(out)
    return out


def _drop_unread_initializers(model: onnx.ModelProto) -> None:
    """Initializers the rewrites turned into attributes (axes, split): ONNX Runtime warns about unread ones."""
    def reads(graph: onnx.GraphProto) -> set[str]:
        names = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        for n in graph.node:
            for a in n.attribute:
                for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    names |= reads(g)
        return names

    read = reads(model.graph)
    kept = [t for t in model.graph.initializer if t.name in read]
    if len(kept) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)


def _lower_ir(model: onnx.ModelProto, max_ir: int) -> None:
    if model.ir_version <= max_ir:
        return
    needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if needed > max_ir:
        raise EdgecError(f"opset {model_opset(model)} needs IR version {needed}, above the runtime's {max_ir}")
    if model.functions and max_ir < 8:
        raise EdgecError(f"the model has local functions (IR 8), above the runtime's IR {max_ir}; inline them")
    for name, elem in _all_elem_types(model):
        if _TYPE_MIN_IR.get(elem, 0) > max_ir:
            raise EdgecError(f"tensor '{name}' is {helper.tensor_dtype_to_string(elem)}, which needs IR version "
                             f"{_TYPE_MIN_IR[elem]}; the runtime reads IR <= {max_ir}: keep this tensor off that "
                             f"board or cast it to float32")
    model.ir_version = max_ir


def _all_elem_types(model: onnx.ModelProto):
    g = model.graph
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.HasField("tensor_type"):
            yield v.name, v.type.tensor_type.elem_type
    for t in g.initializer:
        yield t.name, t.data_type


# -- one node ------------------------------------------------------------------------------


def node_convertible(node: gs.Node, source: int, target: int) -> str | None:
    """None if the node has a form at opset `target`, else why not (for support predicates).

    A node whose operator version at `source` already exists at `target` is
    trivially fine; otherwise the node alone is put through `convert_opset`
    (cached by operator, attributes and input types).
    """
    if source <= target or (node.domain or "") not in ("", "ai.onnx"):
        return None
    schema = schema_at(node.op, source)
    if schema is None:
        return f"{node.op} is not an ONNX operator at opset {source}"
    if schema.since_version <= target:
        return None
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return (f"{node.op}-{schema.since_version} has no form at opset {target}: nodes with subgraphs are not "
                f"converted across opsets")
    return _node_convertible_cached(_node_key(node), source, target)


@functools.lru_cache(maxsize=4096)
def _node_convertible_cached(key: tuple, source: int, target: int) -> str | None:
    model = _single_node_model(key, source)
    try:
        convert_opset(model, target)
    except EdgecError as exc:
        return str(exc).replace("node 'n' ", "", 1)
    return None


def lowered_op_types(node: gs.Node, source: int, target: int) -> tuple[str, ...] | None:
    """The op types the node becomes at opset `target` (a function op the target lacks: its body's), or None
    where it has no form there."""
    if node_convertible(node, source, target) is not None:
        return None
    return _lowered_cached(_node_key(node), source, target)


@functools.lru_cache(maxsize=1024)
def _lowered_cached(key: tuple, source: int, target: int) -> tuple[str, ...]:
    return tuple(n.op_type for n in convert_opset(_single_node_model(key, source), target).graph.node)


def _node_key(node: gs.Node) -> tuple:
    def tensor_key(t: gs.Tensor) -> tuple:
        if not t.name:
            return ("", None, None, None)
        dtype = elem_type(t.dtype)
        shape = tuple(t.shape) if t.shape is not None else None
        value = None
        if isinstance(t, gs.Constant) and t.shape is not None and int(np.prod(t.shape)) <= 64:
            arr = np.asarray(t.values)
            value = (arr.dtype.str, arr.tobytes())
        return (t.name, dtype, shape, value)

    attrs = []
    for k, v in sorted(node.attrs.items()):
        if isinstance(v, gs.Graph):
            attrs.append((k, "<graph>"))
        elif isinstance(v, gs.Tensor):
            attrs.append((k, "<tensor>"))
        elif isinstance(v, list):
            attrs.append((k, tuple(v)))
        else:
            attrs.append((k, v))
    return (node.op, tuple(attrs), tuple(tensor_key(t) for t in node.inputs),
            tuple(tensor_key(t) for t in node.outputs))


def _single_node_model(key: tuple, opset: int) -> onnx.ModelProto:
    op, attrs, inputs, outputs = key
    inits, graph_inputs, names = [], [], []
    for i, (name, dtype, shape, value) in enumerate(inputs):
        if not name:
            names.append("")
            continue
        tname = f"in{i}"
        names.append(tname)
        if value is not None:
            arr = np.frombuffer(value[1], dtype=np.dtype(value[0])).reshape(shape)
            inits.append(numpy_helper.from_array(arr, tname))
        else:
            graph_inputs.append(_value_info(tname, dtype, shape))
    onames = [f"out{j}" if name else "" for j, (name, *_rest) in enumerate(outputs)]
    node = helper.make_node(op, names, onames, name="n")
    for k, v in attrs:
        if v in ("<graph>", "<tensor>"):
            continue
        node.attribute.append(helper.make_attribute(k, list(v) if isinstance(v, tuple) else v))
    graph = helper.make_graph([node], "one", graph_inputs,
                              [_value_info(f"out{j}", dtype, shape)
                               for j, (name, dtype, shape, _) in enumerate(outputs) if name],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model


def _value_info(name: str, dtype: int | None, shape: tuple | None) -> onnx.ValueInfoProto:
    dims = None if shape is None else [d if isinstance(d, int) else None for d in shape]
    return helper.make_tensor_value_info(name, dtype or onnx.TensorProto.UNDEFINED, dims)


def elem_type(dtype: Any) -> int | None:
    """The ONNX element type of a graph-surgeon dtype (numpy dtype or ONNX enum); None if unknown."""
    if dtype is None:
        return None
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        return int(dtype)
    try:
        return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    except (TypeError, KeyError, ValueError):
        return None


# -- restamping ----------------------------------------------------------------------------


def _restampable(node: onnx.NodeProto, source: int, target: int, types: dict[str, int]) -> str | None:
    """None if the node means the same at opset `target` as it is, else what differs."""
    new = schema_at(node.op_type, source)
    old = schema_at(node.op_type, target)
    if new is None or old is None:
        return f"no version of {node.op_type} exists at opset {target}"
    for op, version in _CHANGED_MEANING:
        if op == node.op_type and old.since_version < version <= new.since_version:
            return f"{op}-{version} computes differently from {op}-{old.since_version}"
    for (op, version), values in _NEW_ATTR_VALUES.items():
        if op == node.op_type and old.since_version < version <= new.since_version:
            for attr in node.attribute:
                value = helper.get_attribute_value(attr)
                value = value.decode() if isinstance(value, bytes) else value
                if attr.name in values and value in values[attr.name]:
                    return f"{attr.name}='{value}' needs {op}-{version}"
    for attr in node.attribute:
        if attr.name in old.attributes:
            continue
        default = new.attributes[attr.name].default_value if attr.name in new.attributes else None
        if default is None or not default.name or helper.get_attribute_value(default) != \
                helper.get_attribute_value(attr):
            return f"attribute '{attr.name}' does not exist before {node.op_type}-{new.since_version}"
    for kind, actual, formal_old, formal_new in (("input", node.input, old.inputs, new.inputs),
                                                 ("output", node.output, old.outputs, new.outputs)):
        for i, name in enumerate(actual):
            if not name:
                continue
            f_old = _formal(formal_old, i)
            f_new = _formal(formal_new, i)
            if f_old is None or f_new is None or _shifted(f_old.name, f_new.name, formal_old, formal_new):
                return f"{kind} {i} of {node.op_type}-{new.since_version} has no counterpart before"
            elem = types.get(name)
            if elem and not _type_allowed(old, f_old, elem):
                return (f"{kind} '{name}' is {helper.tensor_dtype_to_string(elem)}, which "
                        f"{node.op_type}-{old.since_version} does not take")
    return None


def _shifted(old_name: str, new_name: str, formal_old: list, formal_new: list) -> bool:
    """Whether position i holds a different parameter in the two versions (a rename is not a shift)."""
    if old_name == new_name:
        return False
    return old_name in {f.name for f in formal_new} or new_name in {f.name for f in formal_old}


def _formal(formals: list, i: int):
    if i < len(formals):
        return formals[i]
    if formals and formals[-1].option == defs.OpSchema.FormalParameterOption.Variadic:
        return formals[-1]
    return None


def _type_allowed(schema: defs.OpSchema, formal, elem: int) -> bool:
    type_str = f"tensor({_TYPE_NAMES.get(elem, '?')})"
    for c in schema.type_constraints:
        if c.type_param_str == formal.type_str:
            return type_str in c.allowed_type_strs
    return formal.type_str == type_str


_TYPE_NAMES = {
    onnx.TensorProto.FLOAT: "float", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.DOUBLE: "double",
    onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.INT8: "int8", onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16", onnx.TensorProto.UINT32: "uint32", onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.BOOL: "bool", onnx.TensorProto.STRING: "string",
    onnx.TensorProto.COMPLEX64: "complex64", onnx.TensorProto.COMPLEX128: "complex128",
}


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _culprit(message: str, candidates: list[onnx.NodeProto]) -> onnx.NodeProto:
    for node in candidates:
        if re.search(rf"\b{re.escape(node.op_type)}\b", message):
            return node
    return candidates[0]


def _converter_reason(message: str, node: onnx.NodeProto) -> str:
    if "No Previous Version" in message:
        return f"{node.op_type} does not exist in earlier opsets"
    if "No Adapter" in message:
        return f"onnx.version_converter has no down-conversion for this {node.op_type}"
    last = message.strip().splitlines()[-1] if message.strip() else "conversion failed"
    return last.split("failed: ", 1)[-1]
