"""The `local-partition` pass: which compute unit of a board runs each group of the board's stage.

The global pass cuts the model into one contiguous segment per board. Inside a
board, the runtime runs the board's stages one after another in one process
(edgec.runtime.device), so the board's time per frame is the sum of its unit
stages plus the copies between them, and the best split is the one with the
least total time. `split_segment` finds it exactly by dynamic programming over
(position, unit): O(items x units^2), with a unit allowed to appear more than
once (GPU, CPU for the nodes TensorRT cannot take, GPU again).

Costs of a change of unit at a position: a per-stage call overhead, plus, where
a GPU is on either side, copying the bytes live at that position through the
board's memory (CPU units of one board share the process's arrays).

The global pass costed each group at its fastest unit and ignored these
changes, a lower bound; the program's prediction is recomputed here from the
unit stages and the transfers between boards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgec.backends.tensorrt import NAME as TENSORRT
from edgec.errors import EdgecError
from edgec.ir import Prediction, Program, Stage, tensor_nbytes
from edgec.passes.cost import stage_memory_bytes
from edgec.passes.partition.build import group_graph
from edgec.passes.partition.global_partition import unit_ms
from edgec.pipeline import PassResult

STAGE_CALL_MS = 0.05  # one more session run per frame: ONNX Runtime's fixed cost of a call, order of 50 us on ARM
GPU_COPY_GBPS = 10.0  # host <-> GPU copies through the Nano's shared LPDDR4 (25.6 GB/s peak; a copy reads and writes)


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

    def run(self, program: Program) -> PassResult:
        cluster = program.cluster
        if cluster is None or not program.stages:
            raise EdgecError("local-partition runs after the global partition pass")
        gg = group_graph(program)
        position = {g: i for i, g in enumerate(gg.order)}
        live = _live_bytes(gg)
        stages: list[Stage] = []
        for board in program.stages:
            device = cluster.devices[board.device]
            units = list(device.units.values())
            groups = sorted(board.groups, key=position.__getitem__)
            ms = np.array([[unit_ms(program, g, device, u) for u in units] for g in groups])
            switch = np.zeros((len(groups), len(units), len(units)))
            for p in range(1, len(groups)):
                for a, ua in enumerate(units):
                    for b, ub in enumerate(units):
                        gpu = TENSORRT in (ua.backend, ub.backend)
                        copy_ms = live[position[groups[p]]] / (GPU_COPY_GBPS * 1e6) if gpu else 0.0
                        switch[p, a, b] = STAGE_CALL_MS + copy_ms
            try:
                _, runs = split_segment(ms, switch)
            except ValueError as exc:
                i = int(str(exc).split()[1])
                raise EdgecError(f"device '{device.name}' got fusion group '{groups[i]}', which none of its units "
                                 f"can run: {program.unsupported.get(groups[i])}") from None
            for r in runs:
                unit = units[r.unit]
                own = groups[r.start:r.end]
                entry = switch[r.start].max() if r.start > 0 else 0.0
                stages.append(Stage(
                    "", device.name, unit.name, own,
                    predicted_ms=float(ms[r.start:r.end, r.unit].sum() + entry),
                    memory_bytes=stage_memory_bytes(program, own), backend=unit.backend,
                    variant="fp16" if unit.backend == TENSORRT else board.variant))
        for k, stage in enumerate(stages):
            stage.name = f"s{k}"
        program.stages = stages
        program.prediction = board_prediction(program)
        return PassResult(program, changed=True)


def _live_bytes(gg) -> list[int]:
    """Bytes live before each position of the group order (produced earlier, read at or after it)."""
    index = {g: i for i, g in enumerate(gg.order)}
    n = len(gg.order)
    diff = np.zeros(n + 2, dtype=np.int64)
    for producer, consumers, is_out, nbytes in gg.tensors.values():
        last = max([index[c] for c in consumers] + ([n] if is_out else []), default=None)
        if last is None:
            continue
        first = index[producer] + 1 if producer is not None else 0
        diff[first] += nbytes
        diff[last + 1] -= nbytes
    return [int(x) for x in np.cumsum(diff)[: n + 1]]


def board_prediction(program: Program) -> Prediction:
    """Latency and bottleneck of the placed program: per board the sum of its unit stages, and the
    transfers between boards (source to the first, board to board, the last to the sink)."""
    cluster = program.cluster
    assert cluster is not None
    tensors = program.graph.tensors()
    lives = program.live_across_stages()
    boards: list[tuple[str, float]] = []
    for stage in program.stages:
        if boards and boards[-1][0] == stage.device:
            boards[-1] = (stage.device, boards[-1][1] + stage.predicted_ms)
        else:
            boards.append((stage.device, stage.predicted_ms))
    chain = [cluster.source] + [s.device for s in program.stages] + [cluster.sink]
    transfers = []
    for k, names in enumerate(lives):
        if chain[k] != chain[k + 1]:
            nbytes = sum(tensor_nbytes(tensors[t]) for t in names)
            transfers.append(cluster.transfer_ms(nbytes, chain[k], chain[k + 1]))
    latency = sum(ms for _, ms in boards) + sum(transfers)
    bottleneck = max([ms for _, ms in boards] + transfers)
    fps = 1000.0 / bottleneck if bottleneck > 0 else float("inf")
    return Prediction(latency, bottleneck, fps)
