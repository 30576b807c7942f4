"""The board runtime installs alone (the edgec-runtime wheel in every bundle), keeps to Python 3.6 by a
syntax-floor checker, and serves a compiled plan end to end in a fresh environment without the compiler,
on this Python and on the oldest one here (3.6, JetPack 4.6's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgec import runtime_wheel
from edgec.runtime.pipeline import read_pipeline

from conftest import MULTI, save_text_model
from test_runtime_local import assert_close, compile_for_hosts, expected_outputs

REPO = Path(__file__).resolve().parent.parent
TOOLCHAIN = REPO / "toolchain"
BOARD_CODE = [TOOLCHAIN / n for n in runtime_wheel.SHARED] + [TOOLCHAIN / "runtime"]
PY36 = Path(os.environ.get("EDGEC_PY36", "/root/.pyenv/versions/3.6.15/bin/python3.6"))
VERMIN = [sys.executable, "-c", "import sys; from vermin.main import main; sys.exit(main())"]
COMPILER_PACKAGES = ("onnx", "onnxsim", "onnx_graphsurgeon", "networkx", "jsonschema", "typer", "rich")


def test_the_board_code_keeps_to_python_3_6_by_vermin():
    """time.thread_time (3.7) is backported by edgec.runtime.clocks; dataclasses by its PyPI backport."""
    proc = subprocess.run(VERMIN + ["-t=3.6-", "--violations", "--no-tips",
                           "--backport", "dataclasses", "--exclude", "time.thread_time",
                           *map(str, BOARD_CODE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vermin_catches_what_3_6_lacks(tmp_path):
    """The control: the same check refuses 3.7+ code."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom __future__ import annotations\nprint(time.thread_time())\n")
    proc = subprocess.run(VERMIN + ["-t=3.6-", "--violations", "--no-tips", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0


def test_the_wheel_holds_the_runtime_and_nothing_of_the_compiler(tmp_path):
    data = runtime_wheel.build()
    assert data == runtime_wheel.build()  # reproducible: a bundle's digests depend on content only
    names = zipfile.ZipFile(__import__("io").BytesIO(data)).namelist()
    assert "edgec/runtime/device.py" in names and "edgec/manifest.py" in names
    assert not [n for n in names if n.startswith("edgec/") and n.count("/") == 1 and
                n.split("/")[1] not in runtime_wheel.SHARED]
    meta = zipfile.ZipFile(__import__("io").BytesIO(data)).read(
        f"{runtime_wheel.NAME}-{runtime_wheel.__version__}.dist-info/METADATA").decode()
    assert "Requires-Python: >=3.6" in meta and 'Requires-Dist: onnxruntime>=1.10; extra == "cpu"' in meta


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("installed")
    # opset 13: JetPack 4.6's ONNX Runtime (1.10, and the 1.10 wheel for Python 3.6) loads up to opset 15
    model = save_text_model(MULTI.replace('"" : 17', '"" : 13'), folder / "multi.onnx")
    out = compile_for_hosts(model, folder, [0, 1, 0])
    return model, out


def _venv(python: str, folder: Path) -> Path:
    subprocess.run([python, "-m", "venv", str(folder)], check=True, capture_output=True, timeout=300)
    return folder / "bin" / "python"


def _pip(py: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-m", "pip", "install", "-q", *args], capture_output=True, text=True, timeout=900)


def _serve_end_to_end(py: Path, model, out, tmp_path):
    for module in COMPILER_PACKAGES:
        found = subprocess.run([str(py), "-c", f"import {module}"], capture_output=True, timeout=120)
        assert found.returncode != 0, f"{module} is installed: the runtime environment should not have it"
    result = tmp_path / "y.npz"
    proc = subprocess.run([str(py), "-m", "edgec.runtime", "run", str(out), "--local", "--frames", "3", "--no-pin",
                           "--output", str(result)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pipeline = read_pipeline(str(out))
    from edgec.runtime.frames import random_frames

    frames = random_frames(pipeline.inputs, 1, 0) * 3
    expected = expected_outputs(model, pipeline, frames)
    with np.load(result) as got:
        assert list(got["seq"]) == [0, 1, 2]
        for k, exp in enumerate(expected):
            assert_close(exp, {n: got[n][k] for n in exp})


def test_the_wheel_alone_serves_a_compiled_plan_in_a_fresh_venv(plan, tmp_path):
    model, out = plan
    wheel = out / runtime_wheel.WHEEL_NAME
    assert wheel.is_file()
    py = _venv(sys.executable, tmp_path / "venv")
    proc = _pip(py, f"{wheel}[cpu]")
    assert proc.returncode == 0, proc.stderr
    _serve_end_to_end(py, model, out, tmp_path)


@pytest.mark.skipif(not PY36.is_file(), reason=f"no Python 3.6 at {PY36} (set EDGEC_PY36)")
def test_on_python_3_6_the_runtime_refuses_hostile_input_and_serves_a_plan(plan, tmp_path):
    model, out = plan
    py = _venv(str(PY36), tmp_path / "venv36")
    # 3.6's bundled pip predates manylinux2014 wheels: the last pip for 3.6 first
    for args in (["pip==21.3.1"], [f"{out / runtime_wheel.WHEEL_NAME}[cpu]"]):
        proc = _pip(py, *args)
        if proc.returncode != 0:
            pytest.skip(f"cannot install {' '.join(args)} for Python 3.6 here: {proc.stderr.strip()[-300:]}")
    checks = subprocess.run([str(py), "-c", PY36_CHECKS, str(out)], capture_output=True, text=True, timeout=300)
    assert checks.returncode == 0 and checks.stdout.strip().endswith("ok"), checks.stdout + checks.stderr
    _serve_end_to_end(py, model, out, tmp_path)


PY36_CHECKS = r'''
import sys, json
from edgec.runtime import wire, limits, trust
from edgec.runtime.pipeline import read_pipeline
from edgec.errors import EdgecError
assert sys.version_info[:2] == (3, 6), sys.version
def header(**kw):
    h = {"v": 1, "kind": "data", "run": "r", "seq": 0, "tensors": []}
    h.update(kw)
    return json.dumps(h).encode()
for frames in ([header(tensors=[{"name": "x", "dtype": "float32", "shape": [2**32, 2**32]}]), b""],
               [header(tensors=[{"name": "x", "dtype": "float32", "shape": [2**70]}]), b""],
               [b'{"a":' * 5000 + b"1" + b"}" * 5000], [header(kind="end", stats=5)]):
    try:
        wire.decode(frames)
        raise SystemExit("accepted a hostile message")
    except wire.WireError:
        pass
plan = read_pipeline(sys.argv[1])
trust.check_manifest_digest(sys.argv[1])
for st in plan.stages:
    trust.check_session(st.session, sys.argv[1], st.name)
try:
    trust.check_session({"optimized_model_filepath": "/tmp/x"}, sys.argv[1], "s")
    raise SystemExit("allowed a session option outside the allow-list")
except EdgecError:
    pass
print("ok")
'''
