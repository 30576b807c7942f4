"""Large weights: kept in their files, out of every ModelProto the passes build, until codegen writes them.

A constant of :data:`LARGE_BYTES` or more is *large*. The model is read with
its large initializers left in the file (its own raw data, or its external
data file): they become :class:`FileValues`, read only if a pass asks for the
values. Exported models (`Program.to_onnx(inline=False)`) carry large
constants as *placeholders*, initializers with a type and shape whose data is
an external reference, so sub-model extraction, version conversion and shape
inference handle a few KB whatever the model's size; codegen streams the
bytes into the sub-model files (edgec.submodel_files). A large constant that
a pass computed (a Conv with BatchNormalization folded in) is held as
:class:`ArrayValues` and exported the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.external_data_helper import ExternalDataInfo, uses_external_data
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from edgec.errors import EdgecError
from edgec.protowire import RawSpan

_NATIVE = frozenset(np.dtype(t) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                          np.uint32, np.uint64, np.float16, np.float32, np.float64))
LARGE_BYTES = 64 * 1024  # above tensor_info's 4096-element constants (edgec.backends.opset_forms) in any dtype
IN_MEMORY = "edgec-in-memory"  # the external location of a placeholder whose bytes a pass computed
_CHUNK = 1 << 22


class FileValues(LazyValues):
    """A constant's values lying in a file as raw little-endian bytes (offset, length), read on demand."""

    def __init__(self, tensor: onnx.TensorProto, path: Path, offset: int, length: int) -> None:
        super().__init__(tensor)
        self.path, self.offset, self.length = Path(path), offset, length

    def load(self) -> np.ndarray:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.tensor.data_type))
        if dtype not in _NATIVE:  # bfloat16, float8, 4-bit: onnx's own decoding
            full = onnx.TensorProto()
            full.CopyFrom(self.tensor)
            del full.external_data[:]
            full.data_location = onnx.TensorProto.DEFAULT
            full.raw_data = b"".join(self.chunks())
            return np.array(onnx.numpy_helper.to_array(full))
        array = np.fromfile(self.path, dtype=dtype.newbyteorder("<"), count=self.length // dtype.itemsize,
                            offset=self.offset)
        return array.astype(dtype, copy=False).reshape(self.shape)

    def chunks(self) -> Iterator[bytes]:
        """The raw bytes, a few MB at a time."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = self.length
            while left > 0:
                block = f.read(min(_CHUNK, left))
                if not block:
                    raise EdgecError(f"weights file ended {left} bytes early; was it changed during the compile?",
                                     where=str(self.path))
                left -= len(block)
                yield block


class ArrayValues(LazyValues):
    """A large constant a pass computed: the array, exported as a placeholder rather than copied into protos."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self.array = array
        super().__init__(placeholder(name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape),
                                     IN_MEMORY, 0, int(array.nbytes)))

    def load(self) -> np.ndarray:
        return self.array

    def chunks(self) -> Iterator[bytes | memoryview]:
        return array_chunks(self.array)


