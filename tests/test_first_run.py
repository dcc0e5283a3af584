"""What a new user meets first: the command's name, the plan and estimate before a run, errors that every
cell would hit stopping the run at once."""

from __future__ import annotations

import sys

import pytest

from harness import cli


@pytest.mark.parametrize("argv0, expected", [
    ("/home/u/.venv/bin/harness", "harness"),
    ("harness", "harness"),
    ("/home/u/rnn-harness/harness/__main__.py", "python -m harness"),
    ("/usr/bin/pytest", "python -m harness"),
])
def test_the_command_names_itself_by_how_it_was_called(argv0, expected):
    assert cli.prog_name(argv0) == expected


def test_usage_shows_the_console_script_name(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/home/u/.venv/bin/harness", "run"])
    assert cli.build_parser().format_usage().startswith("usage: harness ")


# --- the plan, the ETA ------------------------------------------------------------------------------------

import io  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import textwrap  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pandas as pd  # noqa: E402

from harness.grid.progress import Progress  # noqa: E402
from harness.report.numbers import format_duration  # noqa: E402

from conftest import TINY  # noqa: E402


def _cell(cell_id: str, epochs: int = 10):
    return SimpleNamespace(cell_id=cell_id, config=SimpleNamespace(epochs=epochs))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_eta_weighs_cells_by_their_estimated_cost_and_corrects_by_the_time_they_really_took():
    clock = FakeClock()
    progress = Progress(3, 0, stream=io.StringIO(), estimates={"cheap": 10.0, "dear": 1000.0, "mid": 90.0},
                        clock=clock)
    prior = progress.prior_sec
    assert progress.eta_seconds() == pytest.approx(1100.0)  # nothing done: the a-priori sum
    progress.start_cell(_cell("cheap"))
    clock.now = 40.0  # the cheap cell took 4 times its estimate
    progress.finish_cell(_cell("cheap"), {"status": "ok", "total_sec": 40.0})
    # What is left is costed by estimate (1090 s, not 2 cells' worth), scaled by how slow the work was.
    assert progress.eta_seconds() == pytest.approx(1090.0 * (40.0 + prior) / (10.0 + prior))
    progress.start_cell(_cell("mid", epochs=10))
    progress.epoch({"epoch": 5, "train_ppl": 9.0})
    clock.now = 40.0 + 45.0  # half of mid, at exactly its estimated pace
    assert progress.eta_seconds() == pytest.approx((1090.0 - 45.0) * (85.0 + prior) / (55.0 + prior))
    assert "ETA" in progress.eta_text()


def test_eta_counts_cells_training_side_by_side_without_epoch_reports():
    # Two cells on two Ray workers (no epoch reports), each at its estimated pace: after 30 s the two have
    # done 60 s of estimated work, so the 140 s left take 70 s of wall time, not 140.
    clock = FakeClock()
    progress = Progress(3, 0, stream=io.StringIO(), estimates={"a": 100.0, "b": 100.0, "c": 100.0}, clock=clock)
    prior = progress.prior_sec
    progress.start_cell(_cell("a"))
    progress.start_cell(_cell("b"))
    clock.now = 30.0
    assert progress.eta_seconds() == pytest.approx((300.0 - 60.0) * (30.0 + prior) / (60.0 + prior))
    clock.now = 500.0  # far beyond its estimate, a cell in flight never counts as more than 90% done
    assert progress.eta_seconds() == pytest.approx((300.0 - 180.0) * (500.0 + prior) / (180.0 + prior))


def test_a_cell_going_on_from_a_checkpoint_counts_only_what_remains():
    # Epoch 6 of 10 in its checkpoint: 40% of its 100 s estimate remains; the six epochs reported again at
    # its start took no time now and count as nothing done.
    clock = FakeClock()
    progress = Progress(1, 0, stream=io.StringIO(), estimates={"a": 40.0}, clock=clock, started_epochs={"a": 6})
    prior = progress.prior_sec
    progress.start_cell(_cell("a", epochs=10))
    for epoch in range(1, 7):
        progress.epoch({"epoch": epoch, "train_ppl": 9.0})
    assert progress.eta_seconds() == pytest.approx(40.0)
    progress.epoch({"epoch": 8, "train_ppl": 9.0})  # half of what remained
    clock.now = 20.0  # at its estimated pace
    assert progress.eta_seconds() == pytest.approx(20.0 * (20.0 + prior) / (20.0 + prior))


def test_remaining_estimates_scale_a_started_cell_by_its_epochs_left():
    from harness.spec.config import CellConfig
    from harness.cell.cost import estimate_seconds
    from harness.grid.progress import remaining_estimates
    from harness.spec.suite import GridCell

    configs = [CellConfig(epochs=500, seed=seed) for seed in (0, 1, 2)]
    cells = [GridCell(c.cell_id, c, {}) for c in configs]
    estimates = remaining_estimates(cells, {cells[0].cell_id: 400, cells[2].cell_id: 100}, {cells[2].cell_id})
    full = estimate_seconds(configs[0])
    assert estimates == {cells[0].cell_id: pytest.approx(full * 0.2), cells[1].cell_id: pytest.approx(full),
                         cells[2].cell_id: 0.0}  # skipped: nothing to train


def test_a_skipped_cell_does_not_count_as_fast_training():
    clock = FakeClock()
    progress = Progress(2, 0, stream=io.StringIO(), estimates={"gpu": 0.0, "cpu": 100.0}, clock=clock)
    progress.finish_cell(_cell("gpu"), {"status": "skipped", "total_sec": 0.1})
    assert progress.eta_seconds() == pytest.approx(100.0)


def test_non_terminal_progress_lines_carry_the_eta():
    stream = io.StringIO()
    progress = Progress(2, 0, stream=stream, estimates={"a": 60.0, "b": 600.0}, clock=FakeClock())
    progress.finish_cell(_cell("a"), {"status": "ok", "total_sec": 0.0})
    assert "[1/2] a ok" in stream.getvalue() and "ETA" in stream.getvalue()


def test_durations_read_as_seconds_minutes_or_hours():
    assert [format_duration(s) for s in (42, 90, 3 * 3600 + 5 * 60)] == ["42 s", "1.5 min", "3 h 05 min"]
    assert [format_duration(s) for s in (0, 0.215, 0.96)] == ["0 s", "0.2 s", "1 s"]  # under a second is not 0


# --- a run on the command line -----------------------------------------------------------------------------


def _harness(*args, cwd, env=None, timeout=240):
    import os
    import sys

    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})})


