"""Models laid out as exporters write them compile for every unit and reproduce the original.

Covered conventions: Constant nodes for Clip bounds, InstanceNormalization
scale/bias, Reshape shapes and Resize scales (shared between consumers); -1 as a
dynamic dim; dim names shared between inputs; empty-string optional inputs; IR 3;
opsets from 3 (upgraded) to 20 and an unreleased one (refused); function ops
newer than a unit's opset (HardSwish, Gelu, LayerNormalization) lowered to
their ONNX bodies for that unit.
"""

from __future__ import annotations

import onnx
import pytest

import edgec
from edgec.cluster import parse_cluster
from edgec.manifest import read_manifest

import foreign_graphs as fg
from conftest import TRIO

UNITS = [("jetson-nano", "gpu"), ("jetson-nano", "cpu"), ("raspberry-pi-4", "cpu"), ("odroid-xu4", "big"),
         ("odroid-xu4", "little")]
CATALOG_UNITS = {"jetson-nano": ("cpu", "gpu"), "raspberry-pi-4": ("cpu",), "odroid-xu4": ("big", "little")}
CONSTANT_MODELS = {"torch-relu6": fg.torch_mobilenet_block, "torch-groupnorm": fg.torch_groupnorm,
                   "torch-upsample": fg.torch_upsample, "tf2onnx-nhwc": fg.tf2onnx_nhwc}


def one_unit(device_type: str, unit: str):
    """A cluster of one board with only `unit` left."""
    spec = {"name": f"{device_type}-{unit}",
            "devices": [{"name": "b", "type": device_type,
                         "units": {u: None for u in CATALOG_UNITS[device_type] if u != unit}}],
            "source": "b", "sink": "b"}
    return parse_cluster(spec, f"{device_type}-{unit}.json")


def save(model: onnx.ModelProto, tmp_path, name: str):
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def compile_and_verify(path, cluster, out, **options):
    result = edgec.compile(path, cluster, out, **options)
    report = edgec.verify(out)
    assert report.passed, [(o.name, o.max_abs_error) for o in report.outputs]
    return result


@pytest.mark.parametrize("name", sorted(CONSTANT_MODELS))
@pytest.mark.parametrize("device_type, unit", UNITS)
def test_exporter_constants_place_on_every_unit(tmp_path, name, device_type, unit):
    path = save(CONSTANT_MODELS[name](), tmp_path, name)
    result = compile_and_verify(path, one_unit(device_type, unit), tmp_path / "out")
    assert {s.unit for s in result.manifest.stages} == {unit}


@pytest.mark.parametrize("name", sorted(CONSTANT_MODELS))
def test_exporter_constants_on_the_trio_never_cross_a_boundary(tmp_path, name):
    path = save(CONSTANT_MODELS[name](), tmp_path, name)
    result = compile_and_verify(path, TRIO, tmp_path / "out", keep_program=True)
    constants = {n.output[0] for n in CONSTANT_MODELS[name]().graph.node if n.op_type == "Constant"}
    program = result.program
    assert not any(n.op == "Constant" for n in program.graph.nodes)
    for stage in result.manifest.stages:
        assert not constants & (set(stage.receives) | set(stage.sends) | {t.name for t in stage.inputs})


def test_torch_relu6_fuses_into_its_conv(tmp_path):
    path = save(fg.torch_mobilenet_block(), tmp_path, "mbv2")
    program = edgec.analyze(path, TRIO)
    groups = {tuple(program.graph.nodes[i].op for i in range(len(program.graph.nodes))
                    if program.graph.nodes[i].name in g.nodes) for g in program.groups.values()}
    assert ("Conv", "Clip") in groups
    clip = next(n for n in program.graph.nodes if n.op == "Clip")
    assert program.group_ms(program.group_of()[clip.name], "rpi4.cpu") == program.group_ms(
        program.group_of()[clip.inputs[0].inputs[0].name], "rpi4.cpu")  # one group: the Clip costs nothing apart


def test_a_shared_constant_cut_apart_is_copied_into_each_stage(tmp_path):
    from test_cuts import _compile_with_stages

    path = save(fg.torch_mobilenet_block(), tmp_path, "mbv2")
    manifest, out = _compile_with_stages(path, tmp_path, cuts=["/features/1/Conv_output_0", "/features/2/Conv_output_0"])
    for stage in manifest.stages:
        sub = onnx.load(str(out / stage.model))
        reads_clip = any(n.op_type == "Clip" for n in sub.graph.node)
        inits = {t.name for t in sub.graph.initializer}
        assert not reads_clip or {"onnx::Clip_lo", "onnx::Clip_hi"} <= inits
        assert "onnx::Clip_lo" not in set(stage.receives) | set(stage.sends)
    assert edgec.verify(out).passed


