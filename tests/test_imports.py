"""What the package imports: read-only commands start without torch, and no module of harness/ imports,
directly or through others, one that imports it back (at module level or inside a function)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "harness"
HEAVY = ("torch", "scipy", "seaborn")

# Run the command in a fresh interpreter, then print which heavy modules it loaded.
PROBE = """
import sys
from harness.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("LOADED", ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def loaded_by(args: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED")]
    assert line, out.stdout + out.stderr
    return [m for m in line[-1].split(" ", 1)[1].split(",") if m]


@pytest.mark.parametrize("args", [["--help"], ["show", "--help"], ["compare", "--help"], ["run", "--help"],
                                  ["baseline", "--help"]])
def test_help_imports_no_torch_scipy_or_seaborn(args):
    assert loaded_by(args) == []


def test_list_imports_no_torch_scipy_or_seaborn():
    # Claims are parsed by the light claim_specs module; evaluating them (pandas, scipy) is the report's job.
    assert loaded_by(["list", "suites/smoke.yaml"]) == []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every harness module ``path`` imports anywhere in its body, including inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            # `from . import claims` names a module; `from . import __version__` names the package's value.
            found |= {f"{source}.{alias.name}" for alias in node.names}
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "harness.analysis.speed_compare" in graph["harness.results.speed_baselines"]  # module level
    assert "harness.report.build" in graph["harness.commands.report"]  # inside main()
    assert "harness.spec.config" in graph["harness.commands.cell"]  # `from ..config import`


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_inside_harness():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)
