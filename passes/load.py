"""The `load` pass: read an .onnx file (and its external data) into the IR.

What it normalises, so later passes can rely on it:
- initializers listed as graph inputs (IR 3 models) become plain constants;
- Constant nodes become initializers, and opsets older than 7 are upgraded
  (:mod:`edgec.passes.conventions`);
- every node has a unique, stable name (``<op>_<index>`` for unnamed or clashing ones);
- every op is in a domain a backend can run (the ONNX domains, or ONNX Runtime's contrib ops).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from edgec.errors import EdgecError
from edgec.ir import Program, name_nodes
from edgec.passes.conventions import check_opset, constants_to_initializers
from edgec.pipeline import PassResult
from edgec.protowire import WireError, scan_model
from edgec.weights import LARGE_BYTES, attach_file_values, check_external_files, check_model, mark_file_weights

KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


@dataclass(frozen=True)
class Load:
    path: str
    name: ClassVar[str] = "load"
    requires: ClassVar[frozenset[str]] = frozenset()
    provides: ClassVar[frozenset[str]] = frozenset({"graph"})

    def run(self, program: Program) -> PassResult:
        model, sha = read_model(self.path)
        program.graph = gs.import_onnx(model)
        attach_file_values(program.graph, Path(self.path).absolute().parent)
        program.opsets = {op.domain: op.version for op in model.opset_import}
        program.ir_version = model.ir_version
        program.source_path = str(self.path)
        program.source_sha256 = sha
        return PassResult(program, changed=True)


def read_model(path: str | Path) -> tuple[onnx.ModelProto, str]:
    """Load and normalise a model; returns it with the sha256 of the file's bytes.

    Large weights stay in their files (the model's own, or its external data): the model holds external
    references to them (edgec.weights), read only when a pass needs the values.
    """
    path = Path(path)
    try:
        data, spans = scan_model(path, LARGE_BYTES)
        sha = _sha256(path)
    except FileNotFoundError:
        raise EdgecError("model file not found; pass the path of an .onnx file", where=str(path)) from None
    except IsADirectoryError:
        raise EdgecError("is a folder; pass the path of an .onnx file", where=str(path)) from None
    except WireError as exc:
        raise EdgecError(f"not an ONNX model (the protobuf does not parse: {exc}); is the file complete "
                         f"and really .onnx?", where=str(path)) from None
    model = _parse(data, path)
    mark_file_weights(model, spans, path.name)
    _check_structure(model, path)
    check_external_files(model, path.absolute().parent, str(path))
    _lift_initializer_inputs(model)  # before the checker: IR 3 wants initializers listed as inputs, ours is IR 4
    _check_valid(model, path)
    model = check_opset(model, path)
    constants_to_initializers(model)
    name_nodes(model)
    _check_domains(model, path)
    return model, sha


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse(data: bytes, path: Path) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise EdgecError(f"not an ONNX model (the protobuf does not parse: {exc}); is the file complete "
                         f"and really .onnx?", where=str(path)) from None
    return model


def _check_valid(model: onnx.ModelProto, path: Path) -> None:
    """The ONNX checker's verdict on the model as loaded (large weights checked by type and shape; their files'
    lengths by check_external_files)."""
    try:
        check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "rejected"
        raise EdgecError(f"not a valid ONNX model ({first}); fix the exporter's output or re-export it, "
                         f"onnx.checker.check_model names the same problem", where=str(path)) from None


def _check_structure(model: onnx.ModelProto, path: Path) -> None:
    """Catch truncated or corrupt files cheaply: every name a node reads must be defined before it."""
    if not model.HasField("graph") or not model.graph.node:
        raise EdgecError("not an ONNX model, or a truncated one: it has no graph nodes", where=str(path))
    graph = model.graph
    if not graph.output:
        raise EdgecError("the graph declares no outputs; the file may be truncated", where=str(path))
    if not model.opset_import:
        raise EdgecError("the model imports no opset; the file may be truncated", where=str(path))
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        for name in node.input:
            if name not in defined:
                raise EdgecError(f"node '{node.name or node.op_type}' reads '{name}', which nothing defines "
                                 f"before it (truncated file, or nodes not in topological order)", where=str(path))
        defined.update(node.output)
    for out in graph.output:
        if out.name not in defined:
            raise EdgecError(f"graph output '{out.name}' is never produced; the file may be truncated",
                             where=str(path))


def _lift_initializer_inputs(model: onnx.ModelProto) -> None:
    """Initializers stop being graph inputs, which makes the model IR 4 at least (IR 3 lists them as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in inits]
    if len(kept) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)
    if inits:
        model.ir_version = max(model.ir_version, 4)


def _check_domains(model: onnx.ModelProto, path: Path) -> None:
    for node in model.graph.node:
        if node.domain not in KNOWN_DOMAINS:
            raise EdgecError(
                f"node '{node.name}' ({node.op_type}) is in op domain '{node.domain}', which no edgec backend "
                f"can run; replace it with standard ONNX ops before compiling", where=str(path))
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            raise EdgecError(f"node '{node.name}' has unknown ONNX op '{node.op_type}'", where=str(path))
