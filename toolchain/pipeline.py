"""The pass contract and the pass manager.

A pass is a small class with a kebab-case ``name``, options fixed at
construction (a frozen dataclass), the facts about the Program it
``requires`` and ``provides`` (names from :data:`FACTS`), and one method,
``run(program) -> PassResult``. It keeps no state between runs. The
:class:`PassManager` refuses a pipeline whose order breaks the declarations,
runs the passes and calls each :class:`Instrument` before and after every
pass: IR dumps, timings and invariant checks are instruments, not pass code,
and they know facts, never pass names.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Protocol, Sequence

import onnx
from rich.console import Console
from rich.progress import Progress

from edgec.errors import EdgecError
from edgec.ir import Program
from edgec.progress import spinner


# What a pass may require or provide: Program fields, and `shapes`, a property of `graph`.
FACTS: dict[str, str] = {
    "cluster": "program.cluster: the cluster to compile for (given by the caller)",
    "graph": "program.graph: a valid ONNX graph with unique node names",
    "shapes": "every tensor of program.graph has a dtype and a static shape",
    "groups": "program.groups: every node in exactly one fusion group",
    "costs": "program.costs: every group costed on every compute unit",
    "unsupported": "program.unsupported: per group, the units that cannot run it and why",
    "segments": "program.segments: every group in exactly one device segment",
    "stages": "program.stages: every group in exactly one stage, on a unit that can run it",
    "prediction": "program.prediction: latency and bottleneck of the placed program",
    "variants": "program.variant_choice: every stage's variant chosen (and measured) against the accuracy floor",
}


@dataclass
class PassResult:
    program: Program
    changed: bool


class Pass(Protocol):
    name: ClassVar[str]
    requires: ClassVar[frozenset[str]]
    provides: ClassVar[frozenset[str]]

    def run(self, program: Program) -> PassResult: ...


class PipelineError(ValueError):
    """A pipeline whose passes are in an order their declarations do not allow (a programming error)."""


def check_order(passes: Sequence[Pass], given: frozenset[str] = frozenset({"cluster"})) -> None:
    """Refuse a pipeline in which a pass runs before what it requires is provided."""
    available = set(given)
    for index, pass_ in enumerate(passes, start=1):
        unknown = (set(pass_.requires) | set(pass_.provides)) - set(FACTS)
        if unknown:
            raise PipelineError(f"pass {index} ({pass_.name}) declares unknown facts {sorted(unknown)}; "
                                f"known: {', '.join(FACTS)}")
        missing = set(pass_.requires) - available
        if missing:
            providers = {f: [p.name for p in passes if f in p.provides] for f in sorted(missing)}
            hint = "; ".join(f"'{f}' is provided by {', '.join(ps) or 'no pass here'}" for f, ps in providers.items())
            raise PipelineError(f"pass {index} ({pass_.name}) requires {', '.join(sorted(missing))}, which no "
                                f"earlier pass provides ({hint})")
        available |= set(pass_.provides)


class Instrument:
    """Hooks around the pipeline and each pass. Subclasses override what they need."""

    def begin(self, passes: Sequence[Pass], given: frozenset[str]) -> None:  # noqa: B027
        """Before the first pass: the pipeline, and the facts the program holds before it runs."""

    def before_pass(self, pass_: Pass, program: Program, index: int) -> None:  # noqa: B027
        pass

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:  # noqa: B027
        pass

    def end(self) -> None:  # noqa: B027
        """After the last pass, or when one failed."""


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


class ShowProgress(Instrument):
    """Shows a pass that runs longer than `after_s` on a rich console: its number, name and time so far."""

    def __init__(self, console: Console, after_s: float = 1.0) -> None:
        self.console = console
        self.after_s = after_s
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._shown: Progress | None = None
        self._total = 0

    def begin(self, passes: Sequence[Pass], given: frozenset[str]) -> None:
        self._total = len(passes)

    def before_pass(self, pass_: Pass, program: Program, index: int) -> None:
        started = self.console.get_time()
        self._timer = threading.Timer(self.after_s, self._show, (f"pass {index}/{self._total}: {pass_.name}", started))
        self._timer.daemon = True
        self._timer.start()

    def _show(self, text: str, started: float) -> None:
        with self._lock:
            if self._timer is None:
                return  # the pass ended meanwhile
            self._shown = spinner(self.console)
            task = self._shown.add_task(text, total=None)
            for t in self._shown.tasks:  # the time shown is the pass's, not the display's
                if t.id == task:
                    t.start_time = started
            self._shown.start()

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:
        self.end()

    def end(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._shown is not None:
                self._shown.stop()
                self._shown = None


class DumpIR(Instrument):
    """Writes ``NN-<pass>.txt`` and ``NN-<pass>.json`` after each pass (``--dump-ir DIR``).

    A text dump the same as the previous pass's is one line naming that file."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._previous: tuple[str, str] | None = None  # (file name, text)

    def begin(self, passes: Sequence[Pass], given: frozenset[str]) -> None:
        self._previous = None

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self.directory / f"{index:02d}-{pass_.name}"
        text = result.program.to_text()
        if self._previous is not None and self._previous[1] == text:
            stem.with_suffix(".txt").write_text(unchanged_line(pass_.name, self._previous[0]))
        else:
            stem.with_suffix(".txt").write_text(text)
            self._previous = (stem.with_suffix(".txt").name, text)
        stem.with_suffix(".json").write_text(result.program.to_json_text())


def unchanged_line(pass_name: str, same_as: str) -> str:
    return f"# unchanged by {pass_name}: the listing is as {same_as} shows\n"


