"""The pass manager's instruments: IR dumps, print-after, timings, invariant checks."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import onnx_graphsurgeon as gs
import pytest

import edgec
from edgec.ir import Program
from edgec.pipeline import PassManager, PassResult, VerifyInvariants
from edgec.zoo import zoo_models

from conftest import TRIO

PASSES = ["load", "shape-inference", "fusion", "cost", "capability", "partition", "local-partition", "spatial-partition",
          "variants", "codegen"]


def logical_lines(text: str) -> list[str]:
    """A dump's lines with each wrapped one joined back (continuation lines start with four spaces)."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("    ") and out:
            out[-1] += "  " + line.strip()
        else:
            out.append(line)
    return out


def test_dump_ir_writes_text_and_json_after_each_pass(tmp_path):
    result = edgec.compile(zoo_models()["squeezenet"], TRIO, tmp_path / "out", dump_ir=tmp_path / "ir")
    names = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert names == sorted(f"{i:02d}-{p}.{ext}" for i, p in enumerate(PASSES, 1) for ext in ("txt", "json"))
    boards = logical_lines((tmp_path / "ir" / "06-partition.txt").read_text())
    conv = next(line for line in boards if "= Conv(" in line)
    # %out: f32[...] = Conv(%in, %w:const, ...) {attrs}  # node  group ...  -> stage@device
    assert conv.startswith("%") and ": f32[1," in conv and "-> seg0@" in conv and "nano.gpu " in conv
    text = logical_lines((tmp_path / "ir" / "07-local-partition.txt").read_text())
    conv = next(line for line in text if "= Conv(" in line)
    assert "-> s0@" in conv and conv.split("-> s0@")[1].count(".") == 1  # now on device.unit
    dump = json.loads((tmp_path / "ir" / "10-codegen.json").read_text())
    copies = [f"{s['name']}r{k + 1}" for s in dump["stages"] for k in range(len(s["replicas"]))]
    assert sorted([s["name"] for s in dump["stages"]] + copies) == sorted(s.name for s in result.manifest.stages)
    assert len(dump["nodes"]) == sum(1 for line in text if " = " in line)


def test_print_ir_after_and_time_passes_on_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "compile", str(zoo_models()["squeezenet"]),
                           "-t", str(TRIO), "-o", str(tmp_path / "out"), "--print-ir-after", "shape-inference",
                           "--time-passes"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "// IR after shape-inference" in proc.stdout
    assert "IR after partition" not in proc.stdout
    for name in PASSES:
        assert name in proc.stdout.split("pass timings")[1]


def test_print_ir_after_unknown_pass_is_a_user_error(tmp_path):
    with pytest.raises(edgec.EdgecError, match="no such pass"):
        edgec.compile(zoo_models()["squeezenet"], TRIO, tmp_path / "out", print_ir_after=["fuse"])
    assert not (tmp_path / "out").exists()


def test_manifest_records_passes_and_predictions(tmp_path):
    # a single-level plan: its bottleneck is its slowest stage or transfer
    result = edgec.compile(zoo_models()["squeezenet"], TRIO, tmp_path / "out", strategy="pipeline")
    data = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [p["name"] for p in data["passes"]] == PASSES
    assert data["schema_version"] == 1
    slowest = max([s["predicted_ms"] for s in data["stages"]] + [t["predicted_ms"] for t in data["transfers"]])
    assert data["predicted"]["bottleneck_ms"] == pytest.approx(slowest, rel=1e-4)
    assert result.manifest.predicted == data["predicted"]


def test_transfers_charge_link_and_serialization_at_both_ends(tmp_path):
    from edgec.costmodel.builtin import BUILTIN_PROFILES
    from edgec.cluster import load_cluster

    edgec.compile(zoo_models()["squeezenet"], TRIO, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "manifest.json").read_text())
    cluster = load_cluster(TRIO)
    copy_gbs = {d.name: BUILTIN_PROFILES[sorted(d.units.values(), key=lambda u: u.kind != "cpu")[0].profile]
                .bandwidth_gbs for d in cluster.devices.values()}
    crossing = [t for t in data["transfers"] if t["src_device"] != t["dst_device"]]
    assert crossing
    for t in crossing:
        link = cluster.link(t["src_device"], t["dst_device"])
        serialize = sum(t["bytes"] / (copy_gbs[d] * 1e9) * 1e3 for d in (t["src_device"], t["dst_device"]))
        assert t["predicted_ms"] == pytest.approx(link.link_ms(t["bytes"]) + serialize, rel=1e-3)
        assert serialize > 0


@dataclass(frozen=True)
class BreakGraph:
    """A faulty pass: points a node at a tensor that nothing defines."""

    name: ClassVar[str] = "break-graph"
    requires: ClassVar[frozenset[str]] = frozenset({"graph"})
    provides: ClassVar[frozenset[str]] = frozenset()

    def run(self, program: Program) -> PassResult:
        node = program.graph.nodes[0]
        node.inputs[0] = gs.Variable("undefined", dtype=node.inputs[0].dtype, shape=node.inputs[0].shape)
        return PassResult(program, changed=True)


def test_invariant_check_names_the_faulty_pass(tmp_path):
    from edgec.passes.load import Load

    program = Program.empty()
    with pytest.raises(AssertionError, match="after break-graph"):
        PassManager([Load(str(zoo_models()["squeezenet"])), BreakGraph()], [VerifyInvariants()],
                    given=frozenset()).run(program)


