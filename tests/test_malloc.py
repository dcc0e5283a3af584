"""The workers' malloc setting: kept freed memory by default, recorded in run.json and each cell, one
setting per run, and compared only with runs of the same setting."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.analysis.speed_compare import compare_measurements
from harness.results.speed_measurements import read_run
from harness.errors import HarnessError
from harness.host.malloc import KEEP_FREED_MEMORY, KEPT, SYSTEM, malloc_label, malloc_settings, run_malloc
from harness.grid.cell_process import worker_environment

from test_compare import cells_of, write_run
from test_runner import harness, write_suite


def test_labels_name_the_setting():
    assert malloc_label(dict(KEEP_FREED_MEMORY)) == KEPT
    assert malloc_label({"PATH": "/bin"}) == SYSTEM
    assert malloc_label({"MALLOC_MMAP_THRESHOLD_": "65536"}) == "MALLOC_MMAP_THRESHOLD_=65536"
    assert run_malloc({}) == SYSTEM and run_malloc(None) == SYSTEM and run_malloc({"malloc": KEPT}) == KEPT


def test_values_in_the_environment_win():
    environ = {"MALLOC_MMAP_THRESHOLD_": "65536"}
    assert malloc_settings(False, environ) == {**KEEP_FREED_MEMORY, "MALLOC_MMAP_THRESHOLD_": "65536"}
    assert malloc_settings(True, environ) == environ
    assert malloc_settings(True, {}) == {}


def test_worker_environment(monkeypatch):
    for key in KEEP_FREED_MEMORY:
        monkeypatch.delenv(key, raising=False)
    kept = worker_environment(KEPT)
    assert {k: kept[k] for k in KEEP_FREED_MEMORY} == KEEP_FREED_MEMORY and kept["PYTHONUNBUFFERED"] == "1"
    assert not set(KEEP_FREED_MEMORY) & set(worker_environment(SYSTEM))


def test_a_run_records_its_setting_and_a_resume_keeps_it(tmp_path):
    suite = write_suite(tmp_path, "matrix: {cell: [rnn]}\n")
    out = tmp_path / "run"
    proc = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["malloc"] == KEPT
    assert list(pd.read_csv(out / "cells.csv")["malloc"]) == [KEPT]  # what the worker itself was started with
    refused = harness("run", suite, "--out", out, "--no-report", "--system-malloc", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "refusing to resume --system-malloc: the run's workers were started with malloc 'keep-freed', and its "
        "cells' timings must stay comparable; use another --out")

    system = tmp_path / "system"
    proc = harness("run", suite, "--out", system, "--no-report", "--system-malloc", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((system / "run.json").read_text())["malloc"] == SYSTEM
    assert list(pd.read_csv(system / "cells.csv")["malloc"]) == [SYSTEM]


def test_runs_of_different_settings_are_not_compared(tmp_path):
    base = write_run(tmp_path / "a", cells_of([1.0] * 5))
    new = write_run(tmp_path / "b", cells_of([1.0] * 5))
    info = json.loads((new / "run.json").read_text())
    (new / "run.json").write_text(json.dumps({**info, "malloc": KEPT}))
    assert read_run(base).malloc == SYSTEM  # a run that records none left malloc alone
    with pytest.raises(HarnessError, match=r"different malloc settings \(system -> keep-freed\)"):
        compare_measurements(read_run(base), read_run(new))
    compare_measurements(read_run(base), read_run(base))


def test_a_plain_resume_keeps_system_and_a_lost_run_json_keeps_the_setting(tmp_path):
    suite = write_suite(tmp_path, "matrix: {cell: [rnn, gru]}\n")
    out = tmp_path / "run"
    proc = harness("run", suite, "--out", out, "--no-report", "--system-malloc", "--only", "cell=rnn", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (out / "run.json").unlink()  # lost: rebuilt from the records on the resume
    proc = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["malloc"] == SYSTEM
    assert list(pd.read_csv(out / "cells.csv")["malloc"]) == [SYSTEM, SYSTEM]


def test_run_json_records_what_the_workers_got(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    suite = write_suite(tmp_path, "matrix: {cell: [rnn]}\n")
    out = tmp_path / "run"
    proc = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    label = "MALLOC_MMAP_THRESHOLD_=65536,MALLOC_TRIM_THRESHOLD_=" + KEEP_FREED_MEMORY["MALLOC_TRIM_THRESHOLD_"]
    assert json.loads((out / "run.json").read_text())["malloc"] == label
    assert list(pd.read_csv(out / "cells.csv")["malloc"]) == [label]