def test_paddle_minus_one_dims_are_dynamic_and_pinnable(tmp_path):
    path = save(fg.paddle_ocr_stem(), tmp_path, "paddle")
    with pytest.raises(edgec.EdgecError, match=r"tensor 'x' has dynamic dim '-1' \(axis 0\); pin it with "
                                                r"--input-shape x=1x3x1x1"):
        edgec.compile(path, TRIO, tmp_path / "out")
    result = compile_and_verify(path, TRIO, tmp_path / "out", input_shapes={"x": (1, 3, 48, 192)})
    assert result.manifest.inputs[0].shape == [1, 3, 48, 192]


def test_a_dim_name_shared_between_inputs_is_pinned_once(tmp_path):
    path = save(fg.two_inputs_shared_batch(), tmp_path, "shared")
    result = compile_and_verify(path, TRIO, tmp_path / "out", input_shapes={"a": (2, 8)})
    assert {t.name: t.shape for t in result.manifest.inputs} == {"a": [2, 8], "b": [2, 4]}
    with pytest.raises(edgec.EdgecError, match="dim 'batch' is 3 here but 2 in --input-shape a"):
        edgec.compile(path, TRIO, tmp_path / "out2", input_shapes={"a": (2, 8), "b": (3, 4)})


def test_hardswish_runs_on_the_nano_gpu_as_its_body(tmp_path):
    path = save(fg.torch_mobilenetv3_block(), tmp_path, "mbv3")
    compile_and_verify(path, one_unit("jetson-nano", "gpu"), tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    sub = onnx.load(str(tmp_path / "out" / manifest.stages[0].model))
    assert sub.opset_import[0].version == 13
    assert "HardSwish" not in {n.op_type for n in sub.graph.node} and "HardSigmoid" in {n.op_type for n in sub.graph.node}
    program = edgec.analyze(path, TRIO)
    capability = edgec.api.build_passes(str(path), str(tmp_path / "unused"))[4]
    program = capability.run(program).program
    assert not any("nano.gpu" in refused for refused in program.unsupported.values())


@pytest.mark.parametrize("device_type", ["jetson-nano", "raspberry-pi-4"])
def test_gelu_and_layernorm_at_opset_20_run_on_older_runtimes(tmp_path, device_type):
    """The Nano's ONNX Runtime 1.10 loads opset 15: Gelu-20 and LayerNormalization-17 go down as their bodies."""
    path = save(fg.dynamo_gelu_encoder(), tmp_path, "enc")
    result = compile_and_verify(path, one_unit(device_type, "cpu"), tmp_path / "out")
    sub = onnx.load(str(tmp_path / "out" / result.manifest.stages[0].model))
    ops = {n.op_type for n in sub.graph.node}
    if device_type == "jetson-nano":
        assert sub.opset_import[0].version <= 15 and not {"Gelu", "LayerNormalization"} & ops


def test_an_opset_3_model_is_upgraded_and_an_unreleased_opset_refused(tmp_path):
    path = save(fg.opset3_convnet(), tmp_path, "old")
    compile_and_verify(path, TRIO, tmp_path / "out")
    future = fg.torch_upsample()
    future.opset_import[0].version = 99
    path = tmp_path / "future.onnx"
    path.write_bytes(future.SerializeToString())
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(edgec.EdgecError, match=f"imports ONNX opset 99, newer than any this edgec knows "
                                                f"\\(the newest is {newest}"):
        edgec.compile(path, TRIO, tmp_path / "out2")


@pytest.mark.parametrize("opset", [7, 11, 17, onnx.defs.onnx_opset_version()])
def test_every_released_opset_from_7_compiles_for_the_trio(tmp_path, opset):
    """Each board gets its sub-models at the opset its runtime loads, whatever the model was exported at."""
    from onnx import helper

    model = fg.opset3_convnet()
    model.graph.node.append(helper.make_node("MaxPool", ["y"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, [1, 8, 4, 4]))
    del model.graph.input[1:]  # IR 4 and later: initializers need not be listed as inputs
    model.opset_import[0].version = opset
    model.ir_version = 8 if opset <= 17 else onnx.IR_VERSION
    del model.graph.node[1].attribute[:]
    path = save(model, tmp_path, f"opset{opset}")
    compile_and_verify(path, TRIO, tmp_path / "out")