def array_chunks(array: np.ndarray) -> Iterator[memoryview]:
    """An array's raw little-endian bytes, a few MB at a time: a view of a contiguous little-endian array,
    else a few rows at a time (a broadcast fill is never made whole)."""
    little = array.dtype.newbyteorder("<")
    if array.ndim == 0 or (array.flags.c_contiguous and array.dtype == little):
        view = memoryview(np.ascontiguousarray(array, dtype=little).reshape(-1).view(np.uint8))
        for start in range(0, len(view), _CHUNK):
            yield view[start:start + _CHUNK]
        return
    rows = max(1, _CHUNK // max(1, array[0].nbytes))
    for start in range(0, array.shape[0], rows):
        yield memoryview(np.ascontiguousarray(array[start:start + rows], dtype=little).reshape(-1).view(np.uint8))


def raw_chunks(t: gs.Constant) -> Iterator[bytes | memoryview]:
    """A large constant's raw bytes, from its file or its array."""
    values = t._values  # noqa: SLF001
    if isinstance(values, (FileValues, ArrayValues)):
        return values.chunks()
    return array_chunks(np.asarray(t.values))


def placeholder(name: str, data_type: int, dims: list[int], location: str, offset: int, length: int) -> onnx.TensorProto:
    """An initializer with a type and shape whose data is an external reference."""
    t = onnx.TensorProto(name=name, data_type=data_type, dims=dims, data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=key, value=value)
    return t


def is_placeholder(t: gs.Tensor) -> bool:
    """A constant imported from an exported model whose values are only an external reference (no file bound)."""
    values = getattr(t, "_values", None)
    return (isinstance(t, gs.Constant) and isinstance(values, LazyValues)
            and not isinstance(values, (FileValues, ArrayValues)) and uses_external_data(values.tensor))


def raw_nbytes(t: gs.Constant) -> int:
    """Bytes of a large constant's raw data as ONNX stores it (packed types included)."""
    values = t._values  # noqa: SLF001
    if isinstance(values, FileValues):
        return values.length
    return int((values.array if isinstance(values, ArrayValues) else np.asarray(t.values)).nbytes)


def constant_nbytes(t: gs.Constant) -> int:
    """Bytes of a constant's values, without reading them."""
    values = t._values  # noqa: SLF001 - `values` would read a lazy constant in
    if isinstance(values, LazyValues):
        return int(values.nbytes)
    return int(np.asarray(values).nbytes)


def is_large(t: gs.Tensor) -> bool:
    """A constant of LARGE_BYTES or more with plain numeric values (what a placeholder can stand for)."""
    if not isinstance(t, gs.Constant) or t._export_dtype is not None:  # noqa: SLF001
        return False
    values = t._values  # noqa: SLF001
    if isinstance(values, (FileValues, ArrayValues)):
        return True
    if isinstance(values, SparseValues) or (isinstance(values, LazyValues) and uses_external_data(values.tensor)):
        return False
    try:
        native = np.dtype(values.dtype) in _NATIVE  # others (bfloat16, 4-bit) have no plain raw bytes in numpy
    except TypeError:  # an ONNX type numpy has no dtype for
        return False
    return native and values.nbytes >= LARGE_BYTES


def lighten(graph: gs.Graph) -> None:
    """Hold every large in-memory constant of the main graph as ArrayValues, so exports carry a placeholder.

    One still in a TensorProto (a tool's output: onnxsim's folded constants) is read out of it once.
    """
    for t in graph.tensors().values():
        values = getattr(t, "_values", None)
        if is_large(t) and not isinstance(values, (FileValues, ArrayValues)):
            array = onnx.numpy_helper.to_array(values.tensor) if isinstance(values, LazyValues) else values
            t._values = ArrayValues(t.name, array)  # noqa: SLF001


def attach_file_values(graph: gs.Graph, base_dir: Path) -> None:
    """Main-graph constants whose TensorProto is an external reference read from that file (relative to
    base_dir)."""
    for t in graph.tensors().values():
        values = getattr(t, "_values", None)
        if isinstance(values, LazyValues) and not isinstance(values, (FileValues, ArrayValues)) \
                and uses_external_data(values.tensor):
            info = ExternalDataInfo(values.tensor)
            t._values = FileValues(values.tensor, base_dir / info.location, info.offset or 0,  # noqa: SLF001
                                   info.length if info.length is not None else values.nbytes)


def mark_file_weights(model: onnx.ModelProto, spans: list[RawSpan], file_name: str) -> None:
    """Initializers whose raw data `scan_model` left in the model file become external references to it."""
    for span in spans:
        t = model.graph.initializer[span.index]
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for key, value in (("location", file_name), ("offset", str(span.offset)), ("length", str(span.length))):
            t.external_data.add(key=key, value=value)


def check_external_files(model: onnx.ModelProto, base_dir: Path, where: str) -> None:
    """Every external reference names a readable file long enough for it; small ones, and those in subgraphs or
    attributes, are read in (only the main graph's large initializers stay in their files)."""
    sizes: dict[Path, int] = {}
    top = len(model.graph.initializer)  # _get_all_tensors yields the main graph's initializers first
    for index, t in enumerate(_all_tensors(model)):
        if not uses_external_data(t):
            continue
        info = ExternalDataInfo(t)
        path = base_dir / info.location
        if path not in sizes:
            try:
                sizes[path] = os.stat(path).st_size if path.is_file() else -1
            except OSError:
                sizes[path] = -1
        if sizes[path] < 0 or os.path.isabs(info.location):
            raise EdgecError(f"cannot read the external weights: {info.location}; keep the weights file next to "
                             f"the model as when it was saved", where=where)
        expected = _nbytes(t)
        offset = info.offset or 0
        length = info.length if info.length is not None else max(sizes[path] - offset, 0)  # absent: to the end
        if info.length is None:
            t.external_data.add(key="length", value=str(length))
        if (expected is not None and length != expected) or offset + length > sizes[path]:
            raise EdgecError(f"external weights file truncated or corrupt: tensor '{t.name}' needs bytes "
                             f"{offset}..{offset + length} of {info.location} ({sizes[path]} bytes); copy it again "
                             f"as it was saved with the model", where=where)
        if length < LARGE_BYTES or index >= top:
            with open(path, "rb") as f:
                f.seek(offset)
                t.raw_data = f.read(length)
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT


def check_model(model: onnx.ModelProto, full_check: bool = False) -> None:
    """onnx.checker on a model whose large initializers may be placeholders (checked as typed graph inputs)."""
    external = [t for t in model.graph.initializer if uses_external_data(t)]
    if not external:
        onnx.checker.check_model(model, full_check=full_check)
        return
    view = onnx.ModelProto()
    view.CopyFrom(model)
    as_inputs(view)
    onnx.checker.check_model(view, full_check=full_check)


def as_inputs(model: onnx.ModelProto, names: set[str] | None = None) -> list[str]:
    """Placeholder initializers (those in `names`, or all) become typed graph inputs; their names."""
    moved = [t for t in model.graph.initializer if uses_external_data(t) and (names is None or t.name in names)]
    kept = [t for t in model.graph.initializer if not any(t is m for m in moved)]
    model.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved)
    names_moved = [t.name for t in moved]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return names_moved