def _suite(tmp_path, body: str = "matrix: {cell: [rnn, gru]}\n"):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY) + textwrap.dedent(body))
    return path


def test_run_prints_its_cells_and_estimate_before_training(tmp_path):
    out = tmp_path / "run"
    proc = _harness("run", _suite(tmp_path), "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = proc.stderr.index("2 cells to train (cell rnn, gru x layers 1")
    assert plan < proc.stderr.index("estimated") < proc.stderr.index("[1/2]")
    # what a reader needs to judge the timings: the machine's speed at both ends, the load around each cell
    info = json.loads((out / "run.json").read_text())
    assert info["calibration"]["cpu"]["flops_per_sec"] > 0 and info["calibration_end"]["cpu"]["flops_per_sec"] > 0
    cells = pd.read_csv(out / "cells.csv")
    assert {"load_start", "load_end", "cpu_steal"} <= set(cells.columns)
    assert (cells["load_start"] >= 0).all() and (cells["load_end"] >= 0).all()


@pytest.mark.parametrize("content, fragment", [
    (None, "neither a known corpus"),
    ("", "no letters"),
    ("1234 5678\n", "no letters"),
])
def test_a_corpus_every_cell_needs_stops_the_run_at_once_in_one_line(tmp_path, content, fragment):
    corpus = tmp_path / "book.txt"
    if content is not None:
        corpus.write_text(content)
    out = tmp_path / "run"
    proc = _harness("run", _suite(tmp_path, f"data: {{corpus: {corpus}}}\nmatrix: {{cell: [rnn, gru]}}\n"),
                    "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert "nothing was trained" in lines[0] and "Traceback" not in proc.stderr
    assert not (out / "run.json").exists() and not (out / "cells").exists()


def test_resume_trains_failed_cells_again(tmp_path):
    book = tmp_path / "later.txt"
    suite = _suite(tmp_path, f"""
        matrix: {{cell: [rnn]}}
        include:
          - {{cell: gru, corpus: {book}}}
    """)
    out = tmp_path / "run"
    first = _harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    status = pd.read_csv(out / "cells.csv").set_index("cell")["status"].to_dict()
    assert status == {"rnn": "ok", "gru": "failed"}
    ok_before = json.loads(next((out / "cells").glob("rnn-*.json")).read_text())
    book.write_text("the time machine by h g wells " * 400)
    again = _harness("run", suite, "--resume", out, "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 of 2 cells already stored; training the 1 failed ones again" in again.stderr
    assert json.loads((out / "run.json").read_text())["resumes"][0]["calibration"]["cpu"]["flops_per_sec"] > 0
    status = pd.read_csv(out / "cells.csv").set_index("cell")["status"].to_dict()
    assert status == {"rnn": "ok", "gru": "ok"}
    # the cell that was fine is not trained again
    assert json.loads(next((out / "cells").glob("rnn-*.json")).read_text()) == ok_before
