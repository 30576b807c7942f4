"""A target defined only here, registered, compiles, places and writes a bundle with no change elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import onnx
import onnx_graphsurgeon as gs
import pytest

import edgec
from edgec.backends.base import Backend
from edgec.backends.registry import register, unregister
from edgec.cluster import parse_cluster
from edgec.manifest import StageSpec

from conftest import save_text_model

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[1,16] x) => (float[1,16] y) <float[16,16] w1, float[16,16] w2>
{
    a = MatMul(x, w1)
    b = Relu(a)
    c = MatMul(b, w2)
    d = Tanh(c)
    y = Softmax(d)
}
"""


class GenericCPU(Backend):
    """ONNX Runtime's CPU provider anywhere, one thread; refuses Softmax so placement has to route around it."""

    name = "generic-ort-cpu"
    unit_kinds = ("cpu",)
    variants = ("fp32",)

    def supports(self, node: gs.Node, opset: int) -> str | None:
        return "Softmax is not run by this target" if node.op == "Softmax" else None

    def prepare_submodel(self, model: onnx.ModelProto, variant: str) -> onnx.ModelProto:
        assert variant == "fp32"
        return model

    def session_config(self, stage: StageSpec) -> dict[str, Any]:
        return {"provider": "CPUExecutionProvider", "intra_op_num_threads": 1}

    @classmethod
    def bundle_files(cls, device, stages: Sequence[StageSpec]) -> dict[str, str | bytes]:
        return {f"{s.name}.generic.json": json.dumps({"stage": s.name, "unit": s.unit}) + "\n" for s in stages}

    @classmethod
    def readme(cls, device, stages: Sequence[StageSpec]) -> str:
        return "## Generic CPU stages\n\nAny onnxruntime.\n"


@pytest.fixture
def generic():
    register(GenericCPU)
    yield GenericCPU
    unregister(GenericCPU.name)


def cluster_spec() -> dict:
    return {
        "name": "generic-pair",
        "devices": [
            {"name": "gen", "type": "host", "units": {"cpu": {"backend": "generic-ort-cpu", "cores": [0]}}},
            {"name": "ort", "type": "host", "units": {"cpu": {"cores": [0], "gflops": 0.01}}},
        ],
        "network": {"bandwidth_mbps": 1000, "latency_ms": 0.1},
        "source": "gen",
        "sink": "ort",
    }


def test_a_backend_defined_in_a_test_compiles_places_and_bundles(generic, tmp_path):
    model = save_text_model(MODEL, tmp_path / "net.onnx")
    cluster = parse_cluster(cluster_spec(), "generic-pair.json")
    result = edgec.compile(model, cluster, tmp_path / "out", keep_program=True)
    stages = result.manifest.stages
    on_gen = [s for s in stages if s.device == "gen"]
    assert on_gen and all(s.backend == "generic-ort-cpu" and s.variant == "fp32" for s in on_gen)
    assert all(s.session == {"provider": "CPUExecutionProvider", "intra_op_num_threads": 1} for s in on_gen)
    # the Softmax the target refuses runs on the other device
    program = result.program
    softmax = next(n.name for n in program.graph.nodes if n.op == "Softmax")
    group = program.group_of()[softmax]
    assert "gen.cpu" in program.unsupported[group]
    assert next(s for s in program.stages if group in s.groups).device == "ort"
    # its bundle files are written and listed with their sha256
    listed = {f["path"] for f in result.manifest.files}
    for s in on_gen:
        path = Path(tmp_path / "out" / "gen" / f"{s.name}.generic.json")
        assert json.loads(path.read_text()) == {"stage": s.name, "unit": "cpu"}
        assert f"gen/{s.name}.generic.json" in listed
    assert "Generic CPU stages" in (tmp_path / "out" / "gen" / "README.md").read_text()
    assert edgec.verify(tmp_path / "out").passed


def test_an_unregistered_backend_is_a_cluster_error(tmp_path):
    with pytest.raises(edgec.EdgecError, match=r"\$\.devices\[0\]\.units\.cpu\.backend: unknown backend "
                                                r"'generic-ort-cpu'; known backends: neon, tensorrt"):
        parse_cluster(cluster_spec(), "generic-pair.json")


def test_a_backend_on_the_wrong_kind_of_unit_is_a_cluster_error(generic):
    spec = cluster_spec()
    spec["devices"][1]["units"]["npu"] = {"kind": "gpu", "cores": [0], "gflops": 10, "backend": "generic-ort-cpu"}
    with pytest.raises(edgec.EdgecError, match=r"\$\.devices\[1\]\.units\.npu\.backend: the 'generic-ort-cpu' "
                                                r"backend runs cpu units, not a gpu unit; a gpu unit runs 'tensorrt'"):
        parse_cluster(spec, "generic-pair.json")


def test_registering_a_second_class_under_a_taken_name_is_refused():
    class Impostor(GenericCPU):
        name = "neon"

    with pytest.raises(ValueError, match="registered twice"):
        register(Impostor)


@pytest.mark.parametrize("device, unit, good, bad, message", [
    ("rpi4", "cpu", "fp32", "fp16", "variant 'fp16' is not one ONNX Runtime's CPU provider runs here; use fp32 or int8"),
    ("nano", "gpu", "fp16", "int8", "int8 on the Jetson Nano's GPU gives no speed-up"),
])
def test_prepare_submodel_honours_the_variant(tmp_path, device, unit, good, bad, message):
    """A backend lowers the variants it runs and refuses the others by name; each names its default first."""
    from conftest import TRIO
    from edgec.backends import backend_for
    from edgec.cluster import load_cluster

    backend = backend_for(load_cluster(TRIO).devices[device], unit)
    assert backend.default_variant == good
    model = onnx.load(str(save_text_model(MODEL, tmp_path / "net.onnx")))
    assert backend.prepare_submodel(model, good).graph.node
    with pytest.raises(edgec.EdgecError, match=message):
        backend.prepare_submodel(model, bad)
