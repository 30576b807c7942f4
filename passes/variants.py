"""The `variants` pass: each stage's precision (and the model itself), chosen with the plan against an accuracy floor.

Candidates per compute unit are its backend's `variants` (ONNX Runtime CPU:
fp32, int8 static QDQ; TensorRT: fp16, fp32); candidates for the whole model
are the original and each user variant (`--variant NAME=model.onnx`: same
inputs and outputs, e.g. a narrower network), which the plan runs in place of
the original. A stage's cost in a variant is its default cost with the
compute-bound groups (convolutions, matrix products) divided by the backend's
`variant_speed`, on the groups whose nodes the backend says the variant
speeds up (Backend.sped_up: for int8 the nodes it quantizes), and a stage
with too little such work to gain (Backend.worth) runs the unit's default.

Search. A configuration is (model, one variant per compute unit). For each,
the partition passes run again on the costs that configuration implies, so
the plan is the exact optimum for it (edgec.passes.partition.optimal); the
configurations are enumerated whole, so the space searched is
(1 + user variants) x prod_u |variants(u)| plans, 32 per model on the trio
(four ARM CPU units with fp32/int8, the Nano GPU with fp16/fp32). The search
is exact over that space: every configuration's optimal plan is predicted
and the plans are measured, not estimated, on the calibration frames.
It is not exact over choices outside it: two stages on one unit share that
unit's variant, and a plan that is not the speed optimum of its configuration
(a cut moved to keep fewer layers in int8) is not considered. Pruning: a
configuration whose plan uses no unit whose variant differs from another
configuration's already measured plan is the same plan (measured once; units
a plan leaves idle do not matter), and configurations dominated on (accuracy,
speed) by another are dropped from the front before the choice.

Choice. With `accuracy_floor`: the fastest plan (objective throughput or
latency) whose measured accuracy reaches it. With `min_fps`: the most
accurate plan predicted at `min_fps` or more (ties: the faster). With
calibration data and neither: the floor is the accuracy of the default plan
(each unit's default variant), so a variant is taken only where it costs
nothing measurable. A stream dealt to several replicas has the
dealing-weighted mean of their accuracies (edgec.accuracy.stream_accuracy
over `replica_paths`: each replica computes in its own unit's variant).
`--max-latency-ms` and `--min-fps` (with a floor) filter the configurations
first; `--objective energy` takes the least predicted energy per frame.

Without calibration data (`SAFE_RULE`) only variants numerically safe
without data are chosen: fp32 everywhere, and fp16 on a unit whose default
is fp16 where edgec.backends.fp16's check holds for the stage on a seeded
random frame (else the stage falls back to fp32); int8 and user variants,
whose error depends on the data, are never chosen, and the manifest says so.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import onnx

from edgec.accuracy import (Calibration, Measurer, StageRun, classes_of, load_calibration, model_inputs, read_cache,
                            stream_accuracy, write_cache)
from edgec.backends.base import COMPUTE_OPS
from edgec.backends.registry import backend_for
from edgec.errors import EdgecError
from edgec.ir import Program, Stage, node_reads
from edgec.liveness import stage_boundaries
from edgec.pipeline import PassResult

SAFE_RULE = ("no calibration data: each stage runs its unit's default variant where the backend deems it safe "
             "on a seeded random frame of the stage's inputs (fp16 on TensorRT: edgec.backends.fp16's check), "
             "else fp32; int8 and user variants need --calib")
# a stage with more weights than this keeps its default unchecked (`unchecked`): the check holds them in memory,
# and a compile's memory otherwise follows the graph, not the weights (edgec.weights)
SAFE_CHECK_MAX_BYTES = 128 << 20
_PRECISIONS = frozenset({"fp32", "fp16", "int8"})


@dataclass
class Config:
    """One point of the search: a model, a variant per compute unit, the plan they give, and how it scores."""

    model: str  # "" for the original, else the user variant's name
    variants: dict[str, str]  # unit id -> variant, over the units the plan uses
    program: Program
    accuracy: float = float("nan")
    sqnr_db: float = float("nan")

    @property
    def fps(self) -> float:
        assert self.program.prediction is not None
        return self.program.prediction.throughput_fps

    @property
    def latency_ms(self) -> float:
        assert self.program.prediction is not None
        return self.program.prediction.latency_ms

    def describe(self) -> str:
        parts = [f"{s.name}@{s.unit_id}:{s.variant}" for s in self.program.stages]
        return (f"{self.model}: " if self.model else "") + " ".join(parts)


@dataclass(frozen=True)
class Variants:
    objective: str = "throughput"
    calibration: str | None = None  # .npz path
    accuracy_floor: float | None = None
    min_fps: float | None = None
    max_latency_ms: float | None = None
    user_variants: tuple[tuple[str, str], ...] = ()  # (name, model path)
    cache_from: str | None = None  # a previous out/ whose accuracy cache is reused
    cache_to: str | None = None  # where this compile's cache is written
    strategy: str = "hierarchical"
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    name: ClassVar[str] = "variants"
    requires: ClassVar[frozenset[str]] = frozenset({"cluster", "graph", "groups", "costs", "unsupported", "stages",
                                                    "prediction"})
    provides: ClassVar[frozenset[str]] = frozenset({"variants"})  # and re-plans `stages` and `prediction`

    def __post_init__(self) -> None:
        if self.accuracy_floor is not None and not 0.0 < self.accuracy_floor <= 1.0:
            raise EdgecError(f"--accuracy-floor {self.accuracy_floor:g}: expected a fraction in (0, 1], e.g. 0.95")
        if self.min_fps is not None and self.min_fps <= 0:
            raise EdgecError(f"--min-fps {self.min_fps:g}: expected a positive rate")
        if self.calibration is None:
            needs = [o for o, v in (("--accuracy-floor", self.accuracy_floor),
                                    ("--variant", self.user_variants or None)) if v is not None]
            if needs:
                raise EdgecError(f"{needs[0]} needs measured accuracy: pass calibration frames with --calib data.npz")
        for name, _ in self.user_variants:
            check_variant_name(name)

    def run(self, program: Program) -> PassResult:
        if self.calibration is None:
            return PassResult(apply_safe_rule(program), changed=True)
        configs, measurer = self.search(program)
        chosen = self.choose(configs, default=configs[0])
        out = chosen.program
        _stage_accuracies(out, measurer[chosen.model], chosen)
        assert out.prediction is not None
        out.prediction.accuracy = chosen.accuracy
        front = pareto_front(configs)
        cal = measurer[""].calibration
        out.variant_choice = {
            "metric": cal.metric, "floor": self.effective_floor(configs[0]),
            "calibration": {"path": cal.path, "sha256": cal.sha256, "frames": cal.count},
            "rule": "measured", "plans": len(configs),
            "measured_now": sum(m.runs for m in measurer.values()),
            "source": None if not chosen.model else _source(dict(self.user_variants)[chosen.model], chosen.model),
            "reference_model": {"path": program.source_path, "sha256": program.source_sha256},
            "front": [{"plan": c.describe(), "throughput_fps": round(c.fps, 3), "latency_ms": round(c.latency_ms, 4),
                       "accuracy": c.accuracy} for c in front]}
        out.measurer = measurer[chosen.model]
        if self.cache_to is not None:
            merged: dict[str, dict[str, float]] = {}
            for m in measurer.values():
                merged.update(m.cache)
            write_cache(self.cache_to, merged)
        return PassResult(out, changed=True)

    # -- the search -----------------------------------------------------------------------------------

    def search(self, program: Program) -> tuple[list[Config], dict[str, Measurer]]:
        """Every configuration's plan, measured. configs[0] is the default (original model, default variants)."""
        fp32 = program.to_onnx(inline=True)
        cal = load_calibration(self.calibration, model_inputs(fp32), classes_of(fp32))  # type: ignore[arg-type]
        cache = read_cache(self.cache_from) if self.cache_from else {}
        measurers = {"": Measurer(fp32, cal, program.source_sha256, cache=dict(cache))}
        programs = {"": program}
        for name, path in self.user_variants:
            programs[name] = self._variant_program(program, name, path)
            vm = programs[name].to_onnx(inline=True)
            m = Measurer(vm, cal, programs[name].source_sha256, cache=dict(cache))
            m.compare_with(measurers[""])  # agreement is with the original model
            measurers[name] = m
        configs: list[Config] = []
        for model, prog in programs.items():
            seen: dict[tuple, Config] = {}
            for assignment in unit_assignments(prog):
                planned = replan(prog, assignment, self.objective, self.strategy)
                signature = tuple((tuple(s.groups), s.unit_id, s.variant,
                                   tuple((r.device, r.unit, r.variant, r.weight) for r in s.replicas))
                                  for s in planned.stages)
                if signature in seen:
                    continue
                config = Config(model, {s.unit_id: s.variant for s in planned.stages}, planned)
                scores = [(w, measurers[model].measure(runs))
                          for w, runs in replica_paths(planned, measurers[model].model)]
                config.accuracy = stream_accuracy([(w, sc.accuracy) for w, sc in scores])
                config.sqnr_db = min(sc.sqnr_db for _, sc in scores)
                seen[signature] = config
                configs.append(config)
        return configs, measurers

    def effective_floor(self, default: Config) -> float | None:
        if self.min_fps is not None and self.accuracy_floor is None:
            return None
        return self.accuracy_floor if self.accuracy_floor is not None else default.accuracy

    def choose(self, configs: Sequence[Config], default: Config) -> Config:
        if self.objective == "energy":
            def faster(c: Config) -> float:
                e = c.program.prediction.energy_mj if c.program.prediction is not None else None
                return -(e if e is not None else float("inf"))
        elif self.objective == "throughput":
            def faster(c: Config) -> float:
                return c.fps
        else:
            def faster(c: Config) -> float:
                return -c.latency_ms
        if self.max_latency_ms is not None:
            quick = [c for c in configs if c.latency_ms <= self.max_latency_ms * (1 + 1e-9)]
            if not quick:
                best = min(configs, key=lambda c: c.latency_ms)
                raise EdgecError(f"no plan meets --max-latency-ms {self.max_latency_ms:g}: the quickest plan takes "
                                 f"{best.latency_ms:.3g} ms ({best.describe()})")
            configs = quick
        if self.min_fps is not None:
            ok = [c for c in configs if c.fps >= self.min_fps]
            if not ok:
                best = max(configs, key=lambda c: c.fps)
                raise EdgecError(f"--min-fps {self.min_fps:g}: no plan reaches it; the fastest reachable is "
                                 f"{best.fps:.1f} fps ({best.describe()})")
            if self.accuracy_floor is None:
                return max(ok, key=lambda c: (c.accuracy, c.fps, -c.latency_ms))
            configs = ok
        floor = self.effective_floor(default)
        assert floor is not None
        ok = [c for c in configs if c.accuracy >= floor - 1e-12]
        if not ok:
            best = max(configs, key=lambda c: (c.accuracy, faster(c)))
            raise EdgecError(f"--accuracy-floor {floor:g}: no plan reaches it; the best reachable accuracy is "
                             f"{best.accuracy:.4f} ({best.describe()}); lower the floor")
        return max(ok, key=lambda c: (faster(c), c.accuracy, -c.latency_ms))

    def _variant_program(self, program: Program, name: str, path: str) -> Program:
        from edgec.passes.cost import Cost
        from edgec.passes.fusion import Fusion
        from edgec.passes.load import Load
        from edgec.passes.partition.capability import Capability
        from edgec.passes.shape_inference import ShapeInference
        from edgec.pipeline import PassManager

        check_same_interface(program, name, path)
        fresh = Program.empty()
        fresh.cluster = program.cluster
        passes = [Load(path), ShapeInference(input_shapes=dict(self.input_shapes)), Fusion(), Cost(), Capability()]
        try:
            return PassManager(passes).run(fresh)
        except EdgecError as exc:
            raise EdgecError(f"--variant {name}: {exc.message}", where=exc.where or path) from None


