"""A user's own recurrent module as a cell type (``model.cell: "package.module:factory"``): loaded where the
cell trains, checked before anything is written, trained in a tiny grid, its file's hash recorded."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, TINY
from harness.cell.plugin import build_module, load_factory
from harness.errors import HarnessError
from harness.spec.config import build_config

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_here:make", "no module named 'no_such_module_here'"),
    ("example_cells:absent", "module example_cells has no attribute 'absent'"),
    ("example_cells:NOT_CALLABLE", "NOT_CALLABLE is not callable"),
    ("example_cells:too_few_arguments", "does not take the arguments factory(input_size, hidden_size, num_layers"),
])
def test_a_factory_that_is_not_there_or_not_right_is_one_line(importable, spec, message):
    with pytest.raises(HarnessError) as caught:
        load_factory(spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_factory_must_return_a_module(importable):
    with pytest.raises(HarnessError, match="returned str, not an nn.Module"):
        build_module("example_cells:not_a_module", 5, 4, 1, False)


@pytest.mark.parametrize("values, message", [
    ({"cell": "transformer"}, "neither rnn, gru, lstm nor a module's factory"),
    ({"cell": "example_cells:elman", "impl": "fused"}, "model.impl = fused needs cell rnn, gru or lstm"),
    ({"cell": "example_cells:elman", "target_params": 1000}, "model.params needs cell rnn, gru or lstm"),
])
def test_cell_settings_that_cannot_apply_are_one_line(values, message):
    with pytest.raises(HarnessError) as caught:
        build_config(values, "suite.yaml")
    assert message in str(caught.value)


def _run(tmp_path, cell: str, *extra):
    suite = tmp_path / "own.yaml"
    suite.write_text(textwrap.dedent(TINY) + textwrap.dedent(f"""
        matrix: {{cell: ["{cell}"], layers: [1, 2], direction: [uni, bi]}}
    """))
    # The module is found on PYTHONPATH, as a user's would be (the checkout first: the harness under test).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    return subprocess.run([sys.executable, "-m", "harness", "run", str(suite), "--out", str(tmp_path / "run"),
                           "--no-report", *extra], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)


def test_a_users_module_trains_in_a_tiny_grid_and_its_file_is_recorded(tmp_path):
    proc = _run(tmp_path, "example_cells:elman")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "cells").glob("*.json"))]
    assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
    digest = hashlib.sha256((TESTS / "example_cells.py").read_bytes()).hexdigest()
    assert {r["cell_module_sha256"] for r in records} == {digest}
    assert all(r["flops_per_epoch"] is None and r["params"] > 0 for r in records)  # work the harness cannot count
    assert all(r["train_ppl"] < r["vocab_size"] * 2 for r in records)  # it trained: no divergence


def test_a_missing_module_stops_the_run_before_anything_is_written(tmp_path):
    proc = _run(tmp_path, "no_such_module_here:make")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no module named 'no_such_module_here'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "cells").exists() or not any((tmp_path / "run" / "cells").iterdir())
