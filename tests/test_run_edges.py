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
from harness.grid.runner import latest_run_dir
from harness.spec.suite import load_suite

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
    from harness.grid.runner import latest_run_dir
    from harness.spec.suite import Suite

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


# --- tables appended, stale temporary folders removed -------------------------------------------------------


def stored_cells(tmp_path, seeds=(0, 1, 2)):
    """A run folder with one stored (failed) record per seed, each with epochs and a sample."""
    from harness.grid.cell_process import failure_record
    from harness.results.run_folder import RunDir
    from harness.spec.suite import expand, parse_suite

    suite = parse_suite({"name": "t", "model": {"hidden": 8}, "matrix": {"seed": list(seeds)}}, "inline")
    run_dir = RunDir(tmp_path / "run")
    run_dir.lock()
    cells = expand(suite)
    for i, cell in enumerate(cells):
        epochs = [{"epoch": e, "train_ppl": 20.0 - e - i / 10, "sec": 0.5 + i, "tokens_per_sec": 1e4,
                   "warmup": e == 1, "val_ppl": None, "causal_ppl": None} for e in (1, 2)]
        record = failure_record(cell, "failed", f"reason {i}", epochs)
        record["samples"] = [{"prefix": "time", "text": f"time {i}"}]
        run_dir.store(cell, record, None)
    return run_dir, [c.cell_id for c in cells]


def tables(run_dir):
    return {name: pd.read_csv(run_dir.path / name).sort_values(["cell_id"], kind="stable").reset_index(drop=True)
            for name in ("cells.csv", "epochs.csv", "samples.csv")}


def test_a_stored_cell_is_appended_to_the_tables_without_reading_the_others(tmp_path, monkeypatch):
    from harness.results.run_folder import RunDir
    from harness.results.tables import rebuild_tables

    run_dir, ids = stored_cells(tmp_path)
    records = run_dir.finished_records()
    rebuild_tables(run_dir.path, {i: records[i] for i in ids[:1]}, ids)
    monkeypatch.setattr(RunDir, "finished_records", lambda self: pytest.fail("read every record"))
    for cell_id in ids[1:]:
        run_dir.add_to_tables(cell_id, ids)
    appended = tables(run_dir)
    monkeypatch.undo()
    run_dir.rebuild_tables(ids)
    rebuilt = tables(run_dir)
    assert len(appended["cells.csv"]) == 3 and len(appended["epochs.csv"]) == 6
    for name in rebuilt:
        pd.testing.assert_frame_equal(appended[name], rebuilt[name], check_dtype=False)


def test_tables_are_rebuilt_when_appending_cannot_keep_them_whole(tmp_path):
    run_dir, ids = stored_cells(tmp_path)
    records = run_dir.finished_records()
    from harness.results.tables import rebuild_tables

    rebuild_tables(run_dir.path, {i: records[i] for i in ids[:2]}, ids)
    cells_csv = run_dir.path / "cells.csv"
    cells_csv.write_bytes(cells_csv.read_bytes()[:-20])  # a crash mid-append: the last line is cut
    run_dir.add_to_tables(ids[2], ids)
    assert list(pd.read_csv(cells_csv)["cell_id"]) == ids and pd.read_csv(cells_csv)["reason"].notna().all()
    # A cell trained again (failed before) already has rows: rebuilt, not duplicated.
    run_dir.add_to_tables(ids[0], ids, rebuild=True)
    assert list(pd.read_csv(cells_csv)["cell_id"]) == ids
    assert len(pd.read_csv(run_dir.path / "epochs.csv")) == 6


def test_stale_cell_folders_are_removed_and_live_ones_kept(tmp_path):
    import os
    import time

    from harness.grid.cell_process import remove_stale_cell_dirs

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now
    dead = tmp_path / f"harness-cell-{gone.pid}-abc123"
    alive = tmp_path / f"harness-cell-{os.getpid()}-def456"
    old_style, old_style_recent = tmp_path / "harness-cell-k2j4_x9q", tmp_path / "harness-cell-p0q9w8e7"
    for folder in (dead, alive, old_style, old_style_recent):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    hour_ago = time.time() - 7200
    os.utime(old_style, (hour_ago, hour_ago))
    assert sorted(remove_stale_cell_dirs(tmp_path)) == sorted([dead, old_style])
    assert alive.is_dir() and old_style_recent.is_dir() and not dead.exists() and not old_style.exists()


