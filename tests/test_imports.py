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


def loaded_by(args: list[str], heavy=HEAVY) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=heavy), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED")]
    assert line, out.stdout + out.stderr
    return [m for m in line[-1].split(" ", 1)[1].split(",") if m]


@pytest.mark.parametrize("args", [["--help"], ["show", "--help"], ["compare", "--help"], ["run", "--help"],
                                  ["baseline", "--help"], ["history", "--help"], ["bisect", "--help"],
                                  ["ab", "--help"]])
def test_help_imports_no_torch_scipy_or_seaborn(args):
    assert loaded_by(args) == []


def test_schema_imports_no_torch_scipy_or_seaborn():
    assert loaded_by(["schema"]) == []


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
    assert "harness.results.speed_measurements" in graph["harness.results.speed_baselines"]  # module level
    assert "harness.report.build" in graph["harness.commands.report"]  # inside main()
    assert "harness.spec.config" in graph["harness.commands.cell"]  # `from ..config import`


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_inside_harness():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


# --- the rooms: which package may import which -------------------------------------------------------------

# From the bottom up; a module may import its own layer and the ones below, never one above (docs/architecture.md).
LAYERS = ("base", "spec", "host", "results", "cell", "analysis", "report", "grid", "commands")
# Top-level modules, placed by what they are: the package's version and errors are the base; a cell's worker
# process runs one cell; the command line sits on top.
TOP_LEVEL = {"harness": "base", "harness.errors": "base", "harness.worker": "cell", "harness.ab_worker": "cell",
             "harness.cli": "commands", "harness.__main__": "commands"}


def layer_of(module: str) -> int:
    name = TOP_LEVEL.get(module) or module.split(".")[1]
    return LAYERS.index(name)


def test_every_module_has_a_layer():
    for module in import_graph():
        assert layer_of(module) >= 0, module


def test_packages_import_only_downward():
    upward = [f"{module} -> {imported}" for module, imports in sorted(import_graph().items())
              for imported in sorted(imports) if layer_of(imported) > layer_of(module)]
    assert upward == []


def test_the_layer_check_sees_an_upward_import():
    assert layer_of("harness.results.tables") < layer_of("harness.analysis.stats")
    assert layer_of("harness.worker") < layer_of("harness.grid.runner")


def package_of(module: str) -> str:
    return module if module.count(".") == 0 or TOP_LEVEL.get(module) else module.split(".")[1]


def private_imports(source: str, module: str) -> list[str]:
    """``from harness.<other package>... import _name`` in ``source`` (the text of ``module``): a private name
    taken across packages."""
    own = package_of(module)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("harness."):
            if package_of(node.module) == own:
                continue
            found += [f"{module}: {node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_private_name_is_imported_across_packages():
    assert [hit for path in sorted(PACKAGE.rglob("*.py"))
            for hit in private_imports(path.read_text(), module_name(path))] == []


def test_the_private_check_sees_one():
    source = ("from harness.spec.suite import _hidden_helper, field_for_axis\n"
              "from harness.report.numbers import _finite\nfrom harness import __version__\n")
    assert private_imports(source, "harness.report.tables") == ["harness.report.tables: harness.spec.suite._hidden_helper"]


def test_no_module_is_over_600_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


# --- read-only commands and the torch-free rooms ------------------------------------------------------------


@pytest.mark.parametrize("args", [["show", "results/example"], ["baseline", "list"],
                                  ["compare", "results/example", "results/example"]])
def test_read_only_commands_import_no_torch(args):
    assert "torch" not in loaded_by(args)


def test_report_renders_without_torch(tmp_path):
    out = tmp_path / "report"
    loaded = loaded_by(["report", "results/example", "--out", str(out)])
    assert "torch" not in loaded
    from harness.report.drawing import drawing_workers

    if drawing_workers():  # the figures were drawn in workers: the main process never imported matplotlib
        assert loaded_by(["report", "results/example", "--out", str(out)], heavy=("matplotlib",)) == []
    assert (out / "index.md").is_file()  # it did render, rather than stop early
    # Most of a second of the report's analysis: its statistics use scipy.special and numpy instead.
    assert loaded_by(["report", "results/example", "--out", str(out)], heavy=("scipy.stats", "statsmodels")) == []


@pytest.mark.parametrize("package", ["spec", "results", "analysis", "report"])
def test_the_rooms_that_read_runs_import_no_torch(package):
    modules = sorted(module_name(p) for p in (PACKAGE / package).rglob("*.py"))
    probe = f"import sys\nfor m in {modules!r}:\n    __import__(m)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
