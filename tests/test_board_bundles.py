"""Each board's bundle as its README says to use it: the runtime wheel, a Dockerfile per board, launchers
that pass the deployment, and a deployment from the cluster file's hosts and ports that can be edited."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgec
from edgec.runtime.deployment import load_deployment
from edgec.runtime.pipeline import read_pipeline

REPO = Path(__file__).resolve().parent.parent
BOARDS = ("xu4", "rpi4", "nano")


def _free_base(n=10):
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + 3 * n < 65000 and all(_free(p) for p in range(base, base + 3 * n)):
            return base
    raise AssertionError("no free ports")


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("boards")
    subprocess.run([sys.executable, str(REPO / "samples/make_sample_model.py"), str(folder / "model.onnx")],
                   check=True, capture_output=True)
    spec = json.loads((REPO / "samples/clusters/edge-trio.json").read_text())
    base = _free_base()
    for k, device in enumerate(spec["devices"]):
        device.update(host="127.0.0.1", port=base + 10 * k)
    (folder / "cluster.json").write_text(json.dumps(spec))
    out = edgec.compile(folder / "model.onnx", folder / "cluster.json", folder / "out").out_dir
    return out, base


def test_the_deployment_comes_from_the_cluster_files_hosts_and_ports(trio):
    out, base = trio
    dep = json.loads((out / "deployment.json").read_text())
    assert dep["devices"]["xu4"] == {"host": "127.0.0.1", "port": base}
    assert dep["devices"]["nano"]["port"] == base + 20
    plan = read_pipeline(str(out))
    assert load_deployment(None, plan).status(plan, "rpi4") == f"tcp://127.0.0.1:{base + 10}"


def test_a_cluster_port_that_overlaps_another_device_is_refused(tmp_path):
    spec = json.loads((REPO / "samples/clusters/edge-trio.json").read_text())
    for device in spec["devices"]:
        device.update(host="127.0.0.1", port=6000)
    (tmp_path / "cluster.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, str(REPO / "samples/make_sample_model.py"), str(tmp_path / "m.onnx")],
                   check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "compile", str(tmp_path / "m.onnx"), "-t",
                           str(tmp_path / "cluster.json"), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "port 600" in proc.stderr and "is also used by" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("board", BOARDS)
def test_each_board_has_a_dockerfile_whose_inputs_are_in_the_bundle(trio, board):
    out, _ = trio
    text = (out / board / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and {"xu4": "arm32v7/", "rpi4": "arm64v8/", "nano": "nvcr.io/nvidia/l4t-base:r32.7.1"}[board] \
        in froms[-1]
    for line in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for src in line.split():
            if "onnxruntime_gpu" in src:  # NVIDIA's wheel: the README says to download it beside the Dockerfile
                assert "Jetson Zoo" in text or "Jetson_Zoo" in text
                continue
            assert (out / src).is_file(), f"{board}/Dockerfile copies {src}, which the bundle lacks"
    assert f'CMD ["sh", "{board}/run_{board}.sh"]' in text


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_every_bundle_script_passes_shellcheck(trio):
    out, _ = trio
    scripts = sorted(out.glob("*/*.sh"))
    assert scripts
    proc = subprocess.run(["shellcheck", "-s", "sh", *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_readmes_name_the_wheel_and_the_deployment(trio):
    out, _ = trio
    wheel = next(out.glob("edgec_runtime-*.whl")).name
    for board in BOARDS:
        readme = (out / board / "README.md").read_text()
        assert wheel in readme and "deployment.json" in readme and "## Network" in readme
        assert "pip install --no-deps <edgec source" not in readme
    assert "build one from ONNX Runtime's sources" in (out / "xu4" / "README.md").read_text()
    assert "onnxruntime_gpu-1.11.0-cp36" in (out / "nano" / "README.md").read_text()


def _shims(folder: Path) -> dict:
    """PATH with python3 = this interpreter (the runtime installed) and a taskset that runs its command
    unpinned (the launchers name the boards' cores, which this machine may not have)."""
    folder.mkdir(exist_ok=True)
    (folder / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (folder / "python3").chmod(0o755)
    (folder / "taskset").write_text('#!/bin/sh\nshift 2\nexec "$@"\n')
    (folder / "taskset").chmod(0o755)
    return dict(os.environ, PATH=f"{folder}:{os.environ['PATH']}")


def test_the_readme_commands_serve_and_run_the_bundle_here(trio, tmp_path):
    """The launchers as the READMEs give them, then `run` with the bundle's deployment; the Nano's launcher
    refuses without the TensorRT provider, so its stage is served as its launcher would exec it."""
    out, _ = trio
    env = _shims(tmp_path / "bin")
    nano = subprocess.run(["sh", "nano/run_nano.sh"], cwd=out, env=env, capture_output=True, text=True, timeout=120)
    assert nano.returncode == 2 and "no TensorRT execution provider" in nano.stderr
    procs = [subprocess.Popen(["sh", f"{b}/run_{b}.sh", "--no-pin"], cwd=out, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for b in ("xu4", "rpi4")]
    procs.append(subprocess.Popen([sys.executable, "-m", "edgec.runtime", "serve", ".", "--device", "nano",
                                   "--deployment", "deployment.json", "--no-pin"], cwd=out,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    try:
        run = subprocess.run(["python3", "-m", "edgec.runtime", "run", ".", "--deployment", "deployment.json",
                              "--frames", "4", "--timeout", "60"], cwd=out, env=env, capture_output=True, text=True,
                             timeout=300)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=30)[1] for p in procs]
    assert run.returncode == 0, run.stdout + run.stderr + "\n".join(errs)
    assert run.stdout.startswith("4 of 4 frames")
    assert all("WARNING" in e and "without CURVE keys" in e for e in errs)


@pytest.mark.parametrize("entry, message", [({"port": 80}, "port"), ({"port": "5550"}, "port"),
                                            ({"bind": 7}, "bind")])
def test_a_bad_host_entry_in_the_cluster_file_is_one_line(tmp_path, entry, message):
    spec = json.loads((REPO / "samples/clusters/edge-trio.json").read_text())
    spec["devices"][0].update(entry)
    (tmp_path / "cluster.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, str(REPO / "samples/make_sample_model.py"), str(tmp_path / "m.onnx")],
                   check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "compile", str(tmp_path / "m.onnx"), "-t",
                           str(tmp_path / "cluster.json"), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("edgec: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_an_edited_deployment_moves_a_device_without_touching_the_seal(trio, tmp_path):
    out, base = trio
    import shutil as _shutil

    copy = tmp_path / "out"
    _shutil.copytree(out, copy)
    dep = json.loads((copy / "deployment.json").read_text())
    dep["devices"]["rpi4"].update(host="10.0.0.12", bind="0.0.0.0")
    (copy / "deployment.json").write_text(json.dumps(dep))
    plan = read_pipeline(str(copy))
    moved = load_deployment(None, plan)
    assert moved.status(plan, "rpi4") == f"tcp://10.0.0.12:{base + 10}"
    assert moved.status(plan, "rpi4", bind=True) == f"tcp://*:{base + 10}"
    from edgec.runtime.trust import check_manifest_digest

    check_manifest_digest(str(copy))  # the deployment is not sealed: editing it is how a plan is moved
    del dep["devices"]["nano"]
    (copy / "deployment.json").write_text(json.dumps(dep))
    proc = subprocess.run([sys.executable, "-m", "edgec.runtime", "run", str(copy), "--frames", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "deployment.json: $.devices: no entry for device nano" in proc.stderr
