"""The variants pass through `compile` and `verify`: choice against the floor, measured accuracy, cache, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgec
from edgec.api import AccuracyOptions
from edgec.backends.fp16 import to_fp16
from edgec.errors import EdgecError
from edgec.passes.variants import SAFE_RULE, pareto_front

from conftest import TRIO

DIGITS = Path(__file__).resolve().parent.parent / "samples" / "digits"
CNN = DIGITS / "digits_cnn.onnx"
VAL, TEST = DIGITS / "digits_val.npz", DIGITS / "digits_test.npz"
WIDTHS = {"w50": str(DIGITS / "digits_cnn_w50.onnx"), "w25": str(DIGITS / "digits_cnn_w25.onnx")}
SINGLE_RPI4 = {"name": "one-pi", "devices": [{"name": "rpi4", "type": "raspberry-pi-4"}],
               "network": {"bandwidth_mbps": 940, "latency_ms": 0.15}, "source": "rpi4", "sink": "rpi4"}


def direct_top1(out: Path, frames: Path) -> float:
    """Run the sub-models out/ holds, as the boards would compute them, on the frames; top-1 vs the labels."""
    manifest = json.loads((out / "manifest.json").read_text())
    sessions = []
    for s in manifest["stages"]:
        model = onnx.load(out / s["model"])
        if s["variant"] == "fp16":  # TensorRT builds the fp16 engine from the fp32 sub-model
            model = to_fp16(model)
        sessions.append((ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), s))
    data = np.load(frames)
    hits = 0
    for image, label in zip(data["image"], data["labels"]):
        env = {"image": image}
        for sess, s in sessions:
            outs = [o["name"] for o in s["outputs"]]
            env.update(zip(outs, sess.run(outs, {i["name"]: env[i["name"]] for i in s["inputs"]})))
        hits += int(env["logits"].argmax() == label)
    return hits / len(data["labels"])


@pytest.fixture(scope="module")
def one_pi(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cluster") / "one-pi.json"
    path.write_text(json.dumps(SINGLE_RPI4))
    return path


def test_without_calibration_only_safe_variants_and_the_manifest_says_so(tmp_path) -> None:
    m = edgec.compile(CNN, TRIO, tmp_path / "out").manifest
    assert m.accuracy["rule"] == SAFE_RULE and m.predicted["accuracy"] is None
    assert all(s.variant in ("fp32", "fp16") for s in m.stages)
    assert all(s.variant == "fp32" for s in m.stages if s.backend == "neon")


def test_options_that_need_measurement_refuse_without_calibration(tmp_path) -> None:
    with pytest.raises(EdgecError, match="--accuracy-floor needs measured accuracy"):
        edgec.compile(CNN, TRIO, tmp_path / "out", accuracy=AccuracyOptions(accuracy_floor=0.9))
    assert not (tmp_path / "out").exists()


def test_manifest_accuracy_matches_a_direct_measurement_of_out(tmp_path, one_pi) -> None:
    """Calibrated on the test split, int8 chosen: the manifest's figure is what out/ computes on those frames."""
    out = tmp_path / "out"
    m = edgec.compile(CNN, one_pi, out, accuracy=AccuracyOptions(calibration=TEST, accuracy_floor=0.95)).manifest
    assert [s.variant for s in m.stages] == ["int8"]  # as accurate as fp32 here, and faster
    assert m.stages[0].session["disabled_optimizers"] == ["QDQPropagationTransformer"]  # edgec.backends.int8
    sub = onnx.load(out / m.stages[0].model)
    assert any(n.op_type == "QuantizeLinear" for n in sub.graph.node)
    assert abs(m.predicted["accuracy"] - direct_top1(out, TEST)) <= 0.005
    assert m.stages[0].accuracy == m.predicted["accuracy"]
    report = edgec.verify(out)
    assert report.passed and report.accuracy is not None and report.accuracy.accuracy == m.predicted["accuracy"]
    assert [c.variant for c in report.stages] == ["int8"] and report.stages[0].value >= 20


