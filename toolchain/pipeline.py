"""The pass contract and the pass manager.

A pass is a small class with a kebab-case ``name``, options fixed at
construction (a frozen dataclass) and one method, ``run(program) ->
PassResult``. It keeps no state between runs. The :class:`PassManager` runs a
list of passes and calls each :class:`Instrument` before and after every pass:
IR dumps, timings and invariant checks are instruments, not pass code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Protocol, Sequence

import onnx

from edgec.errors import EdgecError
from edgec.ir import Program


@dataclass
class PassResult:
    program: Program
    changed: bool


class Pass(Protocol):
    name: ClassVar[str]

    def run(self, program: Program) -> PassResult: ...


class Instrument:
    """Hooks around each pass. Subclasses override what they need."""

    def before_pass(self, pass_: Pass, program: Program, index: int) -> None:  # noqa: B027
        pass

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:  # noqa: B027
        pass


@dataclass
class PassTiming:
    name: str
    ms: float
    changed: bool


class TimePasses(Instrument):
    """Records wall time per pass (``--time-passes``)."""

    def __init__(self) -> None:
        self.timings: list[PassTiming] = []
        self._start = 0.0

    def before_pass(self, pass_: Pass, program: Program, index: int) -> None:
        self._start = time.perf_counter()

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:
        self.timings.append(PassTiming(pass_.name, (time.perf_counter() - self._start) * 1e3, result.changed))


class DumpIR(Instrument):
    """Writes ``NN-<pass>.txt`` and ``NN-<pass>.json`` after each pass (``--dump-ir DIR``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self.directory / f"{index:02d}-{pass_.name}"
        stem.with_suffix(".txt").write_text(result.program.to_text())
        stem.with_suffix(".json").write_text(result.program.to_json_text())


class PrintIRAfter(Instrument):
    """Hands the text dump after the named passes to a sink (``--print-ir-after PASS``)."""

    def __init__(self, pass_names: Sequence[str], sink: Callable[[str, str], None]) -> None:
        self.pass_names = set(pass_names)
        self.sink = sink

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:
        if pass_.name in self.pass_names or "all" in self.pass_names:
            self.sink(pass_.name, result.program.to_text())


class VerifyInvariants(Instrument):
    """Checks between passes that each pass left the program in a state the next can trust.

    - the graph is a valid ONNX model (``onnx.checker``, full check once shapes are known);
    - after ``shape-inference``: every tensor has a dtype and a static shape;
    - after ``partition``: every group is placed in exactly one stage;
    - after ``local-partition``: every stage names a unit that can run all of its groups.
    A violation is a bug in the pass, so it raises ``AssertionError`` naming the pass.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:
        self._seen.add(pass_.name)
        program = result.program
        if not result.changed and pass_.name not in ("shape-inference", "partition"):
            return
        model = program.to_onnx_structure()
        try:
            onnx.checker.check_model(model, full_check=False)
        except onnx.checker.ValidationError as exc:
            raise AssertionError(f"after {pass_.name}: graph is not valid ONNX: {exc}") from exc
        if "shape-inference" in self._seen:
            for tensor in program.graph.tensors().values():
                if not tensor.name:
                    continue
                if tensor.dtype is None or tensor.shape is None or any(not isinstance(d, int) for d in tensor.shape):
                    raise AssertionError(f"after {pass_.name}: tensor '{tensor.name}' has no static type/shape")
        if "partition" in self._seen:
            placed = [g for s in program.stages for g in s.groups]
            expected = set(program.group_of().values())
            if len(placed) != len(set(placed)) or set(placed) != expected:
                raise AssertionError(f"after {pass_.name}: not every group is placed in exactly one stage")
        if "local-partition" in self._seen:
            for stage in program.stages:
                refused = [g for g in stage.groups if stage.unit_id in program.unsupported.get(g, {})]
                if not stage.unit or refused:
                    raise AssertionError(f"after {pass_.name}: stage {stage.name} is on '{stage.unit_id}', which "
                                         f"cannot run {refused or 'it (no unit)'}")


@dataclass
class PassManager:
    passes: list[Pass]
    instruments: list[Instrument] = field(default_factory=list)

    def run(self, program: Program) -> Program:
        for index, pass_ in enumerate(self.passes, start=1):
            for inst in self.instruments:
                inst.before_pass(pass_, program, index)
            try:
                result = pass_.run(program)
            except EdgecError as exc:
                if exc.where is None:
                    raise EdgecError(str(exc), where=pass_.name) from exc
                raise
            for inst in self.instruments:
                inst.after_pass(pass_, result, index)
            program = result.program
        return program
