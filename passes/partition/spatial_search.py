"""The search space of spatial splits: which runs of a placed program can be sliced, over which units,
and what each candidate costs.

A candidate slices the run [a, b) of the group order (a run of row-local groups between two cuts that
carry one 4-D feature map each) over a set of units, with a prefix [0, a) on one unit before it and the
merge and the suffix [b, n) on one unit after it. Bands are sized so that every unit finishes together,
counting its compute and its link to the gather unit (closed form, `_shares`); candidates are ranked by
an estimate that charges each run the halo overhead of even bands, and the best are then costed band by
band from each group's exact share of rows (`SearchSpace.exact`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from edgec.costmodel.energy import ActiveStage, plan_energy_mj
from edgec.costmodel.transfer import transfer_ms
from edgec.costmodel.work import node_flops
from edgec.ir import Prediction, Program, Stage, tensor_nbytes
from edgec.liveness import live_at_boundaries
from edgec.passes.partition.build import group_graph
from edgec.passes.partition.halo import needed_rows, refusal, split_rows
from edgec.passes.partition.local_partition import STAGE_CALL_MS

EXACT_CANDIDATES = 12  # candidates ranked by the estimate that are then costed band by band


@dataclass(frozen=True)
class Candidate:
    """One spatial plan: run [a, b) of the group order sliced over `units` (ids), prefix on `head`,
    merge and suffix on `tail` (unit ids; head None when a == 0), bands of the exit's rows."""

    a: int
    b: int
    units: tuple[str, ...]
    head: str | None
    tail: str
    bands: tuple[tuple[int, int], ...]
    latency_ms: float
    slice_ms: tuple[float, ...]
    energy_mj: float | None = None
    bottleneck_ms: float = 0.0