@dataclass(frozen=True)
class DropGroup:
    """A faulty placement: declares stages, leaves one group out of them."""

    name: ClassVar[str] = "drop-group"
    requires: ClassVar[frozenset[str]] = frozenset({"segments"})
    provides: ClassVar[frozenset[str]] = frozenset({"stages"})

    def run(self, program: Program) -> PassResult:
        from edgec.ir import Stage

        seg = program.segments[0]
        program.stages = [Stage("s0", seg.device, "cpu", seg.groups[1:], 0.0, 0, "neon", "fp32")]
        return PassResult(program, changed=True)


def analysis(model) -> list:
    from edgec.passes.cost import Cost
    from edgec.passes.fusion import Fusion
    from edgec.passes.load import Load
    from edgec.passes.partition.capability import Capability
    from edgec.passes.partition.global_partition import GlobalPartition
    from edgec.passes.shape_inference import ShapeInference

    return [Load(str(model)), ShapeInference(), Fusion(), Cost(), Capability(), GlobalPartition()]


def test_a_pass_that_breaks_a_fact_it_provides_is_caught_after_it(tmp_path):
    from edgec.cluster import load_cluster

    program = Program.empty()
    program.cluster = load_cluster(TRIO)
    with pytest.raises(AssertionError, match="after drop-group: stages: not every group is placed"):
        PassManager([*analysis(zoo_models()["squeezenet"]), DropGroup()], [VerifyInvariants()]).run(program)


@pytest.mark.parametrize("order, message", [
    (lambda p: [p[0], p[2], p[1]], r"pass 2 \(fusion\) requires shapes, which no earlier pass provides "
                                   r"\('shapes' is provided by shape-inference\)"),
    (lambda p: p[:3] + [p[4], p[5], p[3]], r"pass 5 \(partition\) requires costs"),
    (lambda p: p[1:], r"pass 1 \(shape-inference\) requires graph, which no earlier pass provides "
                      r"\('graph' is provided by no pass here\)"),
])
def test_the_pass_manager_refuses_an_order_the_declarations_break(order, message):
    from edgec.pipeline import PipelineError

    with pytest.raises(PipelineError, match=message):
        PassManager(order(analysis("model.onnx")))


def test_every_pass_of_the_default_pipeline_declares_known_facts(tmp_path):
    from edgec.api import build_passes
    from edgec.pipeline import FACTS, check_order

    passes = build_passes("model.onnx", str(tmp_path))
    check_order(passes)
    for p in passes:
        assert set(p.requires) | set(p.provides) <= set(FACTS), p.name
    provided = [f for p in passes for f in p.provides]
    assert len(provided) == len(set(provided))  # each fact has one provider: one meaning through the pipeline


def test_unnamed_nodes_get_unique_stable_names(tmp_path):
    import onnx

    from edgec.passes.load import read_model

    model = onnx.load(str(zoo_models()["squeezenet"]))
    for node in model.graph.node:
        node.name = ""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    first = [n.name for n in read_model(path)[0].graph.node]
    second = [n.name for n in read_model(path)[0].graph.node]
    assert first == second and len(set(first)) == len(first) and all(first)


def test_cli_compile_then_verify_pass(tmp_path, random_zoo):
    """The README's main job, on the command line: compile, then verify prints PASS and exits 0."""
    out = tmp_path / "out"
    run = [sys.executable, "-m", "edgec.cli"]
    proc = subprocess.run(run + ["compile", str(random_zoo("squeezenet")), "-t", str(TRIO), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(run + ["verify", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<= 1e-05 + 0.0001 x |expected|" in proc.stdout and proc.stdout.strip().endswith("PASS")
    proc = subprocess.run(run + ["verify", str(out), "--rtol", "1e-3", "--atol", "0"], capture_output=True, text=True)
    assert proc.returncode == 0 and "<= 0 + 0.001 x |expected|" in proc.stdout


def test_partition_problem_charges_transfers_as_the_manifest_does(tmp_path):
    from edgec.costmodel.transfer import transfer_ms
    from edgec.passes.partition.build import build_problem, group_graph

    program = edgec.compile(zoo_models()["squeezenet"], TRIO, tmp_path / "out", keep_program=True).program
    problem = build_problem(program, group_graph(program))
    for i, a in enumerate(problem.devices):
        for j, b in enumerate(problem.devices):
            assert problem.transfer_ms(10**6, i, j) == pytest.approx(transfer_ms(program.cluster, 10**6, a, b))


def test_bn_folding_is_the_fusion_pass_s_and_shows_in_the_dumps(tmp_path):
    """Shape inference keeps every BatchNormalization (it infers and folds constants only); fusion folds
    each into its Conv, and the two dumps show it; the compiled plan still verifies."""
    import onnx

    import fusion_graphs as fg

    path = tmp_path / "resnet_block.onnx"
    onnx.save(fg.parse(fg.RESNET_BLOCK), str(path))
    edgec.compile(path, TRIO, tmp_path / "out", dump_ir=tmp_path / "ir")
    inferred = (tmp_path / "ir" / "02-shape-inference.txt").read_text()
    fused = (tmp_path / "ir" / "03-fusion.txt").read_text()
    assert inferred.count("= BatchNormalization(") == 3 and inferred.count("= Pad(") == 1
    assert "BatchNormalization" not in fused and "= Pad(" not in fused and "Dropout" not in fused
    assert edgec.verify(tmp_path / "out").passed