def test_verify_scores_replicas_by_the_share_of_frames_each_is_dealt(tmp_path, one_pi) -> None:
    """Two replicas that compute differently (the full network and its quarter width): the plan's accuracy is
    the dealing-weighted mean of what each computes, not whichever replica runs last."""
    import hashlib
    import shutil

    from edgec.manifest import read_manifest
    from edgec.runtime.trust import seal
    from edgec.variant_checks import check_accuracy

    out = tmp_path / "out"
    edgec.compile(CNN, one_pi, out, accuracy=AccuracyOptions(calibration=TEST))
    manifest = json.loads((out / "manifest.json").read_text())
    (only,) = manifest["stages"]
    only.update(variant="fp32", session={k: v for k, v in only["session"].items() if k != "disabled_optimizers"})
    shutil.copy(CNN, out / only["model"])
    narrow = json.loads(json.dumps(only))
    narrow.update(name="s0r1", model="rpi4/s0r1.onnx")
    shutil.copy(WIDTHS["w25"], out / narrow["model"])
    for stage, weight in ((only, 0.75), (narrow, 0.25)):
        stage.update(step=0, parallel="replica", weight=weight,
                     sha256=hashlib.sha256((out / stage["model"]).read_bytes()).hexdigest())
    manifest["stages"] = [only, narrow]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    seal(str(out))
    full, quarter = _top1(CNN, TEST), _top1(Path(WIDTHS["w25"]), TEST)
    assert full - quarter > 0.02  # the two replicas differ, so which is counted matters
    got = check_accuracy(out, read_manifest(str(out)), str(TEST)).accuracy
    assert got == pytest.approx(0.75 * full + 0.25 * quarter, abs=1e-9)


def _top1(model: Path, frames: Path) -> float:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    data = np.load(frames)
    return float(np.mean([sess.run(None, {"image": x})[0].argmax() == y for x, y in zip(data["image"], data["labels"])]))


def test_a_stage_with_too_little_dense_work_for_int8_runs_fp32(tmp_path, one_pi) -> None:
    """The quarter-width digits network is under edgec.backends.int8.MIN_INT8_MACS: its int8 candidate is the fp32
    plan, predicted as fp32, so no int8 plan is on the front."""
    m = edgec.compile(WIDTHS["w25"], one_pi, tmp_path / "out", accuracy=AccuracyOptions(calibration=VAL)).manifest
    assert [s.variant for s in m.stages] == ["fp32"]
    assert len(m.accuracy["front"]) == 1 and m.accuracy["front"][0]["plan"].endswith(":fp32")
    fp32 = edgec.compile(WIDTHS["w25"], one_pi, tmp_path / "plain").manifest
    assert m.predicted["throughput_fps"] == pytest.approx(fp32.predicted["throughput_fps"])


def test_the_floor_trades_accuracy_for_speed(tmp_path, one_pi) -> None:
    """Higher floors give more accurate, never faster plans; each plan reaches its floor; the front is honest."""
    results = []
    for floor in (0.90, 0.95, 0.99):
        m = edgec.compile(CNN, one_pi, tmp_path / f"out{floor}", accuracy=AccuracyOptions(
            calibration=VAL, accuracy_floor=floor, variants=WIDTHS)).manifest
        assert m.predicted["accuracy"] >= floor
        results.append((m.predicted["accuracy"], m.predicted["throughput_fps"], m.accuracy))
    assert results[0][1] >= results[1][1] >= results[2][1]
    assert results[0][1] > results[2][1]  # a narrower network is taken at the lowest floor
    assert results[0][2]["source"]["name"] == "w25" and results[2][2]["source"]["name"] != "w25"
    for floor, (_, fps, accuracy) in zip((0.90, 0.95, 0.99), results):  # each the fastest plan reaching its floor
        feasible = [p for p in accuracy["front"] if p["accuracy"] >= floor]
        assert fps == pytest.approx(max(p["throughput_fps"] for p in feasible), rel=1e-3)
    assert edgec.verify(tmp_path / "out0.9").passed  # a user variant's plan checks against its own source


