"""Every bundled zoo architecture compiles for the reference trio; random-weight versions verify."""

from __future__ import annotations

import onnx
import pytest

import edgec
import edgec.cluster
from edgec.backends import neon
from edgec.backends import tensorrt as trt
from edgec.backends.trt82_operators import OPERATORS
from edgec.zoo import ZOO, zoo_models

from conftest import TRIO


def _check_submodels(result: edgec.CompileResult, source: onnx.ModelProto) -> None:
    """Each sub-model is valid, speaks in the original's tensor names, and is what its board's runtime takes."""
    names = {t for n in source.graph.node for t in n.output} | {i.name for i in source.graph.input}
    source_opset = {o.domain: o.version for o in source.opset_import}[""]
    trio = edgec.cluster.load_cluster(TRIO)
    for stage in result.manifest.stages:
        device = trio.devices[stage.device]
        sub = onnx.load(str(result.out_dir / stage.model))
        onnx.checker.check_model(sub, full_check=True)
        opset = {o.domain: o.version for o in sub.opset_import}[""]
        for t in stage.inputs + stage.outputs:
            assert t.name in names, f"{stage.name}: tensor {t.name} is not a tensor of the original model"
        if stage.unit == "gpu":
            assert opset == min(source_opset, trt.MAX_OPSET)
            assert all(OPERATORS[n.op_type].supported for n in sub.graph.node)
            for v in list(sub.graph.input) + list(sub.graph.output) + list(sub.graph.value_info):
                assert all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim), v.name
            assert stage.session["precision"] == stage.variant in ("fp16", "fp32") and stage.session["tensorrt"] == "8.2"
        else:
            assert opset == min(source_opset, device.max_opset)
            cores = device.units[stage.unit].cores
            assert stage.session["intra_op_num_threads"] == len(cores) and stage.session["cores"] == list(cores)
            has_key = tuple(map(int, device.onnxruntime.split(".")[:2])) >= neon.AFFINITY_SINCE
            affinity = stage.session["config_entries"].get(neon.AFFINITY_KEY)
            assert affinity == (neon.affinity_string(cores) if has_key else None)


@pytest.mark.parametrize("name", ZOO)
def test_shipped_zoo_model_compiles(name, tmp_path):
    path = zoo_models()[name]
    result = edgec.compile(path, TRIO, tmp_path / "out")
    # the Nano's GPU is worth using for each of these CNNs, so the TensorRT checks below always run; a small one
    # (SqueezeNet: ~4 ms under TensorRT fp16) runs there whole, the larger ones are split
    assert any(s.unit == "gpu" for s in result.manifest.stages)
    assert len(result.manifest.stages) >= (1 if name == "squeezenet" else 2)
    _check_submodels(result, onnx.load(str(path)))


@pytest.mark.parametrize("name", ZOO)
def test_random_weight_zoo_model_verifies(name, random_zoo, tmp_path):
    path = random_zoo(name)
    result = edgec.compile(path, TRIO, tmp_path / "out")
    _check_submodels(result, onnx.load(str(path), load_external_data=False))
    trio = edgec.cluster.load_cluster(TRIO)
    assert all(s.memory_bytes <= trio.devices[s.device].memory_bytes for s in result.manifest.stages)
    report = edgec.verify(tmp_path / "out")
    assert report.passed, report
    # the outputs must be informative: a constant or saturated output would hide a wrong split
    assert all(o.value_range > 1e-6 for o in report.outputs)


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1", "resnet50", "densenet121", "shufflenet"])
@pytest.mark.parametrize("objective", ["latency"])  # throughput, the default: every zoo model above
def test_the_latency_objective_verifies_and_respects_memory(name, objective, random_zoo, tmp_path):
    result = edgec.compile(random_zoo(name), TRIO, tmp_path / "out", objective=objective)
    assert result.manifest.objective == objective
    trio = edgec.cluster.load_cluster(TRIO)
    for stage in result.manifest.stages:
        assert stage.memory_bytes <= trio.devices[stage.device].memory_bytes
    assert edgec.verify(tmp_path / "out").passed
