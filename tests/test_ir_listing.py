"""The text dump as a listing: lines under the width, the plan's summary block, one line for an unchanged dump."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import edgec
from edgec.ir import Program
from edgec.ir_listing import WIDTH, _names, fit
from edgec.passes.load import Load
from edgec.passes.shape_inference import ShapeInference
from edgec.pipeline import DumpIR, PassManager, PassResult, PrintIRAfter
from edgec.zoo import zoo_models

from conftest import MULTI, TRIO, save_text_model

MIXED = Path(__file__).resolve().parent.parent / "samples" / "clusters" / "mixed-8.json"


def test_a_line_that_fits_stays_one_and_a_long_one_wraps_between_notes():
    assert fit("%y: f32[1] = Relu(%x)", ["n1", "g0"]) == ["%y: f32[1] = Relu(%x)  # n1  g0"]
    assert _names([f"t{i}" for i in range(100)], 20) == "t0, t1, t2, t3, t4 (+95 more)"
    args = ", ".join(f"%tensor_{i}" for i in range(40))
    notes = ["n9", "g3", "12.0 MFLOP"] + [f"board{i}.cpu {i}.25ms" for i in range(20)] + ["-> s1@board3.cpu"]
    lines = fit(f"%y: f32[1,400] = Concat({args}) {{axis=1}}", notes, width=100)
    assert len(lines) > 3 and all(len(line) <= 100 for line in lines)
    assert all(line.startswith("    ") for line in lines[1:])
    note_lines = [line for line in lines if line.startswith("    #")]
    assert "  ".join(line.strip()[1:].strip() for line in note_lines) == "  ".join(notes)  # no note split
    assert " ".join(line.strip() for line in lines if not line.startswith("    #")).startswith("%y: f32[1,400]")


def test_dumps_of_a_wide_cluster_stay_under_the_width_and_end_with_the_plan(tmp_path):
    ir = tmp_path / "ir"
    result = edgec.compile(zoo_models()["squeezenet"], MIXED, tmp_path / "out", dump_ir=ir)
    for path in sorted(ir.glob("*.txt")):
        for line in path.read_text().splitlines():
            assert len(line) <= WIDTH, f"{path.name}: {line}"
    partition = (ir / "06-partition.txt").read_text()
    assert "# plan: " in partition and "device segments" in partition
    assert "# plan: " not in (ir / "05-capability.txt").read_text()
    placed = (ir / "07-local-partition.txt").read_text().split("\n#\n# plan: ")[1].splitlines()
    m = result.manifest
    assert placed[0].startswith(f"{len(m.stages)} stages on {len({s.device for s in m.stages})} devices; "
                                f"predicted latency {m.predicted['latency_ms']:.2f} ms, "
                                f"bottleneck {m.predicted['bottleneck_ms']:.2f} ms")
    rows = [line.split() for line in placed[1:placed.index("# transfers:")]]
    assert [(r[1], r[2]) for r in rows] == [(s.name, f"{s.device}.{s.unit}") for s in m.stages]
    shown = {name for line in placed[placed.index("# transfers:") + 1:]
             if "-> sink" not in line and not line.startswith("#   source ->")
             for name in line.split(": ", 1)[1].split(", ")}
    sent = {t for tr in m.transfers if tr.dst != "sink" and tr.src != "source" for t in tr.tensors}
    assert shown == sent


@dataclass(frozen=True)
class Nothing:
    name: ClassVar[str] = "nothing"
    requires: ClassVar[frozenset[str]] = frozenset({"graph"})
    provides: ClassVar[frozenset[str]] = frozenset()

    def run(self, program: Program) -> PassResult:
        return PassResult(program, False)


def test_a_dump_the_same_as_the_one_before_is_one_line(tmp_path):
    model = save_text_model(MULTI, tmp_path / "m.onnx")
    printed: list[tuple[str, str]] = []
    instruments = [DumpIR(tmp_path / "ir"), PrintIRAfter(["all"], lambda name, text: printed.append((name, text)))]
    program = Program.empty()
    PassManager([Load(str(model)), Nothing(), ShapeInference(input_shapes={})], instruments,
                given=frozenset()).run(program)
    load, nothing, shapes = (tmp_path / "ir" / n for n in ("01-load.txt", "02-nothing.txt", "03-shape-inference.txt"))
    assert nothing.read_text() == "# unchanged by nothing: the listing is as 01-load.txt shows\n"
    assert load.read_text().count("\n") > 5 and shapes.read_text().startswith("# edgec IR")
    assert (tmp_path / "ir" / "02-nothing.json").read_text() == (tmp_path / "ir" / "01-load.json").read_text()
    assert [name for name, _ in printed] == ["load", "nothing", "shape-inference"]
    assert printed[1][1] == "# unchanged by nothing: the listing is as the IR after load shows"
    assert printed[2][1].startswith("# edgec IR")


def test_the_summary_names_a_stage_s_step_and_share_where_the_plan_has_them(tmp_path):
    from edgec.ir import tensor_nbytes
    from edgec.ir_listing import plan_summary

    model = save_text_model(MULTI, tmp_path / "m.onnx")
    program = edgec.compile(model, TRIO, tmp_path / "out", strategy="even", keep_program=True).program
    first = program.stages[0]
    assert "step" not in "\n".join(plan_summary(program, tensor_nbytes))
    first.step, first.parallel, first.weight = 0, "replica", 0.5  # as a plan of parallel steps carries them
    line = next(x for x in plan_summary(program, tensor_nbytes) if x.startswith(f"#   {first.name} "))
    assert line.endswith("step 0  parallel replica  weight 0.5")