def check_variant_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name) or name in _PRECISIONS:
        raise EdgecError(f"--variant {name}=...: a variant name is letters, digits, '_', '.', '-' and not "
                         f"one of {', '.join(sorted(_PRECISIONS))}")


def _source(path: str, name: str) -> dict[str, str]:
    return {"name": name, "path": path, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def check_same_interface(program: Program, name: str, path: str) -> None:
    """A user variant must read and write the model's tensors: same names, dtypes and shapes."""
    try:
        model = onnx.load(path, load_external_data=False)
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, Exception) as exc:  # noqa: B014
        raise EdgecError(f"--variant {name}: cannot read it as ONNX: {str(exc).splitlines()[0] if str(exc) else exc}",
                         where=path) from None
    theirs = {v.name: v for v in list(model.graph.input) + list(model.graph.output)
              if v.name not in {t.name for t in model.graph.initializer}}
    ours = [(t, kind) for kind, ts in (("input", program.graph.inputs), ("output", program.graph.outputs)) for t in ts]
    for t, kind in ours:
        v = theirs.get(t.name)
        want = f"{np.dtype(t.dtype).name}{list(t.shape)}"
        if v is None:
            raise EdgecError(f"--variant {name}: the model's {kind} '{t.name}' ({want}) is not among the variant's; "
                             f"a variant must have the model's inputs and outputs", where=path)
        tt = v.type.tensor_type
        got = f"{np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name}{[d.dim_value for d in tt.shape.dim]}"
        if got != want:
            raise EdgecError(f"--variant {name}: {kind} '{t.name}' is {got}, the model's is {want}; "
                             f"a variant must have the model's inputs and outputs", where=path)
    extra = set(theirs) - {t.name for t, _ in ours}
    if extra:
        raise EdgecError(f"--variant {name}: it has {sorted(extra)[0]!r}, which the model has not; a variant must "
                         f"have the model's inputs and outputs", where=path)


