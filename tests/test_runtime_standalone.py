"""The board runtime stands alone: it imports nothing of the compiler, runs with the compiler's packages
absent, keeps to the boards' Python, and answers bad input with one `edgec:` line.

A board has numpy, pyzmq and onnxruntime (DESIGN.md, "The boards' software"); the Jetson Nano's
JetPack 4.6 has Python 3.6, so the runtime and the modules it shares with the compiler keep to
3.6 syntax.
"""

from __future__ import annotations

import ast
import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.runtime.cli import main as runtime_main
from edgec.runtime.frames import random_frames
from edgec.runtime.pipeline import read_pipeline

from conftest import MULTI, save_text_model
from test_runtime_local import assert_close, compile_for_hosts, expected_outputs

REPO = Path(__file__).resolve().parent.parent
TOOLCHAIN = REPO / "toolchain"
RUNTIME = TOOLCHAIN / "runtime"
BLOCKED = ("jsonschema", "typer", "rich", "onnx", "onnx_graphsurgeon", "onnxsim", "networkx")
# what the runtime may import of edgec besides itself
SHARED = ("edgec", "edgec.errors", "edgec.manifest", "edgec.jsonfile")
# Python 3.6 syntax: what the runtime shares with the compiler, and every runtime module
PY36 = [TOOLCHAIN / n for n in ("__init__.py", "errors.py", "jsonfile.py", "manifest.py")] + \
       sorted(RUNTIME.glob("*.py"))
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def _edgec_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every edgec import in the file, `from edgec import x` as edgec.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "edgec"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}:{node.lineno}: relative import"
            if node.module == "edgec":
                found += [(node.lineno, f"edgec.{a.name}") for a in node.names]
            elif node.module and node.module.split(".")[0] == "edgec":
                found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("path", sorted(RUNTIME.glob("*.py")), ids=lambda p: p.name)
def test_runtime_imports_nothing_of_the_compiler(path):
    for line, module in _edgec_imports(path):
        assert module in SHARED or module == "edgec.runtime" or module.startswith("edgec.runtime."), \
            f"{path.name}:{line}: imports {module}; the runtime may use only {', '.join(SHARED)} and edgec.runtime"


@pytest.mark.parametrize("path", [TOOLCHAIN / n for n in ("__init__.py", "errors.py", "jsonfile.py", "manifest.py")],
                         ids=lambda p: p.name)
def test_what_the_runtime_shares_needs_only_the_standard_library(path):
    for line, module in _edgec_imports(path):
        assert module in SHARED, f"{path.name}:{line}: imports {module}"
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for name in names:
            top = name.split(".")[0]
            assert top == "edgec" or top in sys.stdlib_module_names, f"{path.name}:{node.lineno}: imports {name}"


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside a parameter, return or variable annotation."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        anns = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + [node.args.vararg, node.args.kwarg]
            anns = [a.annotation for a in args if a is not None] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            anns = [node.annotation]
        for ann in anns:
            if ann is not None:
                ids.update(id(n) for n in ast.walk(ann))
    return ids


def _py36_problems(path: Path) -> list[str]:
    """What in the file Python 3.6 cannot run (what ast's feature_version lets through included)."""
    tree = ast.parse(path.read_text(), feature_version=(3, 6))
    in_annotation = _annotation_nodes(tree)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "__future__" and \
                any(a.name == "annotations" for a in node.names):
            problems.append(f"{node.lineno}: from __future__ import annotations (Python 3.7)")
        elif isinstance(node, ast.NamedExpr):
            problems.append(f"{node.lineno}: := (Python 3.8)")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and node.args.posonlyargs:
            problems.append(f"{node.lineno}: positional-only parameters (Python 3.8)")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
                node.value.id in BUILTIN_GENERICS:
            problems.append(f"{node.lineno}: {node.value.id}[...] (Python 3.9; use typing)")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) in in_annotation:
            problems.append(f"{node.lineno}: X | Y in an annotation (Python 3.10; use typing.Union/Optional)")
    return problems


@pytest.mark.parametrize("path", PY36, ids=lambda p: str(p.relative_to(TOOLCHAIN)))
def test_shared_and_new_runtime_modules_keep_to_python_3_6(path):
    assert _py36_problems(path) == []


def test_the_python_3_6_check_catches_what_feature_version_lets_through(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from __future__ import annotations\nfrom typing import Optional\n"
                   "def f(x: int | None, y: list[int]) -> dict[str, int]: ...\n"
                   "z: tuple[int, ...] = ()\n")
    found = sorted(_py36_problems(bad))
    assert len(found) == 5 and found[0].startswith("1: from __future__"), found


def _python36() -> str | None:
    for exe in sorted(glob.glob("/root/.pyenv/versions/3.6*/bin/python3.6")) + ["python3.6"]:
        try:
            proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if proc.returncode == 0 and (proc.stdout + proc.stderr).strip().startswith("Python 3.6"):
            return exe
    return None


PYTHON36 = _python36()
needs_py36 = pytest.mark.skipif(PYTHON36 is None, reason="no Python 3.6 interpreter here")