class SearchSpace:
    """The runs of a placed program that can be sliced, and the costs to choose among them."""

    def __init__(self, program: Program, after: Stage | None = None) -> None:
        """`after`: a later round on a plan that has slices already; runs are then sought inside its last
        stage (the one that merges the slices before), which keeps what comes before them."""
        self.program = program
        cluster = program.cluster
        assert cluster is not None
        self.cluster = cluster
        gg = group_graph(program)
        self.order = gg.order
        self.members = gg.members
        n = len(self.order)
        position = {g: i for i, g in enumerate(self.order)}
        self.lives = live_at_boundaries(gg.tensors, position, n)
        tensors = program.graph.tensors()
        self.tensors = tensors
        self.units = [f"{d.name}.{u.name}" for d, u in cluster.units()]
        self.refusals: dict[str, str] = {}
        local = []
        for g in self.order:
            why = next((f"node '{nd.name}': {r}" for nd in gg.members[g] if (r := refusal(nd)) is not None), None)
            if why is not None:
                self.refusals[g] = why
            local.append(why is None)
        cuts = [p for p in range(n + 1) if len(self.lives[p]) == 1 and _is_4d(tensors[self.lives[p][0]])]
        self.runs: list[tuple[int, int]] = []
        for i, a in enumerate(cuts):
            for b in cuts[i + 1:]:
                if not all(local[a:b]):
                    break
                self.runs.append((a, b))
        self.after = after
        if after is not None:
            position = {g: i for i, g in enumerate(self.order)}
            first = position[after.groups[0]]
            own = {position[g] for g in after.groups}
            self.runs = [(a, b) for a, b in self.runs if a > first and all(i in own for i in range(a, b))]
            self.base_latency = float(program.prediction.latency_ms)
            self.base_energy = program.prediction.energy_mj
        self.ms = {g: {u: program.group_ms(g, u) for u in self.units} for g in self.order}
        self._finite_cum: dict[str, np.ndarray] = {}
        self._inf_cum: dict[str, np.ndarray] = {}
        for u in self.units:
            col = np.array([self.ms[g][u] for g in self.order], dtype=np.float64)
            inf = ~np.isfinite(col)
            self._finite_cum[u] = np.concatenate([[0.0], np.cumsum(np.where(inf, 0.0, col))])
            self._inf_cum[u] = np.concatenate([[0], np.cumsum(inf)])
        self.source_bytes = sum(tensor_nbytes(t) for t in program.graph.inputs)
        self.output_bytes = sum(tensor_nbytes(t) for t in program.graph.outputs)
        self._device_of = {u: u.split(".", 1)[0] for u in self.units}
        self._cut_bytes: dict[int, int] = {}
        self._widest = {b: min(a for a, b_ in self.runs if b_ == b) for _, b in self.runs}
        self._index = {id(nd): i for i, nd in enumerate(program.graph.nodes)}
        self._group_of = program.group_of()
        self._flops: dict[str, float] = {}
        self._fractions: dict[tuple[int, tuple], list[dict[str, float]]] = {}
        self._overhead: dict[tuple[int, int, int], float] = {}
        self._transfers: dict[tuple[int, str, str], float] = {}

    def why_none(self) -> str:
        if self.refusals:
            g, why = next(iter(self.refusals.items()))
            return f"first refusal: {why}"
        return "no cut of the model carries a single 4-D feature map"

    def run_nodes(self, a: int, b: int) -> list[gs.Node]:
        """The nodes of groups [a, b) in graph order."""
        return sorted((nd for g in self.order[a:b] for nd in self.members[g]), key=lambda nd: self._index[id(nd)])

    def exit_height(self, b: int) -> int:
        return int(self.tensors[self.lives[b][0]].shape[2])

    # -- costs -------------------------------------------------------------------------------------

    def _node_flops(self, node: gs.Node) -> float:
        if node.name not in self._flops:
            self._flops[node.name] = max(node_flops(node), 1.0)
        return self._flops[node.name]

    def group_fractions(self, a: int, b: int, bands: Sequence[tuple[int, int]]) -> list[dict[str, float]]:
        """Per band, per group of the run: the share of the group's unsplit work the band computes
        (halo rows included), weighted by each node's FLOPs. The rows a band needs of a tensor depend
        only on where the run ends, so one pass over the widest run ending at b serves every start."""
        key = (b, tuple(tuple(x) for x in bands))
        if key not in self._fractions:
            nodes = self.run_nodes(self._widest[b], b)
            exit_ = self.lives[b][0]
            out = []
            for band in bands:
                need = needed_rows(nodes, {exit_: tuple(band)})
                work: dict[str, list[float]] = {}
                for nd in nodes:
                    t = nd.outputs[0]
                    rows = need.get(t.name)
                    frac = 0.0 if rows is None else (rows[1] - rows[0]) / int(t.shape[2])
                    w = self._node_flops(nd)
                    acc = work.setdefault(self._group_of[nd.name], [0.0, 0.0])
                    acc[0] += w * frac
                    acc[1] += w
                out.append({g: x / total for g, (x, total) in work.items()})
            self._fractions[key] = out
        wanted = set(self.order[a:b])
        return [{g: f for g, f in fr.items() if g in wanted} for fr in self._fractions[key]]

    def overhead(self, a: int, b: int, k: int) -> float:
        """Work of k even bands of run [a, b) over its unsplit work: what the halos cost."""
        key = (a, b, k)
        if key not in self._overhead:
            bands = split_rows(self.exit_height(b), [1] * k)
            fr = self.group_fractions(a, b, bands)
            flops = {g: max(self.program.costs[g].flops, 1.0) for g in self.order[a:b]}
            self._overhead[key] = sum(f[g] * flops[g] for f in fr for g in flops) / sum(flops.values())
        return self._overhead[key]

    def seq_ms(self, a: int, b: int, unit: str) -> float:
        """ms of groups [a, b) one after another on `unit` (inf if it cannot run one of them)."""
        if self._inf_cum[unit][b] - self._inf_cum[unit][a] > 0:
            return float("inf")
        return float(self._finite_cum[unit][b] - self._finite_cum[unit][a])

    def link(self, nbytes: int, src: str, dst: str) -> tuple[float, float]:
        """(fixed ms, ms per share) of sending a share of `nbytes` from src to dst."""
        if src == dst or nbytes <= 0:
            return 0.0, 0.0
        fixed = self.transfer(1, src, dst)
        return fixed, self.transfer(nbytes, src, dst) - fixed

    def transfer(self, nbytes: int, src: str, dst: str) -> float:
        key = (nbytes, src, dst)
        if key not in self._transfers:
            self._transfers[key] = transfer_ms(self.cluster, nbytes, src, dst)
        return self._transfers[key]

    def device(self, unit: str) -> str:
        return self._device_of[unit]

    def tensor_bytes(self, p: int) -> int:
        if p not in self._cut_bytes:
            self._cut_bytes[p] = int(sum(tensor_nbytes(self.tensors[t]) for t in self.lives[p]))
        return self._cut_bytes[p]

    def latency(self, a: int, b: int, units: Sequence[str], head: str | None, tail: str,
                slice_ms: Sequence[float], band_bytes: Sequence[int]) -> float:
        """Predicted ms of one frame through the spatial plan (see the module docstring)."""
        cl = self.cluster
        t = 0.0
        here = cl.source
        if self.after is not None:  # the plan so far, up to position a in its last stage
            t = self.base_latency - self.seq_ms(a, len(self.order), head) - self.transfer(
                self.output_bytes, self.device(head), cl.sink) + STAGE_CALL_MS
            here = self.device(head)
        elif head is not None:
            t += self.transfer(self.source_bytes, here, self.device(head)) + self.seq_ms(0, a, head) + STAGE_CALL_MS
            here = self.device(head)
        x_bytes = self.tensor_bytes(a)
        t += sum(self.transfer(x_bytes, here, d) for d in sorted({self.device(u) for u in units}) if d != here)
        gather = max(ms + STAGE_CALL_MS + self.transfer(nb, self.device(u), self.device(tail))
                     for u, ms, nb in zip(units, slice_ms, band_bytes))
        return (t + gather + self.seq_ms(b, len(self.order), tail) + STAGE_CALL_MS
                + self.transfer(self.output_bytes, self.device(tail), cl.sink))

    # -- search ------------------------------------------------------------------------------------

    def estimates(self) -> list[tuple[float, int, int, tuple[str, ...], tuple[float, ...], str | None, str]]:
        """Every (run, unit set, head, tail) with shares from the closed form, ranked by estimated ms."""
        out = []
        n = len(self.order)
        for a, b in self.runs:
            height = self.exit_height(b)
            y_bytes = self.tensor_bytes(b)
            able = [u for u in self.units if np.isfinite(self.seq_ms(a, b, u))]
            if self.after is not None:
                heads = [self.after.unit_id]
            else:
                heads = [None] if a == 0 else [min((u for u in self.units if np.isfinite(self.seq_ms(0, a, u))),
                                                   key=lambda u: self.seq_ms(0, a, u), default=None)]
            if heads == [None] and a > 0:
                continue
            tails = [u for u in self.units if np.isfinite(self.seq_ms(b, n, u))]
            tails = sorted(tails, key=lambda u: self.seq_ms(b, n, u))[:3]
            for k in range(2, min(len(able), height) + 1):
                ov = self.overhead(a, b, k)
                for subset in itertools.combinations(able, k):
                    for tail in tails:
                        shares = _shares([self.seq_ms(a, b, u) * ov for u in subset], [
                            self.link(y_bytes, self.device(u), self.device(tail)) for u in subset])
                        if shares is None:
                            continue
                        ms = [s * self.seq_ms(a, b, u) * ov for s, u in zip(shares, subset)]
                        lat = self.latency(a, b, subset, heads[0], tail, ms, [int(s * y_bytes) for s in shares])
                        out.append((lat, a, b, subset, tuple(shares), heads[0], tail))
        out.sort(key=lambda c: c[0])
        return out

    def exact(self, a: int, b: int, units: Sequence[str], shares: Sequence[float], head: str | None,
              tail: str) -> Candidate:
        """The candidate costed band by band: bands from the shares, each band's groups at their fraction."""
        bands = split_rows(self.exit_height(b), shares)
        fr = self.group_fractions(a, b, bands)
        slice_ms = tuple(float(sum(self.ms[g][u] * f[g] for g in self.order[a:b])) for u, f in zip(units, fr))
        y = self.tensors[self.lives[b][0]]
        row_bytes = tensor_nbytes(y) // int(y.shape[2])
        band_bytes = [row_bytes * (hi - lo) for lo, hi in bands]
        lat = self.latency(a, b, units, head, tail, slice_ms, band_bytes)
        energy, period = self.energy(a, b, units, head, tail, slice_ms, band_bytes)
        return Candidate(a, b, tuple(units), head, tail, tuple(bands), lat, slice_ms, energy, period)

    def ranked(self, objective: str = "latency", max_latency_ms: float | None = None) -> list[Candidate]:
        """The top estimates costed band by band, best first: by latency, or by energy (those within
        `max_latency_ms` first)."""
        ranked = self.estimates()
        exact = [self.exact(a, b, us, sh, head, tail) for _, a, b, us, sh, head, tail in ranked[:EXACT_CANDIDATES]]
        return sorted(exact, key=lambda c: rank(Prediction(c.latency_ms, c.bottleneck_ms, 0.0, c.energy_mj),
                                                 objective, max_latency_ms))

    def best(self, objective: str = "latency", max_latency_ms: float | None = None) -> Candidate | None:
        ranked = self.ranked(objective, max_latency_ms)
        return ranked[0] if ranked else None

    def energy(self, a: int, b: int, units: Sequence[str], head: str | None, tail: str,
               slice_ms: Sequence[float], band_bytes: Sequence[int]) -> tuple[float | None, float]:
        """(energy per frame in mJ, bottleneck ms) of a spatial plan (edgec.costmodel.energy)."""
        n = len(self.order)
        if self.after is not None:  # the plan so far, less its last stage's work from a on, plus the new steps
            added = [ActiveStage(*u.split(".", 1), ms=ms + STAGE_CALL_MS) for u, ms in zip(units, slice_ms)]
            added.append(ActiveStage(*tail.split(".", 1), ms=self.seq_ms(b, n, tail) + STAGE_CALL_MS))
            here = self.device(head)
            network = self.tensor_bytes(a) * len({self.device(u) for u in units} - {here})
            network += sum(nb for u, nb in zip(units, band_bytes) if self.device(u) != self.device(tail))
            plus = plan_energy_mj(self.cluster, added, 0.0, network)
            minus = plan_energy_mj(self.cluster, [ActiveStage(*head.split(".", 1), ms=self.seq_ms(a, n, head))], 0.0, 0)
            period = max([st.ms for st in added] + [float(self.program.prediction.bottleneck_ms)])
            if plus is None or minus is None or self.base_energy is None:
                return None, period
            return self.base_energy + plus - minus, period
        parts = [(u, ms) for u, ms in zip(units, slice_ms)] + [(tail, self.seq_ms(b, n, tail))]
        if head is not None:
            parts.append((head, self.seq_ms(0, a, head)))
        stages = [ActiveStage(*u.split(".", 1), ms=ms + STAGE_CALL_MS) for u, ms in parts]
        period = max(st.ms for st in stages)
        here = self.cluster.source if head is None else self.device(head)
        network = 0 if head is None or self.device(head) == self.cluster.source else self.source_bytes
        network += self.tensor_bytes(a) * len({self.device(u) for u in units} - {here})
        network += sum(nb for u, nb in zip(units, band_bytes) if self.device(u) != self.device(tail))
        if self.device(tail) != self.cluster.sink:
            network += sum(tensor_nbytes(t) for t in self.program.graph.outputs)
        return plan_energy_mj(self.cluster, stages, period, network), period


