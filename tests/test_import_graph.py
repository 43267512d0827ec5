"""The package's imports form no cycle, and light entry points stay light."""

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

import synaptorch

PACKAGE = Path(synaptorch.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The modules a module imports, inside functions too (but not under TYPE_CHECKING): a cycle
    through a deferred import is a cycle all the same, hidden until that function runs."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _synaptorch_imports(path: Path, modules: set[str]) -> set[str]:
    found = _imports(path)
    # Importing a.b.c imports its packages a and a.b first.
    closed = set()
    for name in found & modules:
        parts = name.split(".")
        closed.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return closed & modules


def _import_graph() -> nx.DiGraph:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in paths.items():
        graph.add_node(name)
        for target in _synaptorch_imports(path, set(paths)) - {name}:
            if not name.startswith(target + "."):  # a module needs its own package, not a cycle
                graph.add_edge(name, target)
    return graph


def test_imports_have_no_cycle():
    cycles = list(nx.simple_cycles(_import_graph()))
    assert cycles == []


def test_the_checkpoint_format_imports_no_model_and_gpt_nothing_of_bdh():
    graph = _import_graph()
    assert not any(node.startswith("synaptorch.models") for node in nx.descendants(graph, "synaptorch.checkpoint"))
    assert "synaptorch.models.bdh" not in nx.descendants(graph, "synaptorch.models.gpt")


def test_top_level_help_imports_neither_torch_nor_the_models():
    code = (
        "import sys; from synaptorch.cli import main; main(['--help'], standalone_mode=False); "
        "print(sorted(m for m in ('torch', 'numpy', 'synaptorch.models') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().endswith("[]")