def unit_assignments(program: Program) -> list[dict[str, str]]:
    """Every choice of one variant per compute unit (the default assignment first)."""
    assert program.cluster is not None
    units, options = [], []
    for device, unit in program.cluster.units():
        backend = backend_for(device, unit.name)
        units.append(f"{device.name}.{unit.name}")
        options.append(backend.variants)
    return [dict(zip(units, choice)) for choice in itertools.product(*options)]


def compute_groups(program: Program) -> set[str]:
    """Groups with a convolution or matrix product: the work a lower precision speeds up."""
    return {g.name for g in program.groups.values() if any(n.op in COMPUTE_OPS for n in program.nodes_of([g.name]))}


def group_macs(program: Program, counts: Callable[[Any], bool]) -> dict[str, float]:
    """Per group, the multiply-adds of its nodes that `counts` (e.g. Backend.sped_up for a variant); groups without
    such nodes are absent."""
    from edgec.costmodel.work import node_flops

    macs: dict[str, float] = {}
    group_of = program.group_of()
    for node in program.graph.nodes:
        if counts(node):
            g = group_of.get(node.name, node.name)
            macs[g] = macs.get(g, 0.0) + node_flops(node) / 2
    return macs


def replan(program: Program, assignment: dict[str, str], objective: str, strategy: str) -> Program:
    """The partition passes' plan for `program` with each unit running its variant of `assignment`; a stage
    whose variant does not pay on it then runs the unit's default (`keep_default_where_variant_loses`)."""
    from edgec.passes.partition.global_partition import GlobalPartition
    from edgec.passes.partition.local_partition import LocalPartition

    assert program.cluster is not None
    planned = copy.copy(program)
    planned.costs = copy.deepcopy(program.costs)
    factors, sped_up, by_kind = {}, {}, {}
    for device, unit in program.cluster.units():
        uid = f"{device.name}.{unit.name}"
        backend = backend_for(device, unit.name)
        factors[uid] = backend.variant_speed[backend.default_variant] / backend.variant_speed[assignment[uid]]
        kind = (backend.name, assignment[uid])  # units of one backend in one variant speed up the same groups
        if kind not in by_kind:
            by_kind[kind] = group_macs(program, lambda node, b=backend, v=assignment[uid]: b.sped_up(v, node))
        sped_up[uid] = by_kind[kind]
    for group, cost in planned.costs.items():
        cost.ms = {u: ms * factors[u] if group in sped_up[u] else ms for u, ms in cost.ms.items()}
    planned.segments, planned.stages, planned.prediction = [], [], None
    planned = GlobalPartition(objective=objective, strategy=strategy).run(planned).program
    planned = LocalPartition().run(planned).program
    for stage in planned.stages:
        stage.variant = assignment[stage.unit_id]
        for r in stage.replicas:
            r.variant = assignment[f"{r.device}.{r.unit}"]
    keep_default_where_variant_loses(planned, factors, sped_up)
    return planned


