"""edgec.accuracy: calibration files, the metrics, the variants as the boards compute them, and the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgec.accuracy import (Calibration, InputSpec, Measurer, StageRun, classes_of, load_calibration, model_inputs,
                            read_cache, score, stream_accuracy, top1, write_cache)
from edgec.backends import backend_for
from edgec.backends.fp16 import to_fp16 as fp16_model
from edgec.backends.int8 import int8_model
from edgec.cluster import load_cluster
from edgec.errors import EdgecError

from conftest import TRIO

DIGITS = Path(__file__).resolve().parent.parent / "samples" / "digits"
SPEC = [InputSpec("image", "float32", (1, 1, 8, 8))]
_TRIO = load_cluster(TRIO)
CPU = backend_for(_TRIO.devices["rpi4"], "cpu").emulate  # int8 as the Pi's ONNX Runtime runs it
GPU = backend_for(_TRIO.devices["nano"], "gpu").emulate  # fp16 as the Nano's TensorRT stores it


def run(model, variant: str, key: str = "all") -> StageRun:
    return StageRun(model, variant, key, GPU if variant == "fp16" else CPU)


@pytest.fixture(scope="module")
def cnn() -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(onnx.load(DIGITS / "digits_cnn.onnx"))


@pytest.fixture(scope="module")
def test_split(cnn) -> Calibration:
    return load_calibration(DIGITS / "digits_test.npz", model_inputs(cnn), classes_of(cnn))


def _npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, **arrays)
    return path


def test_reads_frames_and_labels(test_split) -> None:
    assert test_split.count == 360 and test_split.metric == "top1"
    assert test_split.frame(0)["image"].shape == (1, 1, 8, 8) and len(test_split.sha256) == 64


@pytest.mark.parametrize("arrays, needle", [
    ({"img": np.zeros((4, 1, 1, 8, 8), np.float32)}, "array 'img' is not a model input"),
    ({}, "no array named 'image'"),
    ({"image": np.zeros((4, 1, 8, 8), np.float32)}, "expected N x [1, 1, 8, 8]"),
    ({"image": np.zeros((4, 1, 1, 8, 8), np.float64)}, "'image' is float64, the model's input is float32"),
    ({"image": np.zeros((4, 1, 1, 8, 8), np.float32), "labels": np.array([0, 1, 2, 10])}, "class 10, outside 0..9"),
    ({"image": np.zeros((4, 1, 1, 8, 8), np.float32), "labels": np.array([0, 1, 2])}, "expected 4 integer class"),
    ({"image": np.zeros((4, 1, 1, 8, 8), np.float32), "labels": np.zeros(4, np.float32)}, "integer class indices"),
])
def test_bad_calibration_files_are_named(tmp_path, arrays, needle) -> None:
    path = _npz(tmp_path, **arrays)
    with pytest.raises(EdgecError, match=None) as err:
        load_calibration(path, SPEC, 10)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_not_an_npz(tmp_path) -> None:
    path = tmp_path / "calib.npz"
    path.write_text("frames\n")
    with pytest.raises(EdgecError, match="cannot read calibration data as .npz"):
        load_calibration(path, SPEC, 10)


def test_scores_top1_against_labels_or_agreement() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
    got = np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]], np.float32)
    assert list(top1(got)) == [1, 1, 1, 0]
    assert score(ref, got, None).accuracy == 0.75  # agreement with the reference's top-1
    assert score(ref, got, np.array([1, 1, 0, 0])).accuracy == 0.75  # against labels
    noise = float(((got - ref) ** 2).sum())
    assert score(ref, got, None).sqnr_db == pytest.approx(10 * np.log10(float((ref ** 2).sum()) / noise))
    assert score(ref, ref, None).sqnr_db == float("inf")


def test_stream_accuracy_is_the_dealing_weighted_mean() -> None:
    assert stream_accuracy([(1.0, 0.9)]) == 0.9
    assert stream_accuracy([(0.75, 0.96), (0.25, 0.80)]) == pytest.approx(0.92)
    with pytest.raises(ValueError):
        stream_accuracy([(0.5, 0.9), (0.4, 0.8)])


def test_int8_is_real_static_qdq_and_stays_accurate(cnn, test_split) -> None:
    feeds = [test_split.frame(i) for i in range(64)]
    q = int8_model(cnn, feeds)
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in q.graph.initializer)
    m = Measurer(cnn, test_split, "x")
    fp32, int8 = (m.measure([run(cnn, v)]) for v in ("fp32", "int8"))
    assert fp32.accuracy > 0.97 and abs(int8.accuracy - fp32.accuracy) <= 0.02
    assert 20 < int8.sqnr_db < 80  # quantized for real: not exact, not broken


def test_fp16_stores_every_weight_in_half_and_keeps_fp32_io(cnn, test_split) -> None:
    half = fp16_model(cnn)
    floats = [t for t in half.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert floats and all(t.data_type == onnx.TensorProto.FLOAT16 for t in floats)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    m = Measurer(cnn, test_split, "x")
    s = m.measure([run(cnn, "fp16")])
    assert 40 < s.sqnr_db < 120 and s.accuracy == m.measure([run(cnn, "fp32")]).accuracy


def test_onnxconverter_common_breaks_on_a_relayed_output() -> None:
    """Why fp16 is not onnxconverter-common's conversion: a stage output also read inside the stage."""
    float16 = pytest.importorskip("onnxconverter_common.float16")
    import onnxruntime as ort

    m = onnx.parser.parse_model('<ir_version: 8, opset_import: ["" : 13]> g (float[1,8] x) => (float[1,8] a, '
                                'float[1,8] b) { a = Relu(x)\n b = Neg(a) }')
    with pytest.raises(Exception, match="Type"):
        ort.InferenceSession(float16.convert_float_to_float16(m, keep_io_types=True).SerializeToString(),
                             providers=["CPUExecutionProvider"])
    ort.InferenceSession(fp16_model(m).SerializeToString(), providers=["CPUExecutionProvider"])


def test_measurements_are_cached_by_what_determines_them(cnn, test_split, tmp_path) -> None:
    m = Measurer(cnn, test_split, "src")
    first = m.measure([run(cnn, "int8")])
    m.measure([run(cnn, "int8")])
    assert m.runs == 1
    write_cache(tmp_path, m.cache)
    again = Measurer(cnn, test_split, "src", cache=read_cache(tmp_path))
    assert again.measure([run(cnn, "int8")]) == first and again.runs == 0
    other = Calibration(test_split.path, "0" * 64, test_split.frames, test_split.labels)
    moved = Measurer(cnn, other, "src", cache=read_cache(tmp_path))
    moved.measure([run(cnn, "int8")])
    assert moved.runs == 1  # other calibration data: measured again
    (tmp_path / "accuracy-cache.json").write_text("{not json")
    assert read_cache(tmp_path) == {}
