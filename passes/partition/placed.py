"""The prediction of a plan placed on units: a pipeline of steps, each a unit or a stage and its replicas."""

from __future__ import annotations

from edgec.costmodel.energy import ActiveStage, plan_energy_mj
from edgec.ir import Prediction, Program, tensor_nbytes
from edgec.liveness import stage_boundaries
from edgec.passes.partition.workers import Copy, Worker, predict_steps


def predict_placed(program: Program) -> Prediction:
    """The prediction of stages the joint search placed on units: a pipeline of steps, each one unit or a
    stage and its replicas, every unit a concurrent worker (`predict_steps`). Sets each stage's and
    replica's predicted_ms (contention included) and each replica's weight."""
    cluster = program.cluster
    assert cluster is not None
    stages = program.stages
    lives = stage_boundaries(program)
    tensors = program.graph.tensors()
    nbytes = [float(sum(tensor_nbytes(tensors[t]) for t in live)) for live in lives]
    steps = []
    for st in stages:
        workers = [Worker(st.device, st.unit)] + [Worker(r.device, r.unit) for r in st.replicas]
        steps.append([Copy(w, st.groups, alone_ms(program, st.groups, w)) for w in workers])
    pred = predict_steps(program, steps, nbytes)
    active = []
    for k, st in enumerate(stages):
        st.predicted_ms = float(pred.ms[k][0])
        if st.replicas:
            st.weight = float(pred.weights[k][0])
        for r, ms, weight in zip(st.replicas, pred.ms[k][1:], pred.weights[k][1:]):
            r.predicted_ms, r.weight = float(ms), float(weight)
        active += [ActiveStage(c.worker.device, c.worker.unit, ms, w)
                   for c, ms, w in zip(steps[k], pred.ms[k], pred.weights[k])]
    energy = plan_energy_mj(cluster, active, pred.bottleneck_ms, pred.network_bytes)
    return Prediction(pred.latency_ms, pred.bottleneck_ms, _fps(pred.bottleneck_ms), energy)


def alone_ms(program: Program, groups: list[str], w: Worker) -> float:
    """Time of `groups` on worker w by itself."""
    return float(sum(program.group_ms(g, w.unit_id) for g in groups))


def _fps(bottleneck_ms: float) -> float:
    return 1000.0 / bottleneck_ms if bottleneck_ms > 0 else float("inf")