def keep_default_where_variant_loses(program: Program, factors: dict[str, float],
                                     sped_up: dict[str, dict[str, float]]) -> None:
    """Run its unit's default variant each stage (or replica) whose sped-up work is too little for its variant to
    pay (Backend.worth: an int8 stage whose quantize / dequantize cost more than int8 saves). Its groups, costed at
    the variant's speed (`factors`, `sped_up`: per unit id), are charged at the default's again and the plan
    re-predicted."""
    assert program.cluster is not None
    changed = False
    compute = group_macs(program, lambda node: node.op in COMPUTE_OPS)
    for stage in program.stages:
        for c in [stage, *stage.replicas]:
            uid = f"{c.device}.{c.unit}"
            backend = backend_for(program.cluster.devices[c.device], c.unit)
            if c.variant == backend.default_variant or backend.worth(
                    c.variant, sum(sped_up[uid].get(g, 0.0) for g in stage.groups),
                    sum(compute.get(g, 0.0) for g in stage.groups)):
                continue
            c.variant = backend.default_variant
            for g in stage.groups:
                if g in sped_up[uid]:
                    cost = program.costs[g]
                    c.predicted_ms += cost.ms[uid] * (1 / factors[uid] - 1)
                    cost.ms[uid] /= factors[uid]
            changed = True
    if changed:
        repredict(program)


