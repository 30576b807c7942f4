"""Writing one sub-model whose large weights are placeholders (edgec.weights), with their bytes streamed in.

A sub-model whose large weights come to more than `external_over` bytes is
written as ONNX external data: ``<stage>.onnx`` holds the graph and small
constants, ``<stage>.data`` beside it the large weights (each at a 64-byte
aligned offset), as ``onnx.save(..., save_as_external_data=True)`` would lay
them out. Any other sub-model is one self-contained file: the structure, then
each large weight appended as one more initializer (protobuf merges the
repeated field), which parses as the same model. Either way each weight goes
from its file (or array) to the output a few MB at a time, hashed on the way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.external_data_helper import uses_external_data

from edgec.protowire import tensor_field
from edgec.weights import is_large, raw_chunks, raw_nbytes

# Sub-models whose weights exceed this are written with an external-data file. Protobuf cannot
# serialize a message of 2 GiB or more, and a runtime that reads a single-file model holds its bytes
# and the parsed model at once: at 1 GiB a board with 4 GB (the Jetson Nano) still loads one.
EXTERNAL_DATA_BYTES = 1 << 30
_ALIGN = 64


def write_submodel(out: Path, rel: str, model: onnx.ModelProto, graph: gs.Graph,
                   external_over: int = EXTERNAL_DATA_BYTES) -> list[dict[str, str]]:
    """Write `model` to out/rel, its placeholders filled from `graph`'s constants of the same names.

    Returns the manifest's file entries (path relative to out/, sha256): the model's, then its
    external-data file's when it has one.
    """
    held = _placeholders(model, graph)
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    total = sum(raw_nbytes(c) for _, c in held)
    if held and total > external_over:
        return _write_external(out, rel, model, held)
    structure = onnx.ModelProto()
    structure.CopyFrom(model)
    keep = [t for t in structure.graph.initializer if not uses_external_data(t)]
    del structure.graph.initializer[:]
    structure.graph.initializer.extend(keep)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        _put(f, digest, [structure.SerializeToString()])
        for proto, const in held:
            length = raw_nbytes(const)
            _put(f, digest, [tensor_field(proto.name, proto.data_type, list(proto.dims), length)])
            _put(f, digest, raw_chunks(const))
    return [{"path": rel, "sha256": digest.hexdigest()}]


def _write_external(out: Path, rel: str, model: onnx.ModelProto,
                    held: list[tuple[onnx.TensorProto, gs.Constant]]) -> list[dict[str, str]]:
    data_rel = str(Path(rel).with_suffix(".data"))
    structure = onnx.ModelProto()
    structure.CopyFrom(model)
    by_name = {t.name: t for t in structure.graph.initializer}
    digest = hashlib.sha256()
    offset = 0
    with open(out / data_rel, "wb") as f:
        for proto, const in held:
            pad = -offset % _ALIGN
            _put(f, digest, [b"\0" * pad])
            offset += pad
            length = raw_nbytes(const)
            _put(f, digest, raw_chunks(const))
            t = by_name[proto.name]
            del t.external_data[:]
            for key, value in (("location", Path(data_rel).name), ("offset", str(offset)), ("length", str(length))):
                t.external_data.add(key=key, value=value)
            offset += length
    data_entry = {"path": data_rel, "sha256": digest.hexdigest()}
    content = structure.SerializeToString()
    (out / rel).write_bytes(content)
    return [{"path": rel, "sha256": hashlib.sha256(content).hexdigest()}, data_entry]


def _placeholders(model: onnx.ModelProto, graph: gs.Graph) -> list[tuple[onnx.TensorProto, gs.Constant]]:
    """Each placeholder with the graph constant that holds its bytes; a mismatch is a bug in a pass or backend."""
    tensors = graph.tensors()
    out = []
    for proto in model.graph.initializer:
        if not uses_external_data(proto):
            continue
        const = tensors.get(proto.name)
        if not (const is not None and is_large(const)):
            raise AssertionError(f"sub-model initializer '{proto.name}' is a placeholder for no large constant")
        dtype = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(const.dtype)) if not isinstance(const.dtype, int) \
            else const.dtype
        if list(proto.dims) != list(const.shape) or proto.data_type != dtype:
            raise AssertionError(f"sub-model initializer '{proto.name}' changed type or shape from the program's")
        out.append((proto, const))
    return out


def _put(f, digest: "hashlib._Hash", blocks: Iterable[bytes | memoryview]) -> None:
    for block in blocks:
        f.write(block)
        digest.update(block)