def test_min_fps_takes_the_most_accurate_plan_fast_enough(tmp_path, one_pi) -> None:
    base = edgec.compile(CNN, one_pi, tmp_path / "a", accuracy=AccuracyOptions(calibration=VAL, variants=WIDTHS))
    front = base.manifest.accuracy["front"]
    target = sorted(p["throughput_fps"] for p in front)[len(front) // 2] - 0.01  # the front rounds to 1e-3
    m = edgec.compile(CNN, one_pi, tmp_path / "b", min_fps=target, accuracy=AccuracyOptions(
        calibration=VAL, variants=WIDTHS)).manifest
    best = max(p["accuracy"] for p in front if p["throughput_fps"] >= target)
    assert m.predicted["throughput_fps"] >= target - 1e-6 and m.predicted["accuracy"] == best


def test_a_recompile_reuses_the_measurements(tmp_path, one_pi) -> None:
    opts = AccuracyOptions(calibration=VAL, variants=WIDTHS)
    first = edgec.compile(CNN, one_pi, tmp_path / "out", accuracy=opts).manifest
    again = edgec.compile(CNN, one_pi, tmp_path / "out", accuracy=opts).manifest
    assert first.accuracy["measured_now"] > 0 and again.accuracy["measured_now"] == 0
    assert again.predicted == first.predicted
    other = edgec.compile(CNN, one_pi, tmp_path / "out", accuracy=AccuracyOptions(calibration=TEST)).manifest
    assert other.accuracy["measured_now"] > 0


def test_pareto_front_drops_dominated_configurations() -> None:
    from types import SimpleNamespace as NS
    from edgec.passes.variants import Config

    def cfg(acc, fps):
        c = Config("", {}, NS(prediction=NS(throughput_fps=fps, latency_ms=1000 / fps)))
        c.accuracy = acc
        return c
    configs = [cfg(0.99, 100), cfg(0.95, 150), cfg(0.94, 140), cfg(0.90, 200), cfg(0.99, 90)]
    assert [(c.accuracy, c.fps) for c in pareto_front(configs)] == [(0.90, 200), (0.95, 150), (0.99, 100)]


# -- bad input: one line, exit 2, no out/ ---------------------------------------------------------------------


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgec.cli", *map(str, args)], capture_output=True, text=True)


def _fails(tmp_path: Path, *extra, needles=(), model=CNN, cluster=TRIO) -> None:
    out = tmp_path / "out"
    proc = _cli("compile", model, "-t", cluster, "-o", out, *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: ") and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


@pytest.mark.parametrize("arrays, needles", [
    ({"pixels": np.zeros((3, 1, 1, 8, 8), np.float32)}, ["'pixels' is not a model input", "image"]),
    ({"image": np.zeros((3, 1, 8, 8), np.float32)}, ["'image' has shape [3, 1, 8, 8]", "N x [1, 1, 8, 8]"]),
    ({"image": np.zeros((3, 1, 1, 8, 8), np.float16)}, ["'image' is float16", "float32"]),
    ({"image": np.zeros((3, 1, 1, 8, 8), np.float32), "labels": np.array([1, 12, 3])},
     ["class 12, outside 0..9"]),
])
def test_bad_calibration_data(tmp_path, arrays, needles) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, **arrays)
    _fails(tmp_path, "--calib", calib, needles=[str(calib), *needles])


def test_variant_with_other_outputs(tmp_path) -> None:
    model = onnx.load(DIGITS / "digits_cnn_w25.onnx")
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    model.graph.node[-1].input[1] = "wf5"
    wf = next(t for t in model.graph.initializer if t.name == "wf")
    w = onnx.numpy_helper.to_array(wf)[:5]
    model.graph.initializer.append(onnx.numpy_helper.from_array(w, "wf5"))
    bf = next(t for t in model.graph.initializer if t.name == "bf")
    bf.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bf)[:5], "bf"))
    path = tmp_path / "five.onnx"
    onnx.save(model, path)
    _fails(tmp_path, "--calib", VAL, "--variant", f"five={path}",
           needles=["--variant five", "output 'logits' is float32[1, 5], the model's is float32[1, 10]"])