def repredict(program: Program) -> None:
    """The plan's prediction again after its stage times or costs changed. A plan of slices keeps its step
    prediction (its stage times adjusted: a stated approximation)."""
    from edgec.passes.partition.local_partition import board_prediction
    from edgec.passes.partition.placed import predict_placed

    if any(s.parallel == "slice" for s in program.stages):
        return
    if any(s.replicas or s.weight is not None for s in program.stages):
        program.prediction = predict_placed(program)
    else:
        program.prediction = board_prediction(program)


def stage_models(program: Program, model: onnx.ModelProto) -> list[onnx.ModelProto]:
    """Each stage's fp32 sub-model, cut from `model` (the program exported with its weights)."""
    from edgec.passes.codegen import extract_submodel

    values = {v.name: v for v in model.graph.value_info}
    values.update({v.name: v for v in list(model.graph.input) + list(model.graph.output)})
    lives = stage_boundaries(program)
    reads = {n.name: node_reads(n) for n in program.graph.nodes}
    stage_of = {g: k for k, s in enumerate(program.stages) for g in s.groups}
    node_stage = {node: stage_of[group] for node, group in program.group_of().items()}
    order = {n.name: i for i, n in enumerate(program.graph.nodes)}
    nodes = sorted(model.graph.node, key=lambda n: order[n.name])
    return [extract_submodel(model, [n for n in nodes if node_stage[n.name] == k], reads, set(lives[k + 1]), values,
                             f"stage{k}") for k in range(len(program.stages))]


def stage_key(stage: Stage) -> str:
    return f"{stage.groups[0]}..{stage.groups[-1]}#{len(stage.groups)}"


def stage_runs(program: Program, model: onnx.ModelProto) -> list[StageRun]:
    """The stages as the measurer runs them, each emulated by its backend."""
    assert program.cluster is not None
    return [StageRun(sub, s.variant, stage_key(s), backend_for(program.cluster.devices[s.device], s.unit).emulate)
            for s, sub in zip(program.stages, stage_models(program, model))]


def replica_paths(program: Program, model: onnx.ModelProto) -> list[tuple[float, list[StageRun]]]:
    """The ways a frame can go through the plan, with the share of frames that go each way: a replicated stage
    deals each frame to one of its copies by weight, independently of other replicated stages, and a copy
    computes in its own unit's variant (a chain is one path of weight 1)."""
    assert program.cluster is not None
    runs = stage_runs(program, model)
    choices = []
    for stage, run in zip(program.stages, runs):
        copies = [(stage.weight if stage.replicas and stage.weight is not None else 1.0, run)]
        for r in stage.replicas:
            backend = backend_for(program.cluster.devices[r.device], r.unit)
            copies.append((r.weight, StageRun(run.model, r.variant, run.key, backend.emulate)))
        choices.append(copies)
    paths = []
    for combo in itertools.product(*choices):
        weight = float(np.prod([w for w, _ in combo]))
        paths.append((weight, [run for _, run in combo]))
    return paths


