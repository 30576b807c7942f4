"""The `shape-inference` pass: every tensor gets a dtype and a static shape.

Dynamic input dims are pinned by ``--input-shape NAME=1x3x224x224``; onnxsim
then folds constants (weights built by ConstantOfShape, shape arithmetic) and
ONNX shape inference fills every intermediate tensor. It infers and folds
only: onnxsim's graph optimizations (BN into Conv and the rest) are off, so
every rewrite happens in the fusion pass, in the open. Tensors it cannot type
(outputs of ONNX Runtime's contrib ops, which ONNX has no inference for) are
read off one ONNX Runtime run on random inputs. A dim that stays dynamic is a
user error naming the tensor and the flag to use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import onnx
import onnx_graphsurgeon as gs

from edgec.errors import EdgecError
from edgec.ir import Program, name_nodes
from edgec.pipeline import PassResult
from edgec.weights import fold_large_fills, hold_out, put_back


@dataclass(frozen=True)
class ShapeInference:
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    fold_constants: bool = True
    name: ClassVar[str] = "shape-inference"
    requires: ClassVar[frozenset[str]] = frozenset({"graph"})
    provides: ClassVar[frozenset[str]] = frozenset({"shapes"})

    def run(self, program: Program) -> PassResult:
        if self.fold_constants:
            fold_large_fills(program.graph)  # large ConstantOfShape outputs: broadcast fills, not onnxsim's copies
        model = program.to_onnx(inline=False)
        _pin_input_shapes(model, self.input_shapes)
        _forget_unfixed_dims(model)
        held = hold_out(model, program.graph)  # large weights nothing folds stay out of onnxsim's copies
        if self.fold_constants:
            model = _simplify(model)
            name_nodes(model)
        _drop_unused_optional_outputs(model)
        graph = gs.import_onnx(model)
        if not _all_static(graph):  # onnxsim usually leaves every shape known; infer what it did not
            try:
                model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
            except onnx.shape_inference.InferenceError as exc:
                raise EdgecError(f"ONNX shape inference failed: {str(exc).strip().splitlines()[0]}") from None
            graph = gs.import_onnx(model)
        if not _all_static(graph) and _inputs_static(graph):
            graph = gs.import_onnx(_shapes_by_running(model))
        put_back(graph, held)
        _require_static(graph)
        program.graph = graph
        return PassResult(program, changed=True)


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`images=1x3x640x640` -> ("images", (1, 3, 640, 640))."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise EdgecError(f"--input-shape '{text}': expected NAME=DxDx... with positive integers, "
                         f"e.g. images=1x3x224x224")
    return name, shape


def _pin_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    """Pin dynamic input dims. A dim is dynamic when it has a dim_param, no value, or a value <= 0 (exporters
    write -1 or 0 for "any"); a dim_param pinned on one input takes the same value on every input that shares
    it. An input left dynamic is a user error naming the flag to use."""
    inputs = {i.name: i for i in model.graph.input}
    params: dict[str, tuple[int, str]] = {}  # dim_param -> (value, the flag that pinned it)
    for name, shape in shapes.items():
        if name not in inputs:
            raise EdgecError(f"--input-shape names '{name}', which is not a graph input; "
                             f"inputs are: {', '.join(inputs)}")
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise EdgecError(f"--input-shape {name}: model declares rank {len(dims)}, got {len(shape)} dims")
        for dim, value in zip(dims, shape):
            if _fixed(dim) and dim.dim_value != value:
                raise EdgecError(f"--input-shape {name}: dim {dim.dim_value} is fixed by the model, got {value}")
            if dim.dim_param:
                pinned = params.setdefault(dim.dim_param, (value, name))
                if pinned[0] != value:
                    raise EdgecError(f"--input-shape {name}: dim '{dim.dim_param}' is {value} here but "
                                     f"{pinned[0]} in --input-shape {pinned[1]}; inputs that share a dim name "
                                     f"share its value")
            dim.Clear()
            dim.dim_value = value
    for inp in model.graph.input:
        for dim in inp.type.tensor_type.shape.dim:
            if not _fixed(dim) and dim.dim_param in params:
                value = params[dim.dim_param][0]
                dim.Clear()
                dim.dim_value = value
    for inp in model.graph.input:
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if not _fixed(dim):
                label = dim.dim_param or (str(dim.dim_value) if dim.HasField("dim_value") else "?")
                example = "x".join(str(d.dim_value) if _fixed(d) else "1" for d in inp.type.tensor_type.shape.dim)
                raise EdgecError(f"tensor '{inp.name}' has dynamic dim '{label}' (axis {axis}); "
                                 f"pin it with --input-shape {inp.name}={example}")


def _forget_unfixed_dims(model: onnx.ModelProto) -> None:
    """Dims of outputs and intermediate tensors that are named, -1 or 0 become unknown, for inference to fill
    from the pinned inputs (a declared 'batch' or -1 would otherwise stand against what inference finds)."""
    for info in list(model.graph.output) + list(model.graph.value_info):
        for dim in info.type.tensor_type.shape.dim:
            if not _fixed(dim):
                dim.Clear()


def _fixed(dim: onnx.TensorShapeProto.Dimension) -> bool:
    return dim.HasField("dim_value") and dim.dim_value > 0


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim  # here: its import takes longer than compiling a small model

    try:
        simplified, _ = onnxsim.simplify(model, check_n=0, perform_optimization=False)
    except Exception as exc:  # onnxsim raises bare RuntimeErrors from C++
        raise EdgecError(f"constant folding (onnxsim) failed: {str(exc).strip().splitlines()[0]}") from None
    return simplified


def _drop_unused_optional_outputs(model: onnx.ModelProto) -> None:
    """Trailing optional outputs nobody reads (Dropout's mask, MaxPool's indices) are left unnamed.

    They often have no inferable shape, and nothing needs one.
    """
    used = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        if len(node.output) < 2 or node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, max(v for d, v in _opsets(model) if d in ("", "ai.onnx")))
        except onnx.defs.SchemaError:
            continue
        keep = len(node.output)
        while keep > 1 and node.output[keep - 1] not in used and _optional(schema, keep - 1):
            keep -= 1
        del node.output[keep:]


def _opsets(model: onnx.ModelProto) -> list[tuple[str, int]]:
    return [(o.domain, o.version) for o in model.opset_import]


def _optional(schema: onnx.defs.OpSchema, index: int) -> bool:
    formal = schema.outputs[min(index, len(schema.outputs) - 1)]
    return formal.option == onnx.defs.OpSchema.FormalParameterOption.Optional


# Ops whose output shapes depend on the input values: a shape from one run on random data would be wrong.
_DATA_DEPENDENT = frozenset({"NonZero", "Unique", "NonMaxSuppression", "Compress", "Loop", "If", "Scan",
                             "StringSplit", "RandomNormal", "RandomUniform", "RandomNormalLike",
                             "RandomUniformLike", "Multinomial", "Bernoulli"})


def _shapes_by_running(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with value_info for the tensors ONNX inference could not shape because they follow an op
    outside the ONNX domain (ONNX Runtime's contrib ops), read off one ONNX Runtime run on random inputs.

    Tensors downstream of an op whose output shape depends on the data are left alone (their dims stay
    unknown and are reported as such).
    """
    import numpy as np

    from edgec.verification import session as unoptimized_session

    static = {v.name for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
              if _static_type(v)} | {t.name for t in model.graph.initializer}
    beyond_onnx: set[str] = set()   # tensors downstream of a non-ONNX op
    data_dependent: set[str] = set()
    for node in model.graph.node:  # topological order
        if node.domain not in ("", "ai.onnx") or any(i in beyond_onnx for i in node.input):
            beyond_onnx.update(o for o in node.output if o)
        if node.op_type in _DATA_DEPENDENT or any(i in data_dependent for i in node.input):
            data_dependent.update(o for o in node.output if o)
    missing = [o for n in model.graph.node for o in n.output
               if o and o not in static and o in beyond_onnx and o not in data_dependent]
    missing = list(dict.fromkeys(missing))
    if not missing:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in missing)
    rng = np.random.default_rng(0)
    try:
        session = unoptimized_session(probe.SerializeToString())
        feeds = {}
        for i in session.get_inputs():
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
                next(v.type.tensor_type.elem_type for v in model.graph.input if v.name == i.name)))
            feeds[i.name] = (rng.random(i.shape) if dtype.kind == "f" else np.zeros(i.shape)).astype(dtype)
        values = session.run(missing, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types, and RuntimeErrors from C++
        untyped = next(n for n in model.graph.node if missing[0] in n.output)
        raise EdgecError(f"tensor '{missing[0]}' (output of node '{untyped.name}', "
                         f"{untyped.domain or 'ai.onnx'}.{untyped.op_type}) has no ONNX shape inference, and "
                         f"ONNX Runtime could not run the model to measure it: "
                         f"{str(exc).strip().splitlines()[0][:200]}; export the model with standard ONNX ops") from None
    measured = {name: np.asarray(value) for name, value in zip(missing, values)
                if isinstance(value, np.ndarray) and value.dtype != object}  # not None, not a sequence
    kept = [v for v in model.graph.value_info if v.name not in measured]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    for name, value in measured.items():
        model.graph.value_info.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    return model


def _static_type(v: onnx.ValueInfoProto) -> bool:
    tt = v.type.tensor_type
    return bool(tt.elem_type) and tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)


def _inputs_static(graph: gs.Graph) -> bool:
    return all(t.shape is not None and all(isinstance(d, int) for d in t.shape) for t in graph.inputs)


def _all_static(graph: gs.Graph) -> bool:
    return all(isinstance(t, gs.Constant) or not t.name or (
        t.dtype is not None and t.shape is not None and all(isinstance(d, int) for d in t.shape))
        for t in graph.tensors().values())


def _require_static(graph: gs.Graph) -> None:
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) or not tensor.name:
            continue
        if tensor.dtype is None or tensor.shape is None:
            producer = f" (output of node '{tensor.inputs[0].name}')" if tensor.inputs else ""
            raise EdgecError(f"tensor '{tensor.name}'{producer} has no inferable type or shape")
        dynamic = [d for d in tensor.shape if not isinstance(d, int)]
        if dynamic:
            producer = f" (output of node '{tensor.inputs[0].name}')" if tensor.inputs else ""
            raise EdgecError(f"tensor '{tensor.name}'{producer} has data-dependent dim '{dynamic[0]}'; "
                             f"edgec needs static shapes")
