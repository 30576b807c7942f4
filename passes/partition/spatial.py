"""The `spatial-partition` pass: slice one frame's feature maps across compute units.

A pipeline never shortens one frame. Slicing does (CoEdge, DeepThings, MoDNN):
a run of row-local fusion groups whose only input and only output are one 4-D
feature map each is computed by several units at once, each on a band of
rows with the halo its windows need (edgec.passes.partition.halo), and the
bands are merged by a Concat in the next stage's sub-model
(edgec.passes.partition.slicing). The plan is

    prefix [0, a) on one unit -> the run's input to every slice unit
    -> the bands at once -> merge + suffix [b, n) on one unit

and edgec.passes.partition.spatial_search weighs every run, unit set and
gather unit, halo work and scatter/gather transfers included. The best
candidates are materialised on copies of the graph and costed by the cost
pass's own model; the best of those is compared with the plan the partition
passes made: under `--objective latency` (or `energy`, within
`--max-latency-ms`) it replaces that plan when it predicts less;
`--strategy spatial` takes it whatever it predicts. Its stages carry
`step`, `parallel: "slice"` and `slice` (rows owned, rows of the run's
input read, halo rows, FLOPs and redundant FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import onnx_graphsurgeon as gs

from edgec.backends.registry import backend_for
from edgec.costmodel.memory import stage_memory_bytes
from edgec.errors import EdgecError
from edgec.ir import DeviceSegment, FusionGroup, Prediction, Program, Stage, tensor_nbytes
from edgec.passes.cost import Cost
from edgec.passes.partition.capability import Capability
from edgec.passes.partition.local_partition import STAGE_CALL_MS
from edgec.passes.partition.slicing import find_run, slice_run
from edgec.passes.partition.spatial_search import Candidate, SearchSpace, rank
from edgec.passes.partition.spatial_steps import best_chain, find_step
from edgec.pipeline import PassResult

TRIALS = 3  # of the best candidates, those materialised and costed by the cost pass before one is chosen
ROUNDS = 3  # steps of slices one after another at most (each gathers, the next scatters again)


@dataclass(frozen=True)
class SpatialPartition:
    objective: str = "throughput"
    force: bool = False  # --strategy spatial: slice even where the pipeline plan predicts less
    max_latency_ms: float | None = None  # --objective energy: slices must also keep to this
    consider: bool = True  # weigh slices against the plan made (the default strategy; baselines stay as they are)
    name: ClassVar[str] = "spatial-partition"
    requires: ClassVar[frozenset[str]] = frozenset({"cluster", "groups", "costs", "unsupported", "stages", "prediction"})
    # it rewrites the graph, segments, stages and prediction others provide: each fact keeps one provider
    provides: ClassVar[frozenset[str]] = frozenset()

    def run(self, program: Program) -> PassResult:
        if not self.force and (not self.consider or self.objective not in ("latency", "energy")):
            return PassResult(program, changed=False)
        cluster = program.cluster
        assert cluster is not None
        units = [f"{d.name}.{u.name}" for d, u in cluster.units()]
        if self.force and len(units) < 2:
            raise EdgecError(f"--strategy spatial slices a frame across two or more compute units, and cluster "
                             f"'{cluster.name}' has one ({units[0]}); give the cluster more units or choose another "
                             f"--strategy")
        space = SearchSpace(program)
        if self.force and not space.runs:
            raise EdgecError(f"--strategy spatial: the model has no run of spatially local layers (Conv, pooling, "
                             f"element-wise) between two single 4-D feature maps to slice ({space.why_none()}); "
                             f"choose another --strategy")
        objective = "energy" if self.objective == "energy" else "latency"
        best = self._round(program, space, objective)
        if best is None:
            if self.force:
                raise EdgecError("--strategy spatial: no set of two or more units can run a spatially local run of "
                                 "this model; choose another --strategy")
            return PassResult(program, changed=False)
        if not self.force and not self._better(best, program, objective):
            return PassResult(program, changed=False)
        for _ in range(ROUNDS - 1):  # slice again after the merge while that predicts less
            if objective != "latency":
                break
            later = self._round(best, SearchSpace(best, after=best.stages[-1]), objective)
            if later is None or not self._better(later, best, objective):
                break
            best = later
        if objective == "latency":  # the chain of steps with the least latency, where it beats the greedy rounds
            chained = _chain(program, space)
            if chained is not None and self._better(chained, best, objective):
                best = chained
        return PassResult(best, changed=True)

    def _round(self, program: Program, space: SearchSpace, objective: str) -> Program | None:
        """The best of the top candidates, each materialised on a copy of the program; None if none."""
        ranked = space.ranked(objective, self.max_latency_ms)
        trials = []
        for c in ranked[:TRIALS]:  # each costed by the cost pass's own model
            trial = replace(program, graph=copy_graph(program.graph))
            materialise(trial, space, c)
            trials.append(trial)
        return min(trials, key=lambda t: rank(t.prediction, objective, self.max_latency_ms), default=None)

    def _better(self, new: Program, old: Program, objective: str) -> bool:
        return rank(new.prediction, objective, self.max_latency_ms) < rank(old.prediction, objective,
                                                                            self.max_latency_ms)


def _chain(program: Program, space: SearchSpace) -> Program | None:
    """The program with the steps of slices of :func:`best_chain` materialised one after another, each
    costed band by band; None if there is no chain."""
    found = best_chain(space)
    if found is None:
        return None
    trial = replace(program, graph=copy_graph(program.graph))
    here = space
    for k, step in enumerate(found[1]):
        if k > 0:
            here = SearchSpace(trial, after=trial.stages[-1])
        run = find_step(here, step)
        if run is None:  # a run the first search offered is always inside the stage that merges the one before
            raise AssertionError(f"no run from {step.entry} to {step.exit}")
        materialise(trial, here, here.exact(*run, step.units, step.shares, step.head, step.tail))
    return trial


def copy_graph(graph: gs.Graph) -> gs.Graph:
    """A copy of the graph's nodes and tensors sharing the weights' values (graphsurgeon's copy, with each
    constant's export dtype as it was: the copy would pin it, and codegen tells large weights by it)."""
    copy = graph.copy()
    original = graph.tensors()
    for name, t in copy.tensors().items():
        if isinstance(t, gs.Constant):
            t._export_dtype = original[name]._export_dtype  # noqa: SLF001
    return copy


# -- materialising the choice -------------------------------------------------------------------------

def materialise(program: Program, space: SearchSpace, c: Candidate) -> None:
    """Rewrite the graph for candidate `c`, cost the new groups, and write the stages and prediction."""
    cluster = space.cluster
    order = space.order
    by_name = {nd.name: nd for nd in program.graph.nodes}  # the program may be a copy of the searched one
    nodes = [by_name[nd.name] for nd in space.run_nodes(c.a, c.b)]
    run = find_run(program.graph, nodes)
    if isinstance(run, str):  # the search only offers single-entry, single-exit runs
        raise AssertionError(run)
    rewrite = slice_run(program.graph, run, c.bands, program.opset)
    groups = {g: v for g, v in program.groups.items() if g not in set(order[c.a:c.b])}
    branch_groups = []
    for k, branch in enumerate(rewrite.branches):
        name = f"{rewrite.exit}__s{k}"
        groups[name] = FusionGroup(name, [nd.name for nd in branch], "spatial-slice")
        branch_groups.append(name)
    merge = f"{rewrite.exit}__merge"
    groups[merge] = FusionGroup(merge, [rewrite.merge.name], "spatial-merge")
    program.groups = groups
    Cost().run(program)  # the new groups costed by the same model as every other
    Capability().run(program)
    stages: list[Stage] = []

    def stage(unit: str, own: list[str], **extra) -> Stage:
        device, unit_name = unit.split(".", 1)
        dev = cluster.devices[device]
        ms = sum(program.group_ms(g, unit) for g in own) + STAGE_CALL_MS
        return Stage("", device, unit_name, own, predicted_ms=float(ms),
                     memory_bytes=stage_memory_bytes(program.nodes_of(own), program.output_names()),
                     backend=dev.units[unit_name].backend, variant=backend_for(dev, dev.units[unit_name]).default_variant,
                     **extra)

    if space.after is not None:  # a later round: the plan so far, its last stage cut where the run begins
        position = {g: i for i, g in enumerate(order)}
        last = program.stages[-1]
        stages.extend(program.stages[:-1])
        stages.append(stage(c.head, [g for g in last.groups if position[g] < c.a], step=last.step))
    elif c.head is not None:
        stages.append(stage(c.head, list(order[:c.a]), step=0))
    step = stages[-1].step + 1 if stages else 0
    sliced: list[Stage] = []
    for k, (unit, g) in enumerate(zip(c.units, branch_groups)):
        rows = rewrite.rows[k]
        info = {"tensor": rewrite.exit, "axis": 2, "rows": list(rows.out), "of": space.exit_height(c.b),
                "input": rewrite.entry, "input_rows": list(rows.reads), "halo_rows": list(rows.halo),
                "flops": round(rows.flops),
                "redundant_flops": round(rows.redundant_flops)}
        sliced.append(stage(unit, [g], step=step, parallel="slice", slice=info))
    stages.extend(sliced)
    stages.append(stage(c.tail, [merge] + list(order[c.b:]), step=step + 1))
    for k, st in enumerate(stages):
        st.name = f"s{k}"
    program.graph.nodes = [nd for st in stages for nd in program.nodes_of(st.groups)]
    program.stages = stages
    program.segments = [DeviceSegment(f"seg{k}", st.device, list(st.groups), st.predicted_ms, st.memory_bytes)
                        for k, st in enumerate(stages)]
    bands = [int(tensor_nbytes(nd.outputs[0])) for nd in (b[-1] for b in rewrite.branches)]
    slice_ms = [st.predicted_ms - STAGE_CALL_MS for st in sliced]
    latency = space.latency(c.a, c.b, c.units, c.head, c.tail, slice_ms, bands) + program.group_ms(merge, c.tail)
    bottleneck = max(st.predicted_ms for st in stages)
    energy, _ = space.energy(c.a, c.b, c.units, c.head, c.tail, slice_ms, bands)
    program.prediction = Prediction(latency, bottleneck, 1000.0 / bottleneck if bottleneck > 0 else float("inf"),
                                    energy)