def _stage_accuracies(program: Program, measurer: Measurer, chosen: Config) -> None:
    """Each stage's accuracy: the plan's metric with that stage alone in its variant, the others fp32."""
    runs = stage_runs(program, measurer.model)
    for k, stage in enumerate(program.stages):
        alone = [StageRun(r.model, r.variant if j == k else "fp32", r.key, r.emulate) for j, r in enumerate(runs)]
        stage.accuracy = measurer.measure(alone).accuracy


def pareto_front(configs: Sequence[Config]) -> list[Config]:
    """Configurations no other beats on both accuracy and throughput (of equals, the lowest latency), fastest first."""
    front = [c for c in configs
             if not any((o.accuracy >= c.accuracy and o.fps >= c.fps) and (o.accuracy > c.accuracy or o.fps > c.fps)
                        for o in configs)]
    best: dict[tuple[float, float], Config] = {}
    for c in front:
        key = (c.accuracy, c.fps)
        if key not in best or c.latency_ms < best[key].latency_ms:
            best[key] = c
    return sorted(best.values(), key=lambda c: -c.fps)


# -- without calibration data ---------------------------------------------------------------------------


def apply_safe_rule(program: Program) -> Program:
    """SAFE_RULE: a stage (and each of its replicas) keeps its unit's default variant only if the backend deems
    it safe without data (`Backend.safe_without_data` on a seeded random frame of the stage's inputs); else it
    runs the first variant that is. Only a checked stage's own weights are read into memory (never the whole
    model's), and a stage with more than SAFE_CHECK_MAX_BYTES of weights keeps its default unchecked, as the
    manifest records. The plan is re-predicted only where a variant changed."""
    from edgec.manifest import TensorSpec
    from edgec.runtime.frames import random_frames
    from edgec.weights import inline

    cluster = program.cluster
    assert cluster is not None

    def copies(stage: Stage) -> list:
        return [stage] + list(stage.replicas)  # each has device, unit, variant

    unchecked, slower = [], {}  # slower: unit id -> its compute groups' ms factor
    compute = compute_groups(program)
    if any(c.variant not in backend_for(cluster.devices[c.device], c.unit).exact_variants
           for s in program.stages for c in copies(s)):
        subs = stage_models(program, program.to_onnx(inline=False))
        for k, (stage, sub) in enumerate(zip(program.stages, subs)):
            todo = [c for c in copies(stage)
                    if c.variant not in backend_for(cluster.devices[c.device], c.unit).exact_variants]
            if not todo:
                continue  # the original's arithmetic: nothing to check
            if sum(program.costs[g].param_bytes for g in stage.groups) > SAFE_CHECK_MAX_BYTES:
                unchecked.append(stage.name)
                continue
            inline(sub, program.graph)
            specs = [TensorSpec(v.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
                v.type.tensor_type.elem_type)).name, [d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in sub.graph.input]
            feeds = random_frames(specs, 1, k)[0]
            for c in todo:
                backend = backend_for(cluster.devices[c.device], c.unit)
                if backend.safe_without_data(c.variant, sub, feeds):
                    continue
                was = c.variant
                c.variant = next(v for v in backend.variants if v != was and backend.safe_without_data(v, sub, feeds))
                uid = f"{c.device}.{c.unit}"
                slower[uid] = backend.variant_speed[was] / backend.variant_speed[c.variant]
                c.predicted_ms += sum(program.group_ms(g, uid) for g in stage.groups if g in compute) * (slower[uid] - 1)
    if slower:
        if any(s.replicas or s.weight is not None for s in program.stages):
            for group in compute:  # the placed prediction reads the costs: charge the slower variant there
                cost = program.costs[group]
                cost.ms = {u: ms * slower.get(u, 1.0) for u, ms in cost.ms.items()}
        repredict(program)
    program.variant_choice = {"metric": None, "floor": None, "calibration": None, "rule": SAFE_RULE,
                              "source": None, "unchecked": unchecked}
    return program