def inline(model: onnx.ModelProto, graph: gs.Graph, names: set[str] | None = None) -> None:
    """Placeholders (those in `names`, or all) get their bytes from the graph's constants of the same name."""
    tensors = graph.tensors()
    for t in model.graph.initializer:
        if uses_external_data(t) and (names is None or t.name in names):
            data = b"".join(bytes(c) for c in raw_chunks(tensors[t.name]))
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = data


def _nbytes(t: onnx.TensorProto) -> int | None:
    """Raw bytes of a tensor of a native numpy type; None for others (packed, strings)."""
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    except (KeyError, TypeError, ValueError):
        return None
    if dtype not in _NATIVE:
        return None
    return int(np.prod(list(t.dims), dtype=np.int64)) * dtype.itemsize


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def hold_out(model: onnx.ModelProto, graph: gs.Graph) -> dict[str, gs.Constant]:
    """Prepare an exported model for a tool that reads every initializer (onnxsim, ONNX Runtime).

    Placeholders that constant folding could read (those of a node whose inputs are all constant, or
    become so) get their bytes; the rest become typed graph inputs, which changes no shape. Returns
    the constants held out, by name, for :func:`put_back`.
    """
    placeholders = {t.name for t in model.graph.initializer if uses_external_data(t)}
    constant = {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                            for o in n.output}
    foldable: set[str] = set()
    for node in model.graph.node:
        reads = [i for i in node.input if i]
        if all(i in constant for i in reads) and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                                         for a in node.attribute):
            constant.update(o for o in node.output if o)
            foldable.update(i for i in reads if i in placeholders)
    inline(model, graph, foldable)
    held = as_inputs(model, placeholders - foldable)
    tensors = graph.tensors()
    return {name: tensors[name] for name in held}


def put_back(graph: gs.Graph, held: dict[str, gs.Constant]) -> None:
    """The graph inputs :func:`hold_out` made become the constants again (their values shared, not copied)."""
    tensors = graph.tensors()
    for name, old in held.items():
        var = tensors.get(name)
        if var is None or isinstance(var, gs.Constant):
            continue
        const = gs.Constant(name, old._values, data_location=old.data_location)  # noqa: SLF001
        for node in list(var.outputs):
            for i, t in enumerate(node.inputs):
                if t is var:
                    node.inputs[i] = const
        graph.inputs = [t for t in graph.inputs if t is not var]
        graph.outputs = [const if t is var else t for t in graph.outputs]


def fold_large_fills(graph: gs.Graph) -> None:
    """Each ConstantOfShape of a constant shape whose output is large becomes that constant, held as a broadcast
    fill (no memory) rather than made whole by a constant folder. Models that build their weights this way
    (ONNX's bundled zoo files) then cost no more than their graph until the weights are written."""
    for node in list(graph.nodes):
        if node.op != "ConstantOfShape" or not node.inputs or not isinstance(node.inputs[0], gs.Constant):
            continue
        value = node.attrs.get("value")
        fill = np.asarray(value.values).reshape(-1)[:1] if isinstance(value, gs.Constant) else np.zeros(1, np.float32)
        if fill.size != 1 or fill.dtype not in _NATIVE:
            continue
        shape = tuple(int(d) for d in np.asarray(node.inputs[0].values).reshape(-1))
        if int(np.prod(shape, dtype=np.int64)) * fill.dtype.itemsize < LARGE_BYTES:
            continue
        out = node.outputs[0]
        const = gs.Constant(out.name, ArrayValues(out.name, np.broadcast_to(fill[0], shape)))
        for consumer in list(out.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is out:
                    consumer.inputs[i] = const
        graph.outputs = [const if t is out else t for t in graph.outputs]
        node.outputs.clear()
        node.inputs.clear()
        graph.nodes.remove(node)
