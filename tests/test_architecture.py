"""The package's shape: no import cycles, passes that hold no target names, the cost model in one package."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parent.parent
# import package -> folder, as pyproject.toml's package-dir maps them
PACKAGES = {"edgec": "toolchain", "edgec.runtime": "toolchain/runtime", "edgec.costmodel": "toolchain/costmodel",
            "edgec.passes": "passes", "edgec.passes.partition": "passes/partition",
            "edgec.passes.rewrites": "passes/rewrites", "edgec.backends": "backends"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted((REPO / folder).glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, name: str) -> set[str]:
    """edgec modules `path` imports, at module level or inside functions, outside `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    parent = parent.rsplit(".", 1)[0]
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    known = modules()
    own_packages = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}  # already running when we are
    out: set[str] = set()
    for target in found:
        parts = target.split(".")
        for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            prefix = ".".join(parts[:k])
            if prefix in known and prefix != name and prefix not in own_packages:
                out.add(prefix)
    return out


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for name, path in modules().items():
        graph.add_node(name)
        graph.add_edges_from((name, target) for target in imports(path, name))
    return graph


def test_the_import_graph_is_found():
    graph = import_graph()
    assert graph.has_edge("edgec.passes.cost", "edgec.costmodel.predict")
    assert graph.has_edge("edgec.cluster", "edgec.backends.registry")
    assert graph.has_edge("edgec.cluster", "edgec.backends")  # a package's __init__ runs first
    assert not graph.has_edge("edgec.backends.neon", "edgec.cluster")  # only under TYPE_CHECKING


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles[:5])


def test_the_board_runtime_imports_nothing_from_the_compiler():
    graph = import_graph()
    allowed = {"edgec", "edgec.errors", "edgec.manifest", "edgec.jsonfile"}
    for name in graph:
        if name.startswith("edgec.runtime"):
            reached = nx.descendants(graph, name)
            stray = {m for m in reached if not m.startswith("edgec.runtime") and m not in allowed}
            assert not stray, f"{name} reaches {sorted(stray)}"


@pytest.mark.parametrize("name", sorted(n for n in modules() if n.startswith("edgec.passes")))
def test_passes_hold_no_target_names(name):
    """A pass asks the backend registry; it never imports a target's module or spells a backend's name."""
    from edgec.backends.registry import names

    path = modules()[name]
    assert not {m for m in imports(path, name) if m.startswith("edgec.backends.")} - {
        "edgec.backends.registry", "edgec.backends.base"}
    strings = {n.value for n in ast.walk(ast.parse(path.read_text()))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & set(names())


def test_the_cost_model_is_one_package():
    """What a prediction is made of lives in edgec.costmodel; the compiler's other modules only call it."""
    for stale in ("toolchain/flops.py", "toolchain/profile.py", "toolchain/board_profiles.py",
                  "toolchain/profiler.py", "toolchain/microbench.py", "passes/layout.py"):
        assert not (REPO / stale).exists()
    graph = import_graph()
    costmodel = {n for n in graph if n.startswith("edgec.costmodel")}
    for name in costmodel:
        stray = {m for m in graph.successors(name) if m.startswith("edgec.passes") or m.startswith("edgec.backends")}
        assert not stray, f"{name} imports {sorted(stray)}"
