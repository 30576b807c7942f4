"""`verify` that can be trusted: Polygraphy's elementwise comparison, steerable inputs, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import edgec
from edgec.manifest import read_manifest
from edgec.verification import DEFAULT_ATOL, DEFAULT_RTOL, compare

from conftest import MULTI, TRIO, save_text_model


def test_an_output_near_zero_passes_on_rounding_alone():
    """A detection head driven by random inputs stays near zero: 1.8e-7 of float reordering is no failure
    (a tolerance relative to the output's range, 7.5e-8 here, said FAIL)."""
    rng = np.random.default_rng(0)
    expected = (rng.random((1, 100, 4)) * 7.5e-8).astype(np.float32)
    got = expected + np.float32(1.8e-7)
    check = compare("boxes", expected, got)
    assert check.passed and check.max_abs_error == pytest.approx(1.8e-7, rel=1e-3)
    assert (check.atol, check.rtol) == (DEFAULT_ATOL, DEFAULT_RTOL) == (1e-5, 1e-4)


def test_each_element_is_held_to_atol_plus_rtol_times_expected():
    expected = np.array([1000.0, 1.0, 0.0], dtype=np.float32)
    ok = expected + np.array([0.09, 1e-4, 9e-6], dtype=np.float32)  # within 1e-5 + 1e-4 x |expected|
    assert compare("y", expected, ok).passed
    bad = expected + np.array([0.0, 2e-4, 0.0], dtype=np.float32)  # the small element is off
    check = compare("y", expected, bad)
    assert not check.passed and check.mismatches == 1 and check.worst_index == (1,)
    assert compare("y", expected, bad, rtol=1e-3).passed


def test_nan_and_shape_mismatch_fail_and_matching_nan_passes():
    expected = np.array([np.nan, 1.0, np.inf], dtype=np.float32)
    assert compare("y", expected, expected.copy()).passed
    assert not compare("y", expected, np.array([0.0, 1.0, np.inf], dtype=np.float32)).passed
    assert not compare("y", np.array([1.0, np.nan]), np.array([1.0, 2.0])).passed
    assert not compare("y", np.zeros((2, 2)), np.zeros((4,))).passed


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify")
    model = save_text_model(MULTI, folder / "multi.onnx")
    edgec.compile(model, TRIO, folder / "out")
    return model, folder / "out"


def test_verify_with_real_inputs_and_with_a_steered_input_range(compiled, tmp_path):
    model, out = compiled
    rng = np.random.default_rng(3)
    npz = tmp_path / "real.npz"
    np.savez(npz, x=rng.random((1, 8), dtype=np.float32), y=rng.random((1, 8), dtype=np.float32))
    report = edgec.verify(out, inputs=npz)
    assert report.passed and {o.name.split(" (via ")[0] for o in report.outputs} == {"mid", "out"}
    replicas = [s.name for s in read_manifest(out).stages if s.parallel == "replica"][1:]
    assert {o.name for o in report.outputs if " (via " in o.name} == \
        {f"{n} (via {r})" for n in ("mid", "out") for r in replicas}  # each replica on a path of its own
    wide = edgec.verify(out, input_range=(-100.0, 100.0), seed=5)
    assert wide.passed and max(o.value_range for o in wide.outputs) > 100  # the range reached the model
    with pytest.raises(edgec.EdgecError, match="expected LOW,HIGH with LOW < HIGH"):
        edgec.verify(out, input_range=(1.0, 1.0))
    with pytest.raises(edgec.EdgecError, match="tolerances must be >= 0"):
        edgec.verify(out, atol=-1.0)


def test_verify_names_a_missing_sub_model_in_one_line(compiled, tmp_path):
    import shutil

    model, out = compiled
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    victim = next(copy.glob("*/s*.onnx"))
    victim.unlink()
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "verify", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"edgec: {victim}: stage ") and "cannot read its sub-model" in proc.stderr


def test_verify_cli_flags(compiled):
    model, out = compiled
    run = [sys.executable, "-m", "edgec.cli", "verify", str(out)]
    proc = subprocess.run(run + ["--input-range", "0,1", "--atol", "1e-6"], capture_output=True, text=True)
    assert proc.returncode == 0 and "<= 1e-06 + 0.0001 x |expected|" in proc.stdout and "0 of 8" in proc.stdout
    proc = subprocess.run(run + ["--input-range", "zero"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--input-range 'zero': expected LOW,HIGH" in proc.stderr
