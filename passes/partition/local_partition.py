"""The `local-partition` pass: which compute unit of a board runs each group of the board's stage.

Segments the global pass placed on units already (the joint strategies, which
search boards and units together) become one stage each, unchanged, predicted
with every unit a concurrent worker. For the single-level plan:

The global pass cuts the model into one contiguous segment per board
(``program.segments``); this pass writes ``program.stages`` and the prediction. Inside a
board, the runtime runs the board's stages one after another in one process
(edgec.runtime.device), so the board's time per frame is the sum of its unit
stages plus the copies between them, and the best split is the one with the
least total time. `split_segment` finds it exactly by dynamic programming over
(position, unit): O(items x units^2), with a unit allowed to appear more than
once (GPU, CPU for the nodes TensorRT cannot take, GPU again).

Costs of a change of unit at a position: a per-stage call overhead, plus each
side's backend's copy of the bytes that cross there between the process's
memory and the unit (`Backend.copy_ms`: 0 for CPU units, which share the
process's arrays). A unit's run may begin or end only where every crossing
tensor is of a dtype its backend can bind (`Backend.can_bind`: a TensorRT
engine takes no int64 index tensor).

The global pass costed each group at its fastest unit and ignored these
changes, a lower bound; the program's prediction is recomputed here from the
unit stages and the transfers between boards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgec.backends.registry import backend_for
from edgec.errors import EdgecError
from edgec.ir import Prediction, Program, Stage
from edgec.costmodel.energy import ActiveStage, plan_energy_mj
from edgec.costmodel.memory import stage_memory_bytes
from edgec.costmodel.transfer import transfer_ms
from edgec.liveness import hand_offs
from edgec.passes.partition.build import GroupGraph, group_graph
from edgec.passes.partition.placed import predict_placed
from edgec.passes.partition.workers import STAGE_CALL_MS
from edgec.pipeline import PassResult



@dataclass(frozen=True)
class Run:
    start: int
    end: int
    unit: int


def split_segment(ms: np.ndarray, switch_ms: np.ndarray) -> tuple[float, list[Run]]:
    """The least total time to run items 0..m-1 in order, each on one unit, and the runs that reach it.

    `ms[i, u]`: time of item i on unit u (inf where u cannot run it).
    `switch_ms[p, a, b]`: cost of changing from unit a to unit b between items p-1 and p (p = 1..m-1;
    row 0 is unused). Ties go to fewer runs. Raises ValueError if some item no unit can run.
    """
    m, nu = ms.shape
    if m == 0:
        return 0.0, []
    blocked = np.isinf(ms).all(axis=1)
    if blocked.any():
        raise ValueError(f"item {int(np.argmax(blocked))} cannot run on any unit")
    best = np.full((m, nu), np.inf)  # best[i, u]: least time of items 0..i with item i on unit u
    runs = np.zeros((m, nu), dtype=np.int64)  # runs in that solution, to break ties
    came = np.zeros((m, nu), dtype=np.int64)  # unit of item i-1 in that solution
    best[0] = ms[0]
    runs[0] = 1
    for i in range(1, m):
        for u in range(nu):
            if np.isinf(ms[i, u]):
                continue
            cand = best[i - 1] + np.where(np.arange(nu) == u, 0.0, switch_ms[i, :, u])
            cand_runs = runs[i - 1] + (np.arange(nu) != u)
            order = np.lexsort((cand_runs, cand))
            a = int(order[0])
            best[i, u] = cand[a] + ms[i, u]
            runs[i, u] = cand_runs[a]
            came[i, u] = a
    last = int(np.lexsort((runs[m - 1], best[m - 1]))[0])
    units = [last]
    for i in range(m - 1, 0, -1):
        units.append(int(came[i, units[-1]]))
    units.reverse()
    out: list[Run] = []
    for i, u in enumerate(units):
        if out and out[-1].unit == u:
            out[-1] = Run(out[-1].start, i + 1, u)
        else:
            out.append(Run(i, i + 1, u))
    return float(best[m - 1, last]), out


@dataclass(frozen=True)
class LocalPartition:
    name: ClassVar[str] = "local-partition"
    requires: ClassVar[frozenset[str]] = frozenset({"segments", "costs", "unsupported"})
    provides: ClassVar[frozenset[str]] = frozenset({"stages", "prediction"})

    def run(self, program: Program) -> PassResult:
        cluster = program.cluster
        if cluster is None or not program.segments:
            raise EdgecError("local-partition runs after the global partition pass")
        if all(board.unit is not None for board in program.segments):
            return self._keep_units(program)
        gg = group_graph(program)
        position = {g: i for i, g in enumerate(gg.order)}
        board_of = {g: k for k, board in enumerate(program.segments) for g in board.groups}
        stages: list[Stage] = []
        for k, board in enumerate(program.segments):
            device = cluster.devices[board.device]
            units = list(device.units.values())
            backends = [backend_for(device, u) for u in units]
            groups = sorted(board.groups, key=position.__getitem__)
            ms = np.array([[program.group_ms(g, f"{device.name}.{u.name}") for u in units] for g in groups])
            blocked = np.flatnonzero(np.isinf(ms).all(axis=1))
            if blocked.size:
                group = groups[int(blocked[0])]
                raise EdgecError(f"device '{device.name}' got fusion group '{group}', which none of its units "
                                 f"can run: {program.unsupported.get(group)}")
            nbytes, crossing = _boundaries(gg, groups, k, board_of)
            # bindable[p, u]: unit u's run may begin or end at position p
            bindable = np.array([[all(b.can_bind(dt) for dt in crossing[p]) for b in backends]
                                 for p in range(len(groups) + 1)])
            ms[0, ~bindable[0]] = np.inf
            ms[-1, ~bindable[-1]] = np.inf
            switch = np.zeros((len(groups), len(units), len(units)))
            for p in range(1, len(groups)):
                copy = np.array([b.copy_ms(int(nbytes[p])) if bindable[p, u] else np.inf
                                 for u, b in enumerate(backends)])
                switch[p] = STAGE_CALL_MS + copy[:, None] + copy[None, :]
            try:
                _, runs = split_segment(ms, switch)
            except ValueError:
                raise EdgecError(f"device '{device.name}': some of its groups run on one of its units only, and "
                                 f"that unit cannot take the tensors at their edges ("
                                 f"{'; '.join(f'{b.unit.name} binds {sorted(b.bindable_dtypes)}' for b in backends if b.bindable_dtypes is not None)}); "
                                 f"give the cluster a device whose units run them") from None
            for j, r in enumerate(runs):
                unit = units[r.unit]
                own = groups[r.start:r.end]
                entry = switch[r.start, runs[j - 1].unit, r.unit] if j > 0 else 0.0
                stages.append(Stage(
                    "", device.name, unit.name, own,
                    predicted_ms=float(ms[r.start:r.end, r.unit].sum() + entry),
                    memory_bytes=stage_memory_bytes(program.nodes_of(own), program.output_names()), backend=unit.backend,
                    variant=backends[r.unit].default_variant))
        for k, stage in enumerate(stages):
            stage.name = f"s{k}"
        program.stages = stages
        program.prediction = board_prediction(program)
        return PassResult(program, changed=True)


    def _keep_units(self, program: Program) -> PassResult:
        """Segments whose units the joint search chose: one stage each, predicted with the units as
        concurrent workers (edgec.passes.partition.placed)."""
        cluster = program.cluster
        assert cluster is not None
        stages = []
        for k, seg in enumerate(program.segments):
            device = cluster.devices[seg.device]
            unit = device.units[seg.unit]  # type: ignore[index]
            stages.append(Stage(f"s{k}", seg.device, unit.name, list(seg.groups), seg.predicted_ms,
                                stage_memory_bytes(program.nodes_of(seg.groups), program.output_names()),
                                unit.backend, backend_for(device, unit).default_variant, weight=seg.weight,
                                replicas=[dataclasses.replace(r) for r in seg.replicas]))
        program.stages = stages
        program.prediction = predict_placed(program)
        return PassResult(program, changed=True)


def _boundaries(gg: GroupGraph, groups: list[str], board: int,
                board_of: dict[str, int]) -> tuple[np.ndarray, list[set[str]]]:
    """Per position p = 0..m of a board's m groups: bytes that would cross a sub-model boundary there,
    and the dtypes (numpy names) of those tensors.

    A tensor crosses p if made before p (here, or received) and read at or after p here, or made here
    before p and read by a later board or the sink. Tensors only relayed past the board stay in the
    runtime's memory and cross no sub-model boundary.
    """
    m = len(groups)
    index = {g: i for i, g in enumerate(groups)}
    nbytes = np.zeros(m + 1)
    crossing: list[set[str]] = [set() for _ in range(m + 1)]
    for use in gg.tensors.values():
        producer = use.producer
        here = sorted(index[c] for c in use.consumers if c in index)
        later = use.is_output or any(board_of[c] > board for c in use.consumers)
        if producer in index:
            first, last = index[producer] + 1, (m if later else max(here, default=index[producer]))
        elif producer is None or board_of[producer] < board:
            if not here:
                continue
            first, last = 0, here[-1]
        else:
            continue
        nbytes[first:last + 1] += use.nbytes
        for p in range(first, last + 1):
            crossing[p].add(use.dtype)
    return nbytes, crossing


def board_prediction(program: Program) -> Prediction:
    """Latency and bottleneck of the placed program: per board the sum of its unit stages, and the
    transfers between boards (source to the first, board to board, the last to the sink); and its
    energy per frame (edgec.costmodel.energy)."""
    cluster = program.cluster
    assert cluster is not None
    boards: list[tuple[str, float]] = []
    for stage in program.stages:
        if boards and boards[-1][0] == stage.device:
            boards[-1] = (stage.device, boards[-1][1] + stage.predicted_ms)
        else:
            boards.append((stage.device, stage.predicted_ms))
    chain = [cluster.source] + [s.device for s in program.stages] + [cluster.sink]
    transfers = [transfer_ms(cluster, nbytes, chain[k], chain[k + 1]) for k, _, nbytes in hand_offs(program)]
    latency = sum(ms for _, ms in boards) + sum(transfers)
    bottleneck = max([ms for _, ms in boards] + transfers)
    fps = 1000.0 / bottleneck if bottleneck > 0 else float("inf")
    network = float(sum(nbytes for _, _, nbytes in hand_offs(program)))
    energy = plan_energy_mj(cluster, [ActiveStage(s.device, s.unit, s.predicted_ms) for s in program.stages],
                            bottleneck, network)
    return Prediction(latency, bottleneck, fps, energy)