def rank(p: Prediction, objective: str, max_latency_ms: float | None) -> tuple:
    """Sort key of a prediction under the objective: within the latency limit first, then least energy
    (energy) or least latency; a plan with no energy figure ranks after those with one."""
    over = max_latency_ms is not None and p.latency_ms > max_latency_ms * (1 + 1e-9)
    if objective == "energy":
        return (over, p.energy_mj is None, p.energy_mj or 0.0, p.latency_ms)
    return (over, p.latency_ms, p.bottleneck_ms)


def _is_4d(t: gs.Tensor) -> bool:
    return t.shape is not None and len(t.shape) == 4 and all(isinstance(d, int) and d > 0 for d in t.shape)


def _shares(compute: Sequence[float], links: Sequence[tuple[float, float]]) -> list[float] | None:
    """Shares of the rows that make every unit finish together: unit u takes A_u + s_u * B_u with
    A_u its link's fixed cost and B_u its compute plus link per share; None if some unit would get none."""
    per = [c + p for c, (_, p) in zip(compute, links)]
    if any(not math.isfinite(x) or x <= 0 for x in per):
        return None
    finish = (1 + sum(f / x for (f, _), x in zip(links, per))) / sum(1 / x for x in per)
    shares = [(finish - f) / x for (f, _), x in zip(links, per)]
    return None if any(x <= 0 for x in shares) else shares