def test_a_killed_runners_cell_folder_is_removed_by_the_next_run(tmp_path):
    import os
    import signal
    import time

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    suite = write_suite(tmp_path, "train: {epochs: 100000000}\n")  # in flight when the runner is killed
    runner = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--out", str(tmp_path / "a"),
                               "--no-report"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp.glob("harness-cell-*/config.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    left = list(tmp.glob("harness-cell-*"))
    assert len(left) == 1  # SIGKILL gives the runner no chance to remove it
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(write_suite(tmp_path, "", "other.yaml")),
                           "--out", str(tmp_path / "b"), "--no-report"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp.glob("harness-cell-*")) == []


def test_without_run_json_only_records_of_the_same_configuration_are_adopted(stored_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stored_run, out)
    original = json.loads((out / "run.json").read_text())
    (out / "run.json").unlink()
    suite = write_suite(tmp_path, "description: first\nmatrix: {seed: [0, 1]}\n", name="again.yaml")
    other = harness("run", suite, "--out", out, "--set", "model.hidden=16", "--no-report", cwd=tmp_path)
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert "2 stored cell(s) were trained with another configuration" in other.stderr
    assert "(model.hidden 8 -> 16)" in other.stderr and not (out / "run.json").exists()
    same = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert same.returncode == 0 and "2 of 2 cells already stored" in same.stderr, same.stderr
    assert "run.json is missing; the run's start" in same.stderr
    # The original run's facts come back from its records; this part is recorded as a resume.
    info = json.loads((out / "run.json").read_text())
    for key in ("started", "machine", "git", "command", "calibration"):
        assert info[key] == original[key], key
    assert info["recovered"]["records"] == 2 and len(info["resumes"]) == 1
    # Lost again: the rebuilt run.json has the original start and the part recorded in between.
    (out / "run.json").unlink()
    for path in (out / "cells").glob("*.json"):  # as if this last part had trained the cells again
        record = json.loads(path.read_text())
        record["run"]["part"] = info["resumes"][0]
        path.write_text(json.dumps(record))
    again = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert again.returncode == 0 and "1 resumed part(s)" in again.stderr, again.stderr
    rebuilt = json.loads((out / "run.json").read_text())
    assert rebuilt["started"] == original["started"] and len(rebuilt["resumes"]) == 2
    assert rebuilt["resumes"][0]["started"] == info["resumes"][0]["started"]


def test_records_of_other_cells_do_not_rebuild_this_suites_run_json(stored_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stored_run, out)
    (out / "run.json").unlink()
    suite = write_suite(tmp_path, "description: other\nmatrix: {seed: [5]}\n", name="other.yaml")
    proc = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0 and "run.json is missing" not in proc.stderr, proc.stderr
    assert "recovered" not in json.loads((out / "run.json").read_text())


def test_without_run_json_or_run_facts_in_the_records_the_start_is_unknown(stored_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stored_run, out)
    (out / "run.json").unlink()
    for path in (out / "cells").glob("*.json"):  # records stored before they carried the run's facts
        record = json.loads(path.read_text())
        del record["run"]
        path.write_text(json.dumps(record))
    suite = write_suite(tmp_path, "description: first\nmatrix: {seed: [0, 1]}\n", name="again.yaml")
    proc = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0 and "do not say when the run started" in proc.stderr, proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["started"] is None and info["recovered"]["facts"] is False
    assert info["calibration"]["cpu"]["flops_per_sec"] > 0  # measured now, in place of the lost one
    assert info["machine"]["cpu_model"] and info["machine"]["hostname"]  # the cells' own
    assert latest_run_dir(load_suite(suite), tmp_path) == out  # found by --resume, by the time of the rebuild