class PrintIRAfter(Instrument):
    """Hands the text dump after the named passes to a sink (``--print-ir-after PASS``); a dump the same as
    the one printed for the pass just before is one line saying so."""

    def __init__(self, pass_names: Sequence[str], sink: Callable[[str, str], None]) -> None:
        self.pass_names = set(pass_names)
        self.sink = sink
        self._previous: tuple[int, str, str] | None = None  # (index, pass, text) of the last one printed

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:
        if pass_.name in self.pass_names or "all" in self.pass_names:
            text = result.program.to_text()
            last = self._previous
            if last is not None and last[0] == index - 1 and last[2] == text:
                self.sink(pass_.name, unchanged_line(pass_.name, f"the IR after {last[1]}").rstrip("\n"))
            else:
                self.sink(pass_.name, text)
            self._previous = (index, pass_.name, text)


class VerifyInvariants(Instrument):
    """Checks after every pass that each fact provided so far holds (:data:`FACTS`), the pass's own first.

    A pass that breaks a fact an earlier pass provided (a rewrite that loses
    shapes, a partition that drops a group) is caught where it happens. A
    violation is a bug in the pass, so it raises ``AssertionError`` naming the
    pass and the fact.
    """

    def __init__(self) -> None:
        self._facts: list[str] = []

    def begin(self, passes: Sequence[Pass], given: frozenset[str]) -> None:
        self._facts = [f for f in FACTS if f in given]

    def after_pass(self, pass_: Pass, result: PassResult, index: int) -> None:
        self._facts += [f for f in FACTS if f in pass_.provides and f not in self._facts]
        for fact in sorted(self._facts, key=lambda f: f not in pass_.provides):
            problem = _CHECKS[fact](result.program)
            if problem is not None:
                raise AssertionError(f"after {pass_.name}: {fact}: {problem}")


def _check_cluster(program: Program) -> str | None:
    return None if program.cluster is not None else "no cluster"


def _check_graph(program: Program) -> str | None:
    try:
        onnx.checker.check_model(program.to_onnx_structure(), full_check=False)
    except onnx.checker.ValidationError as exc:
        return f"graph is not valid ONNX: {exc}"
    names = [n.name for n in program.graph.nodes]
    if len(set(names)) != len(names) or not all(names):
        return "node names are not unique and non-empty"
    return None


def _check_shapes(program: Program) -> str | None:
    for tensor in program.graph.tensors().values():
        if tensor.name and (tensor.dtype is None or tensor.shape is None
                            or any(not isinstance(d, int) for d in tensor.shape)):
            return f"tensor '{tensor.name}' has no static type/shape"
    return None


def _check_groups(program: Program) -> str | None:
    members = [n for g in program.groups.values() for n in g.nodes]
    if not program.groups or sorted(members) != sorted(n.name for n in program.graph.nodes):
        return "not every node is in exactly one fusion group"
    return None


def _check_costs(program: Program) -> str | None:
    assert program.cluster is not None
    units = {f"{d.name}.{u.name}" for d, u in program.cluster.units()}
    for group in program.group_of().values():
        if group not in program.costs or set(program.costs[group].ms) != units:
            return f"group '{group}' is not costed on every unit"
    return None


def _check_unsupported(program: Program) -> str | None:
    groups = set(program.group_of().values())
    stray = set(program.unsupported) - groups
    return f"refusals name groups that do not exist: {sorted(stray)[:3]}" if stray else None


def _placed_once(program: Program, placed: list[str]) -> bool:
    return len(placed) == len(set(placed)) and set(placed) == set(program.group_of().values())


def _check_segments(program: Program) -> str | None:
    assert program.cluster is not None
    if not _placed_once(program, [g for s in program.segments for g in s.groups]):
        return "not every group is placed in exactly one segment"
    stray = [s.device for s in program.segments if s.device not in program.cluster.devices]
    return f"segments name devices not in the cluster: {stray}" if stray else None


def _check_stages(program: Program) -> str | None:
    if not _placed_once(program, [g for s in program.stages for g in s.groups]):
        return "not every group is placed in exactly one stage"
    for stage in program.stages:
        refused = [g for g in stage.groups if stage.unit_id in program.unsupported.get(g, {})]
        if refused:
            return f"stage {stage.name} is on '{stage.unit_id}', which cannot run {refused}"
    return None


def _check_prediction(program: Program) -> str | None:
    return None if program.prediction is not None else "no prediction"


def _check_variants(program: Program) -> str | None:
    if program.variant_choice is None:
        return "no variant choice recorded"
    from edgec.backends.registry import backend_for

    assert program.cluster is not None
    for stage in program.stages:
        backend = backend_for(program.cluster.devices[stage.device], stage.unit)
        if stage.variant not in backend.variants:
            return f"stage {stage.name} runs variant '{stage.variant}', which '{stage.unit_id}' does not"
    return None


_CHECKS = {"cluster": _check_cluster, "graph": _check_graph, "shapes": _check_shapes, "groups": _check_groups,
           "costs": _check_costs, "unsupported": _check_unsupported, "segments": _check_segments,
           "stages": _check_stages, "prediction": _check_prediction,
           "variants": _check_variants}
assert set(_CHECKS) == set(FACTS)


@dataclass
class PassManager:
    """Runs `passes` in order; refuses (PipelineError) an order their declarations do not allow, given the
    facts the caller's program already holds."""

    passes: list[Pass]
    instruments: list[Instrument] = field(default_factory=list)
    given: frozenset[str] = frozenset({"cluster"})

    def __post_init__(self) -> None:
        check_order(self.passes, self.given)

    def run(self, program: Program) -> Program:
        for inst in self.instruments:
            inst.begin(self.passes, self.given)
        try:
            return self._run(program)
        finally:
            for inst in self.instruments:
                inst.end()

    def _run(self, program: Program) -> Program:
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