def test_variant_with_other_inputs(tmp_path) -> None:
    model = onnx.load(DIGITS / "digits_cnn_w25.onnx")
    model.graph.input[0].name = "pixels"
    model.graph.node[0].input[0] = "pixels"
    path = tmp_path / "renamed.onnx"
    onnx.save(model, path)
    _fails(tmp_path, "--calib", VAL, "--variant", f"renamed={path}", needles=["input 'image'", "not among"])


def test_floor_no_plan_meets_says_the_best_reachable(tmp_path) -> None:
    _fails(tmp_path, "--calib", VAL, "--accuracy-floor", "1.0", "--variant", f"w25={WIDTHS['w25']}",
           needles=["--accuracy-floor 1", "best reachable accuracy is 0.99"])


def test_variant_option_spelling(tmp_path) -> None:
    _fails(tmp_path, "--calib", VAL, "--variant", "w25", needles=["expected NAME=model.onnx"])
    _fails(tmp_path, "--calib", VAL, "--variant", "int8=x.onnx", needles=["--variant int8=...: a variant name is", "not one of fp16, fp32, int8"])
    _fails(tmp_path, "--calib", VAL, "--variant", "w9=missing.onnx", needles=["missing.onnx", "--variant w9: model not found"])


def _conv_net(path: Path, scale: float) -> Path:
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((32, 3, 3, 3)) * scale).astype(np.float32)
    w2 = (rng.standard_normal((32, 32, 3, 3)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["r"], name="r1"),
         helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1])],
        "net", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32, 64, 64])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


def test_safe_rule_keeps_fp16_only_where_it_holds(tmp_path) -> None:
    """Without data, a GPU stage whose values overflow fp16 (65504) runs fp32; a tame one keeps fp16."""
    nano = tmp_path / "nano.json"
    nano.write_text(json.dumps({"devices": [{"name": "nano", "type": "jetson-nano"}], "source": "nano",
                                "sink": "nano"}))
    tame = edgec.compile(_conv_net(tmp_path / "tame.onnx", 0.3), nano, tmp_path / "a").manifest
    wild = edgec.compile(_conv_net(tmp_path / "wild.onnx", 3e4), nano, tmp_path / "b").manifest
    assert [s.unit for s in tame.stages] == [s.unit for s in wild.stages] == ["gpu"]
    assert tame.stages[0].variant == "fp16" and wild.stages[0].variant == "fp32"
    assert wild.predicted["throughput_fps"] < tame.predicted["throughput_fps"]  # fp32 costs the GPU its 2x
    assert edgec.verify(tmp_path / "b").passed


def test_manifest_accuracy_fields_round_trip_and_are_checked(tmp_path, one_pi) -> None:
    from edgec.manifest import Manifest, read_manifest
    from edgec.manifest_schema import check_against_schema

    out = tmp_path / "out"
    edgec.compile(CNN, one_pi, out, accuracy=AccuracyOptions(calibration=VAL))
    m = read_manifest(out)
    check_against_schema(m)
    data = json.loads((out / "manifest.json").read_text())
    assert data["stages"][0]["accuracy"] == m.stages[0].accuracy and m.accuracy["metric"] == "top1"
    assert Manifest.from_json(m.to_json()).to_json() == data
    data["stages"][0]["accuracy"] = "high"
    with pytest.raises(EdgecError, match=r"stages\[0\]\.accuracy: expected a number"):
        Manifest.from_json(data)


def test_inspect_shows_the_measured_variants(tmp_path, one_pi) -> None:
    out = tmp_path / "out"
    edgec.compile(CNN, one_pi, out, accuracy=AccuracyOptions(calibration=VAL, accuracy_floor=0.95))
    proc = _cli("inspect", out)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "variants: measured top1 0.99" in text and "floor 0.9500" in text and "s0 int8 0.99" in text