@needs_py36
def test_python_3_6_compiles_them(tmp_path):
    code = ("import py_compile, sys\n"
            "for k, f in enumerate(sys.argv[2:]):\n"
            "    py_compile.compile(f, cfile='%s/%d.pyc' % (sys.argv[1], k), doraise=True)\n")
    proc = subprocess.run([PYTHON36, "-c", code, str(tmp_path)] + [str(p) for p in PY36],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@needs_py36
def test_python_3_6_reads_a_manifest(tmp_path, plan_dir):
    """Where that Python has `dataclasses` (the PyPI backport on JetPack 4.6), edgec.manifest runs there."""
    if subprocess.run([PYTHON36, "-c", "import dataclasses"], capture_output=True).returncode != 0:
        pytest.skip("this Python 3.6 lacks the dataclasses backport")
    (tmp_path / "edgec").symlink_to(TOOLCHAIN)  # the package without installing it
    code = ("import sys; from edgec.manifest import read_manifest; m = read_manifest(sys.argv[1]); "
            "print(len(m.stages), sorted(sys.modules.keys() & {'numpy', 'onnx', 'jsonschema'}))")
    proc = subprocess.run([PYTHON36, "-c", code, str(plan_dir)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[1:] == ["[]"]


# --- running with the compiler's packages absent ------------------------------------------------------------

SITECUSTOMIZE = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError("blocked: a board has no " + name, name=name)

sys.meta_path.insert(0, _Block())
"""


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("standalone")
    model = save_text_model(MULTI, tmp / "multi.onnx")
    out = compile_for_hosts(model, tmp, [0, 1])
    return out


@pytest.fixture()
def board_env(tmp_path):
    """Environment in which every Python process (device processes included) finds the packages blocked."""
    folder = tmp_path / "board"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def test_the_block_is_in_place(board_env):
    for name in BLOCKED:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True,
                              env=board_env, timeout=60)
        assert proc.returncode != 0 and "blocked: a board has no" in proc.stderr, name


def test_every_runtime_module_imports_without_the_compiler_packages(board_env):
    code = ("import importlib, pkgutil, sys, edgec.runtime as r\n"
            "names = sorted(m.name for m in pkgutil.iter_modules(r.__path__) if m.name != '__main__')\n"
            "for n in names: importlib.import_module('edgec.runtime.' + n)\n"
            "import edgec.manifest, edgec.jsonfile\n"
            f"assert not [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}]\n"
            "print(' '.join(names))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=board_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = sorted(p.stem for p in RUNTIME.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert proc.stdout.split() == expected


def test_a_plan_runs_end_to_end_without_the_compiler_packages(plan_dir, board_env, tmp_path):
    """`python -m edgec.runtime run --local`: a serving process per device, every one of them blocked."""
    plan = read_pipeline(plan_dir)
    assert plan.devices == ["d0", "d1"]
    frames = random_frames(plan.inputs, 3, seed=7)
    np.savez(tmp_path / "x.npz", **{s.name: np.stack([f[s.name] for f in frames]) for s in plan.inputs})
    proc = subprocess.run([sys.executable, "-m", "edgec.runtime", "run", str(plan_dir), "--local", "--frames", "3",
                           "--inputs", str(tmp_path / "x.npz"), "--output", str(tmp_path / "y.npz")],
                          capture_output=True, text=True, env=board_env, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 of 3 frames" in proc.stdout
    expected = expected_outputs(plan_dir.parent / "multi.onnx", plan, frames)  # onnxruntime on the original
    with np.load(tmp_path / "y.npz") as y:
        assert list(y["seq"]) == [0, 1, 2]
        for k in range(3):
            assert_close(expected[k], {n: y[n][k] for n in expected[0]})


# --- bad input to the runtime's command line ------------------------------------------------------------------

def _main(argv, capsys):
    with pytest.raises(SystemExit) as info:
        runtime_main(argv)
    err = capsys.readouterr().err
    return info.value.code, err


@pytest.mark.parametrize("argv, message", [
    (["run", "{tmp}/nowhere", "--local"], "edgec: {tmp}/nowhere: no such folder; pass the folder `edgec compile -o`"),
    (["serve", "{tmp}", "--device", "d0"], "edgec: {tmp}/manifest.json: no manifest.json here"),
    (["serve", "{out}", "--device", "nano"], "edgec: {out}: device 'nano' runs no stage of this plan; "
                                             "devices with stages: d0, d1"),
    (["serve", "{out}"], "edgec: the following arguments are required: --device; see `python -m edgec.runtime "
                         "serve --help`"),
    (["serve", "{out}", "--device", "d0", "--cores", "a,b"], "edgec: --cores a,b: expected core ids like 0,1"),
    (["run", "{out}", "--frames", "0"], "edgec: --frames 0: send at least one frame"),
    (["run", "{out}", "--deployment", "{tmp}/d.json"], "edgec: {tmp}/d.json: deployment file not found"),
    (["run", "{out}", "--local", "--frames", "many"], "edgec: argument --frames: invalid int value: 'many'"),
    (["keys", "{tmp}/nowhere"], "edgec: {tmp}/nowhere: no such folder"),
    (["launch", "{out}"], "edgec: argument {{serve,run,keys}}: invalid choice: 'launch'"),
    ([], "edgec: the following arguments are required: {{serve,run,keys}}; see `python -m edgec.runtime --help`"),
])
def test_bad_input_is_one_edgec_line_and_exit_2(plan_dir, tmp_path, capsys, argv, message):
    fill = {"tmp": str(tmp_path), "out": str(plan_dir)}
    code, err = _main([a.format(**fill) for a in argv], capsys)
    assert code == 2
    assert err.startswith(message.format(**fill)), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_input_in_a_process_of_its_own_shows_no_traceback(plan_dir, board_env):
    for argv in (["run", str(plan_dir / "nowhere")], ["serve", str(plan_dir), "--device", "nano"]):
        proc = subprocess.run([sys.executable, "-m", "edgec.runtime"] + argv, capture_output=True, text=True,
                              env=board_env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("edgec: ") and proc.stderr.count("\n") == 1, proc.stderr


# --- one session builder ------------------------------------------------------------------------------------

def test_only_the_runtime_session_module_builds_onnx_runtime_sessions():
    builders = []
    for folder in ("toolchain", "passes", "backends", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == RUNTIME / "session.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                    if name in ("SessionOptions", "InferenceSession"):
                        builders.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert builders == []
