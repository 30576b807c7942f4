"""Every bundled zoo architecture compiles for the reference trio; random-weight versions verify."""

from __future__ import annotations

import onnx
import pytest

import edgec
import edgec.cluster
from edgec.zoo import ZOO, zoo_models

from conftest import TRIO


def _check_submodels(result: edgec.CompileResult, source: onnx.ModelProto) -> None:
    names = {t for n in source.graph.node for t in n.output} | {i.name for i in source.graph.input}
    source_opset = {o.domain: o.version for o in source.opset_import}
    for stage in result.manifest.stages:
        sub = onnx.load(str(result.out_dir / stage.model))
        onnx.checker.check_model(sub, full_check=True)
        assert {o.domain: o.version for o in sub.opset_import} == source_opset
        for t in stage.inputs + stage.outputs:
            assert t.name in names, f"{stage.name}: tensor {t.name} is not a tensor of the original model"


@pytest.mark.parametrize("name", ZOO)
def test_shipped_zoo_model_compiles(name, tmp_path):
    path = zoo_models()[name]
    result = edgec.compile(path, TRIO, tmp_path / "out")
    assert len(result.manifest.stages) >= 2
    _check_submodels(result, onnx.load(str(path)))


@pytest.mark.parametrize("name", ZOO)
def test_random_weight_zoo_model_verifies(name, random_zoo, tmp_path):
    path = random_zoo(name)
    result = edgec.compile(path, TRIO, tmp_path / "out")
    _check_submodels(result, onnx.load(str(path), load_external_data=False))
    report = edgec.verify(tmp_path / "out")
    assert report.passed, report
    # the outputs must be informative: a constant or saturated output would hide a wrong split
    assert all(o.value_range > 1e-6 for o in report.outputs)


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1", "resnet50", "densenet121", "shufflenet"])
@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_both_objectives_verify_and_respect_memory(name, objective, random_zoo, tmp_path):
    result = edgec.compile(random_zoo(name), TRIO, tmp_path / "out", objective=objective)
    assert result.manifest.objective == objective
    trio = edgec.cluster.load_cluster(TRIO)
    for stage in result.manifest.stages:
        assert stage.memory_bytes <= trio.devices[stage.device].memory_bytes
    assert edgec.verify(tmp_path / "out").passed
