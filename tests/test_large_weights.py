"""Large weights: read in place, streamed into the sub-models, and written as external data past a threshold."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgec
from edgec.errors import EdgecError
from edgec.manifest import read_manifest
from edgec.passes.load import read_model
from edgec.protowire import scan_model, tensor_field
from edgec.runtime.stage import ModelMismatch, StageRunner
from edgec.weights import LARGE_BYTES

from conftest import TRIO, save_text_model

# Four 256x256 weights (256 KiB each, large) and small biases; `even` spreads the layers over the boards.
CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,256] x) => (float[1,256] y)
<float[256,256] w1, float[256] b1, float[256,256] w2, float[256] b2, float[256,256] w3, float[256] b3,
 float[256,256] w4, float[256] b4>
{
    m1 = MatMul(x, w1)
    a1 = Add(m1, b1)
    r1 = Relu(a1)
    m2 = MatMul(r1, w2)
    a2 = Add(m2, b2)
    r2 = Tanh(a2)
    m3 = MatMul(r2, w3)
    a3 = Add(m3, b3)
    r3 = Relu(a3)
    m4 = MatMul(r3, w4)
    y = Add(m4, b4)
}
"""


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    return save_text_model(CHAIN, tmp_path / "chain.onnx")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_model_is_read_with_large_weights_left_in_the_file(chain):
    source = onnx.load(str(chain))
    light, sha = read_model(chain)
    assert sha == _sha(chain)
    for t in light.graph.initializer:
        big = numpy_helper.to_array(next(s for s in source.graph.initializer if s.name == t.name)).nbytes >= LARGE_BYTES
        assert (t.data_location == onnx.TensorProto.EXTERNAL) == big, t.name
    assert light.ByteSize() < 10_000 < chain.stat().st_size


def test_submodels_hold_the_weights_they_read_bit_for_bit(chain, tmp_path):
    result = edgec.compile(chain, TRIO, tmp_path / "out", strategy="even")
    assert len(result.manifest.stages) >= 2
    source = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(chain)).graph.initializer}
    for stage in result.manifest.stages:
        assert stage.external_data is None
        sub = onnx.load(str(tmp_path / "out" / stage.model))
        onnx.checker.check_model(sub, full_check=True)
        for t in sub.graph.initializer:
            assert np.array_equal(numpy_helper.to_array(t), source[t.name]), t.name
    assert edgec.verify(tmp_path / "out").passed


def test_external_data_past_the_threshold(chain, tmp_path):
    out = tmp_path / "out"
    result = edgec.compile(chain, TRIO, out, strategy="even", external_data_bytes=0)
    files = {f["path"]: f["sha256"] for f in result.manifest.files}
    external = [s for s in result.manifest.stages if s.external_data is not None]
    assert len(external) >= 2, "the stages that read large weights each have an external-data file"
    for stage in external:
        data = out / stage.external_data["path"]
        assert data.parent == (out / stage.model).parent and data.suffix == ".data"
        assert files[stage.external_data["path"]] == stage.external_data["sha256"] == _sha(data)
        assert files[stage.model] == stage.sha256 == _sha(out / stage.model)
        assert (out / stage.model).stat().st_size < LARGE_BYTES  # the weights are beside it, not in it
        onnx.checker.check_model(str(out / stage.model), full_check=True)  # by path: the checker finds the data
        sub = onnx.load(str(out / stage.model))
        assert any(t.name.startswith("w") for t in sub.graph.initializer)
    assert read_manifest(out).stages[0].external_data == result.manifest.stages[0].external_data
    assert edgec.verify(out).passed
    runner = StageRunner(str(out), external[0])
    feeds = {t.name: np.zeros(t.shape, np.float32) for t in external[0].inputs}
    assert set(runner.run(feeds)) == {t.name for t in external[0].outputs}


def test_a_changed_or_missing_weights_file_is_refused(chain, tmp_path):
    out = tmp_path / "out"
    result = edgec.compile(chain, TRIO, out, strategy="even", external_data_bytes=0)
    stage = next(s for s in result.manifest.stages if s.external_data is not None)
    data = out / stage.external_data["path"]
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelMismatch, match="weights file sha256"):
        StageRunner(str(out), stage)
    with pytest.raises(EdgecError, match="weights file"):
        edgec.verify(out)
    data.unlink()
    with pytest.raises(EdgecError, match="cannot read its weights file"):
        StageRunner(str(out), stage)


def test_a_model_with_external_data_compiles_to_sub_models_with_external_data(chain, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    model = onnx.load(str(chain))
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, location="m.weights", size_threshold=1024)
    out = tmp_path / "out"
    result = edgec.compile(folder / "m.onnx", TRIO, out, strategy="even", external_data_bytes=LARGE_BYTES)
    assert any(s.external_data is not None for s in result.manifest.stages)
    assert edgec.verify(out).passed


def test_scan_leaves_only_large_raw_data_out_and_appended_initializers_parse_back(tmp_path):
    big = np.arange(20000, dtype=np.float32).reshape(100, 200)
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["a", "b"], ["y"])], "g", [], [onnx.helper.make_tensor_value_info("y", 1, [100, 200])],
        [numpy_helper.from_array(big, "a"), onnx.helper.make_tensor("b", 1, [100, 200], big.reshape(-1).tolist())]))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    light, spans = scan_model(path, LARGE_BYTES)
    assert [(s.index, s.length) for s in spans] == [(0, big.nbytes)]  # b holds float_data, not raw_data: it stays
    assert path.read_bytes()[spans[0].offset:spans[0].offset + spans[0].length] == big.tobytes()
    parsed = onnx.ModelProto.FromString(light)
    assert not parsed.graph.initializer[0].HasField("raw_data") and len(parsed.graph.initializer[1].float_data) == 20000
    # structure, then one initializer appended as `graph { initializer { ... } }`: the same model
    del model.graph.initializer[0]
    joined = model.SerializeToString() + tensor_field("a", 1, [100, 200], big.nbytes) + big.tobytes()
    back = onnx.ModelProto.FromString(joined)
    assert [t.name for t in back.graph.initializer] == ["b", "a"] and len(back.graph.node) == 1
    assert np.array_equal(numpy_helper.to_array(back.graph.initializer[1]), big)


def test_large_constant_of_shape_weights_are_written_whole_and_verify(tmp_path):
    """Weights built by ConstantOfShape (as in ONNX's bundled zoo files) fold to fills and reach the file whole."""
    h = onnx.helper
    shape = numpy_helper.from_array(np.array([256, 300], np.int64), "s")
    nodes = [h.make_node("ConstantOfShape", ["s"], ["w"], value=numpy_helper.from_array(np.array([0.25], np.float32))),
             h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Tanh", ["m"], ["y"])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", 1, [1, 256])],
                         [h.make_tensor_value_info("y", 1, [1, 300])], [shape])
    path = tmp_path / "fill.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    result = edgec.compile(path, TRIO, tmp_path / "out")
    weights = [t for s in result.manifest.stages for t in onnx.load(str(tmp_path / "out" / s.model)).graph.initializer
               if t.name == "w"]
    # one stage holds it, or each replica of its stage does, whole
    assert weights and all(np.array_equal(numpy_helper.to_array(w), np.full((256, 300), 0.25, np.float32))
                           for w in weights)
    assert edgec.verify(tmp_path / "out").passed
