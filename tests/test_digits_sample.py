"""The committed digits CNN and its width variants: real classifiers, scored on the held-out test split."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

DIGITS = Path(__file__).resolve().parent.parent / "samples" / "digits"


def _top1(model: str, data: dict) -> float:
    sess = ort.InferenceSession(str(DIGITS / model), providers=["CPUExecutionProvider"])
    pred = np.array([sess.run(None, {"image": x})[0].argmax() for x in data["image"]])
    return float((pred == data["labels"]).mean())


@pytest.mark.parametrize("model, floor", [("digits_cnn.onnx", 0.97), ("digits_cnn_w50.onnx", 0.93),
                                          ("digits_cnn_w25.onnx", 0.85)])
def test_committed_network_classifies_the_test_split(model: str, floor: float) -> None:
    data = dict(np.load(DIGITS / "digits_test.npz"))
    assert data["image"].shape == (360, 1, 1, 8, 8) and set(np.unique(data["labels"])) == set(range(10))
    assert _top1(model, data) >= floor  # chance is 0.10
    assert (DIGITS / model).stat().st_size < 2 * 1024 * 1024


def test_width_variants_keep_the_interface_and_shrink() -> None:
    models = [onnx.load(DIGITS / m) for m in ("digits_cnn.onnx", "digits_cnn_w50.onnx", "digits_cnn_w25.onnx")]
    sig = lambda m: [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in (*m.graph.input, *m.graph.output)]
    assert sig(models[0]) == sig(models[1]) == sig(models[2])
    sizes = [sum(int(np.prod(t.dims)) for t in m.graph.initializer) for m in models]
    assert sizes[0] > sizes[1] > sizes[2]


def test_splits_are_disjoint() -> None:
    val, test = (np.load(DIGITS / f) for f in ("digits_val.npz", "digits_test.npz"))
    a = {x.tobytes() for x in val["image"]}
    b = {x.tobytes() for x in test["image"]}
    assert len(a & b) <= 5  # the digits set holds a few duplicate images; the splits are drawn disjoint by index


def test_training_learns(tmp_path: Path) -> None:
    """The numpy training really fits: a short run on the train split beats chance by far on the test split."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("mk", DIGITS.parent / "make_digits_cnn.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    splits = mk.load_splits()
    mk.EPOCHS = 3
    p = mk.train(0.25, *splits["train"])
    x, y = splits["test"]
    assert (mk.forward(p, x).argmax(1) == y).mean() > 0.5
    onnx.save(mk.to_onnx(p, "t"), tmp_path / "t.onnx")
    sess = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"image": x[:1]})[0], mk.forward(p, x[:1]), rtol=1e-4, atol=1e-5)
