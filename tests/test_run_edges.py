"""The runner and `run` command at their edges: what a careless edit, an odd setting or a killed process
leaves behind."""

import json
import shutil
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml

from harness.errors import HarnessError

from conftest import TINY


def harness(*args, cwd):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def write_suite(tmp_path, extra: str = "", name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(TINY) + extra)
    return path


def test_val_tokens_0_runs_without_held_out_evaluation(tmp_path):
    suite = write_suite(tmp_path)
    out = tmp_path / "run"
    proc = harness("run", suite, "--set", "data.val_tokens=0", "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cells = pd.read_csv(out / "cells.csv")
    assert list(cells["status"]) == ["ok"] and cells["val_ppl"].isna().all() and cells["causal_ppl"].isna().all()
    assert pd.read_csv(out / "epochs.csv")["val_ppl"].isna().all()


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """A finished run of a two-cell suite; tests resume copies of it, which trains nothing."""
    root = tmp_path_factory.mktemp("stored")
    suite = write_suite(root, "description: first\nmatrix: {seed: [0, 1]}\n")
    proc = harness("run", suite, "--out", root / "run", "--no-report", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "run"


def resume_with(stored_run, tmp_path, extra: str):
    out = tmp_path / "run"
    shutil.copytree(stored_run, out)
    suite = write_suite(tmp_path, extra, name="edited.yaml")
    return out, harness("run", suite, "--resume", out, "--no-report", cwd=tmp_path)


@pytest.mark.parametrize("extra", [
    "description: edited\nmatrix: {seed: [0, 1]}\n",
    "description: first\nmatrix: {seed: [1, 0]}\n",  # the order of an axis changes no cell
    "description: first\nmatrix: {seed: [0, 1]}\nclaims: [bidirectional_slow]\n",
])
def test_resume_accepts_an_edit_that_changes_no_cell(stored_run, tmp_path, extra):
    out, proc = resume_with(stored_run, tmp_path, extra)
    assert proc.returncode == 0, proc.stderr
    assert "2 of 2 cells already stored" in proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["suite"]["description"] == yaml.safe_load(extra)["description"]  # the edit applies


@pytest.mark.parametrize("extra,named", [
    ("description: first\nmatrix: {seed: [0, 1]}\ntrain: {epochs: 3}\n", "train.epochs 2 -> 3"),
    ("description: first\nmatrix: {seed: [0, 2]}\n", "matrix.seed [0, 1] -> [0, 2]"),
])
def test_resume_refuses_a_changed_cell_and_names_the_key(stored_run, tmp_path, extra, named):
    out, proc = resume_with(stored_run, tmp_path, extra)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "refusing to resume: the suite's cells changed" in proc.stderr and named in proc.stderr, proc.stderr


def fake_run(root, folder: str, suite: str, started: str):
    path = root / folder
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"suite": {"name": suite}, "started": started}))
    return path


def test_resume_latest_is_chosen_by_the_runs_own_record(tmp_path):
    from harness.runner import latest_run_dir
    from harness.suite import Suite

    fake_run(tmp_path, "regression-20261201-100000", "regression", "2026-12-01T10:00:00+00:00")
    newest = fake_run(tmp_path, "main", "regression", "2026-12-01T12:00:00+00:00")
    fake_run(tmp_path, "regression-new", "regression", "2026-12-01T11:00:00+00:00")
    fake_run(tmp_path, "regression-big-20261201-130000", "regression-big", "2026-12-01T13:00:00+00:00")
    (tmp_path / "regression-broken").mkdir()
    (tmp_path / "regression-broken" / "run.json").write_text("{not json")
    assert latest_run_dir(Suite("regression", "s.yaml"), tmp_path) == newest
    assert latest_run_dir(Suite("regression-big", "s.yaml"), tmp_path).name == "regression-big-20261201-130000"
    with pytest.raises(HarnessError, match="no earlier run of suite 'other'"):
        latest_run_dir(Suite("other", "s.yaml"), tmp_path)
