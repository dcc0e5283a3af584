"""What the package declares: dependency ranges that hold the reference environment's pins, and the corpora
it ships."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.cell.corpus import CORPORA, EMBEDDED_DIR

from conftest import REPO


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_has_a_major_version_bound_and_a_pin_inside_its_range():
    project = _project()["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = _pins()
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} outside {req}"
        if name != "ruff":  # a lint tool: any recent version is fine
            assert any(spec.operator == "<" for spec in req.specifier), f"{req} has no upper bound"


def test_the_fused_extensions_source_is_package_data():
    from harness.cell.fused_rnn import SOURCE

    assert "cell/csrc/*.cpp" in _project()["tool"]["setuptools"]["package-data"]["harness"]
    assert SOURCE.is_file() and SOURCE.parent.name == "csrc" and SOURCE.suffix == ".cpp"


def test_the_named_corpora_are_package_data():
    assert "corpora/*.txt" in _project()["tool"]["setuptools"]["package-data"]["harness"]
    for source in CORPORA.values():
        assert (EMBEDDED_DIR / source.filename).is_file() and source.embedded and source.sha256


def test_ci_tests_every_runtime_dependency_at_its_floor():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / ".ci" / "floors.py")], capture_output=True, text=True, check=True)
    floors = {canonicalize_name(Requirement(line).name): Requirement(line) for line in out.stdout.split()}
    for req in (Requirement(r) for r in _project()["project"]["dependencies"]):
        name = canonicalize_name(req.name)
        if name == "torch":  # tested at CI's pin
            assert name not in floors
            continue
        floor = [spec.version for spec in req.specifier if spec.operator == ">="]
        assert floor, f"{req} has no floor"
        assert str(floors[name].specifier) == f"=={floor[0]}"
    assert "floors.py" in (REPO / ".ci" / "run").read_text()
