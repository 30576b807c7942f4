"""Steps of a plan: stages that run at once on different units, and what crosses between steps.

A plan is a list of stages in pipeline order; stages that share a `step` run
at the same time. In a chain each stage is its own step and receives what is
live at the boundary before it (edgec.liveness). In a step of slices every
stage receives what is live before the step, and sends what it makes of what
is live after it; the step's first stage also relays what passes the step
untouched, so the union of the step's sends is what the next step receives.
"""

from __future__ import annotations

from edgec.costmodel.transfer import transfer_ms
from edgec.ir import Program, tensor_nbytes
from edgec.manifest import StageSpec, TransferSpec


def steps(program: Program) -> list[list[int]]:
    """Stage indices per step, in order (a stage with no step is a step of its own)."""
    out: list[list[int]] = []
    last = None
    for k, stage in enumerate(program.stages):
        if stage.step is not None and stage.step == last and out:
            out[-1].append(k)
        else:
            out.append([k])
        last = stage.step
    return out


def step_boundaries(program: Program, lives: list[list[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """Per stage, what it receives and what it sends, given the chain's boundaries `lives`
    (:func:`edgec.liveness.stage_boundaries`)."""
    receives = [list(x) for x in lives[:-1]]
    sends = [list(x) for x in lives[1:]]
    for members in steps(program):
        if len(members) == 1:
            continue
        first, last = members[0], members[-1]
        made = {k: {t.name for n in program.nodes_of(program.stages[k].groups) for t in n.outputs}
                for k in members}
        made_in_step = set().union(*made.values())
        for k in members:
            receives[k] = list(lives[first])
            sends[k] = [t for t in lives[last + 1] if t in made[k] or (k == first and t not in made_in_step)]
    return receives, sends


def step_transfers(program: Program, specs: list[StageSpec]) -> list[TransferSpec]:
    """Transfers between consecutive steps (source first, sink last): from each stage of a step to each
    stage of the next one on another device, the tensors the one sends and the other receives."""
    cluster = program.cluster
    assert cluster is not None
    tensors = program.graph.tensors()
    graph_inputs = [t.name for t in program.graph.inputs]
    graph_outputs = [t.name for t in program.graph.outputs]
    groups = [[("source", cluster.source, graph_inputs)]]
    groups += [[(specs[k].name, specs[k].device, specs[k].sends) for k in members] for members in steps(program)]
    wants = [[(specs[k].name, specs[k].device, set(specs[k].receives)) for k in members] for members in steps(program)]
    wants.append([("sink", cluster.sink, set(graph_outputs))])
    out: list[TransferSpec] = []
    for senders, receivers in zip(groups, wants):
        for src, src_dev, sent in senders:
            for dst, dst_dev, wanted in receivers:
                names = [t for t in sent if t in wanted]
                if not names or src_dev == dst_dev:
                    continue
                nbytes = sum(tensor_nbytes(tensors[t]) for t in names)
                out.append(TransferSpec(src, dst, src_dev, dst_dev, names, nbytes,
                                        round(transfer_ms(cluster, nbytes, src_dev, dst_dev), 4)))
    return out
