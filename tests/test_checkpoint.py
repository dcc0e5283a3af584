"""A cell stopped part-way goes on from its checkpoint to the numbers an unbroken run gives: in process,
across worker processes, and in the run folder until the cell's record is stored."""

from __future__ import annotations

import io
import json
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from harness import cli
from harness.cell.checkpoint import Checkpointer
from harness.spec.config import CellConfig
from harness.results.run_folder import RunDir, checkpoint_prior_sec, checkpoint_summary_path
from harness.grid.cell_process import run_cell_process
from harness.grid.runner import HarnessInterrupted, run_suite
from harness.spec.suite import GridCell, expand, load_suite
from harness.cell.train import run_cell

from conftest import TINY
from test_train import PARAGRAPH

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "book.txt"
    path.write_text(PARAGRAPH * 6, encoding="utf-8")
    return path


def tiny(book: Path, **overrides) -> CellConfig:
    """Held-out evaluations, a selection text and the best epoch: every part of the state is used."""
    values = dict(corpus=str(book), max_tokens=1500, val_tokens=300, select_tokens=300, select_every=1,
                  eval_every=2, cell="gru", layers=2, hidden=16, epochs=8, batch_size=8, num_steps=35,
                  lr=4.0, sample_chars=20, threads=1)
    values.update(overrides)
    return CellConfig(**values)


class Stop(Exception):
    pass


def stopped_after(cfg: CellConfig, path: Path, epoch: int) -> None:
    """Train ``cfg`` with a checkpoint after every epoch until the end of epoch ``epoch``, then stop as a
    killed process would (before that epoch's checkpoint)."""

    def stop_at(row):
        if row["epoch"] == epoch:
            raise Stop

    with pytest.raises(Stop):
        run_cell(cfg, on_epoch=stop_at, checkpoint=path, checkpoint_every=0.0)


def measured(record: dict) -> list[tuple]:
    return [(r["epoch"], r["train_ppl"], r["select_ppl"], r["val_ppl"], r["causal_ppl"]) for r in record["epoch_log"]]


@pytest.mark.parametrize("cell, direction", [("gru", "uni"), ("lstm", "bi"), ("rnn", "uni")])
def test_a_cell_stopped_part_way_goes_on_to_the_numbers_of_an_unbroken_run(book, tmp_path, cell, direction):
    cfg = tiny(book, cell=cell, direction=direction)
    unbroken = run_cell(cfg)
    path = tmp_path / "cell.pt"
    stopped_after(cfg, path, epoch=5)
    summary = json.loads(checkpoint_summary_path(path).read_text())
    assert summary["epoch"] == 4 and summary["train_ppl"] == unbroken["epoch_log"][3]["train_ppl"]
    seen = []
    resumed = run_cell(cfg, on_epoch=seen.append, checkpoint=path)
    assert measured(resumed) == measured(unbroken)
    for key in ("selected_epoch", "selected_select_ppl", "selected_val_ppl", "selected_causal_ppl", "sample",
                "train_ppl", "val_ppl", "causal_ppl", "epochs_done", "stopped_early"):
        assert resumed[key] == unbroken[key], key
    assert [r["epoch"] for r in seen] == list(range(1, 9))  # the saved epochs are reported again first
    assert any("after epoch 4" in note for note in resumed["notes"])
    assert resumed["prior_sec"] > 0 and "prior_sec" not in unbroken
    # The first epoch of each process is its warm-up, out of the epoch time's median.
    assert [r["epoch"] for r in resumed["epoch_log"] if r["warmup"]] == [1, 5]


@pytest.mark.parametrize("settings", [
    dict(cell="lstm", optimizer="adam", lr=0.01, forget_bias=1.0, dropout=0.2, schedule="cosine", lr_warmup_epochs=2),
    dict(cell="gru", optimizer="sgd", lr=1.0, momentum=0.9, weight_decay=0.001),
], ids=["adam-cosine-dropout", "sgd-momentum"])
def test_an_optimiser_with_state_and_a_schedule_go_on_from_a_checkpoint(book, tmp_path, settings):
    # Adam's moments, SGD's momentum, the epoch's learning rate and dropout's random draws are all restored.
    cfg = tiny(book, **settings)
    unbroken = run_cell(cfg)
    path = tmp_path / "cell.pt"
    stopped_after(cfg, path, epoch=5)
    resumed = run_cell(cfg, checkpoint=path)
    assert measured(resumed) == measured(unbroken)
    assert resumed["causal_ppl"] == unbroken["causal_ppl"]


def test_a_cell_stopped_twice_goes_on_each_time(book, tmp_path):
    cfg = tiny(book)
    path = tmp_path / "cell.pt"
    stopped_after(cfg, path, epoch=3)
    stopped_after(cfg, path, epoch=6)  # goes on after epoch 2, stops after epoch 6
    resumed = run_cell(cfg, checkpoint=path)
    assert measured(resumed) == measured(run_cell(cfg))
    assert [note for note in resumed["notes"] if "checkpoint" in note] == [
        f"went on from its checkpoint after epoch {k}: the epochs before were trained by an earlier process"
        for k in (2, 5)]


def test_patience_and_the_best_epoch_survive_a_stop(book, tmp_path):
    # lr 40 with little clipping: the selection perplexity worsens early and patience ends the cell.
    cfg = tiny(book, cell="rnn", layers=1, epochs=60, select_every=2, patience=6, eval_every=0, lr=40.0,
               clip=1000.0)
    unbroken = run_cell(cfg)
    if unbroken["status"] != "ok" or not unbroken["stopped_early"] or unbroken["epochs_done"] < 8:
        pytest.skip("this run did not stop on patience after epoch 8")
    path = tmp_path / "cell.pt"
    stopped_after(cfg, path, epoch=unbroken["epochs_done"] - 1)
    resumed = run_cell(cfg, checkpoint=path)
    assert measured(resumed) == measured(unbroken)
    assert (resumed["selected_epoch"], resumed["epochs_done"]) == (unbroken["selected_epoch"], unbroken["epochs_done"])


def test_a_checkpoint_of_another_configuration_is_ignored(book, tmp_path):
    path = tmp_path / "cell.pt"
    stopped_after(tiny(book, lr=2.0), path, epoch=4)
    cfg = tiny(book)
    record = run_cell(cfg, checkpoint=path)
    assert measured(record) == measured(run_cell(cfg))
    assert any("ignored: its config_hash is" in note for note in record["notes"])
    assert "prior_sec" not in record


def test_a_damaged_checkpoint_costs_only_the_epochs_it_held(book, tmp_path):
    path = tmp_path / "cell.pt"
    path.write_bytes(b"not a checkpoint")
    cfg = tiny(book, epochs=3)
    record = run_cell(cfg, checkpoint=path)
    assert record["status"] == "ok" and record["epochs_done"] == 3
    assert any("unreadable" in note for note in record["notes"])


def test_a_checkpoint_that_cannot_be_written_does_not_fail_the_cell(book, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    record = run_cell(tiny(book, epochs=3), checkpoint=blocker / "cell.pt", checkpoint_every=0.0)
    assert record["status"] == "ok" and record["epochs_done"] == 3
    assert sum("could not be written" in note for note in record["notes"]) == 1  # said once, tried each time


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "cell.pt"
    saver = Checkpointer(path, {"config_hash": "hash"}, every_sec=0.0)
    saver.save({"epoch": 1})

    def killed_while_writing(obj, f):
        Path(f).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", killed_while_writing)
    saver.save({"epoch": 2})
    monkeypatch.undo()
    assert Checkpointer(path, {"config_hash": "hash"}).load()["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.json", "cell.pt"]  # no partial file left behind


def test_checkpoints_are_due_every_interval(tmp_path):
    now = [0.0]
    saver = Checkpointer(tmp_path / "cell.pt", {"config_hash": "hash"}, every_sec=60.0, clock=lambda: now[0])
    now[0] = 59.0
    assert not saver.due()
    now[0] = 60.0
    assert saver.due()
    saver.save({"epoch": 3})
    assert not saver.due()
    assert not Checkpointer(None, {}, every_sec=0.0).due()  # no file: never


def test_an_interrupted_cell_process_goes_on_from_its_checkpoint_in_the_run_folder(book, tmp_path, capsys):
    cfg = tiny(book, epochs=40, eval_every=10)
    cell = GridCell(cfg.cell_id, cfg, {})
    run_dir = RunDir(tmp_path / "run")
    run_dir.lock()
    checkpoint = run_dir.checkpoint_path(cell.cell_id)
    stop = threading.Event()

    def stop_at_epoch_3(row):
        if row["epoch"] >= 3:
            stop.set()

    with pytest.raises(KeyboardInterrupt):
        run_cell_process(cell, io.StringIO(), on_epoch=stop_at_epoch_3, stop=stop, checkpoint=checkpoint,
                         checkpoint_every=0.0)
    assert checkpoint.exists()
    # `show` (torch-free) says the cell has started and how far its checkpoint got.
    summary = run_dir.checkpoints()[cell.cell_id]
    assert summary["epoch"] >= 2 and summary["train_ppl"] > 1
    (run_dir.path / "run.json").write_text(json.dumps({"suite": {"name": "tiny"}, "cells": [cell.cell_id]}))
    assert cli.main(["show", str(run_dir.path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(cell.cell_id))
    assert row.split()[1:3] == ["started", str(summary["epoch"])] and "checkpoint saved" in row
    record = run_cell_process(cell, io.StringIO(), checkpoint=checkpoint, checkpoint_every=0.0)
    assert record["status"] == "ok" and record["epochs_done"] == 40
    assert measured(record) == measured(run_cell(cfg))  # another process, the same numbers
    assert any(note.startswith("went on from its checkpoint after epoch") for note in record["notes"])
    assert "prior_sec" not in record and record["total_sec"] > 0
    run_dir.store(cell, record, calibration=None)
    assert run_dir.checkpoints() == {} and not checkpoint_summary_path(checkpoint).exists()  # stored: both go
    (checkpoint.parent / f".{checkpoint.name}.123.partial").write_bytes(b"a save cut short")
    (checkpoint.parent / f".{checkpoint.stem}.json.k2j4.tmp").write_bytes(b"{")  # a summary cut short
    run_dir.tidy_checkpoints()  # the run's end
    assert not checkpoint.parent.exists()


def test_a_failed_cell_keeps_its_checkpoint_for_the_next_try(book, tmp_path):
    cfg = tiny(book)
    cell = GridCell(cfg.cell_id, cfg, {})
    run_dir = RunDir(tmp_path / "run")
    run_dir.lock()
    checkpoint = run_dir.checkpoint_path(cell.cell_id)
    stopped_after(cfg, checkpoint, epoch=3)
    run_dir.store(cell, {"status": "failed", "reason": "killed by signal SIGKILL"}, calibration=None)
    assert checkpoint.exists() and list(run_dir.checkpoints()) == [cell.cell_id]
    run_dir.tidy_checkpoints()
    assert checkpoint.exists()  # a run's end keeps what a resumed run goes on from
    run_dir.store(cell, {"status": "timeout", "reason": "exceeded run.timeout"}, calibration=None)
    assert not checkpoint.exists()  # it would only time out again


def test_the_timeout_counts_the_time_before_the_checkpoint(tmp_path):
    path = tmp_path / "cell.pt"
    assert checkpoint_prior_sec(path, "h") == 0.0  # none
    path.write_bytes(b"")
    checkpoint_summary_path(path).write_text(json.dumps({"elapsed_sec": 412.5, "config_hash": "h"}))
    assert checkpoint_prior_sec(path, "h") == 412.5
    assert checkpoint_prior_sec(path, "other") == 0.0  # another configuration's: the cell starts afresh
    checkpoint_summary_path(path).write_text("{cut")
    assert checkpoint_prior_sec(path, "h") == 0.0
    assert checkpoint_prior_sec(None, "h") == 0.0


def test_a_checkpoint_of_another_text_is_ignored(book, tmp_path):
    path = tmp_path / "cell.pt"
    cfg = tiny(book)
    stopped_after(cfg, path, epoch=4)
    # The same corpus path with other text in it (the configuration names the path, not the text).
    state = torch.load(path, weights_only=True)
    state["corpus_sha256"] = "0" * 64
    torch.save(state, path)
    record = run_cell(cfg, checkpoint=path)
    assert any("ignored: its corpus_sha256 is 000" in note for note in record["notes"])
    assert measured(record) == measured(run_cell(cfg)) and "prior_sec" not in record


class InterruptedAfterACheckpoint:
    """An executor whose first cell saved a checkpoint before the run was interrupted."""

    name = "local"
    malloc = "keep-freed"

    def execute(self, cells, run_dir, progress, stop, drain):
        path = run_dir.checkpoint_path(cells[0].cell_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        raise KeyboardInterrupt
        yield


def test_an_interrupted_run_says_its_started_cells_go_on_from_their_checkpoints(tmp_path):
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(textwrap.dedent(TINY))
    suite = load_suite(suite_file)
    out = tmp_path / "run"
    with pytest.raises(HarnessInterrupted) as stopped:
        run_suite(suite, expand(suite), out, ["test"], executor=InterruptedAfterACheckpoint(), calibrate=False)
    assert str(stopped.value) == (f"interrupted; finished cells are stored in {out}; 1 unfinished cell will go on "
                                  f"from its checkpoint; continue with --resume {out}")
    assert "; 2 unfinished cells will go on from their checkpoints;" in str(HarnessInterrupted(out, 2))
    assert "checkpoint" not in str(HarnessInterrupted(out))


def test_a_resumed_run_goes_on_from_a_checkpoint_and_says_so(tmp_path):
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(textwrap.dedent(TINY).replace("epochs: 2", "epochs: 4"))
    suite = load_suite(suite_file)
    cells = expand(suite)
    out = tmp_path / "run"
    with pytest.raises(HarnessInterrupted):  # the first part: stopped with a checkpoint
        run_suite(suite, cells, out, ["test"], executor=InterruptedAfterACheckpoint(), calibrate=False)
    stopped_after(cells[0].config, RunDir(out).checkpoint_path(cells[0].cell_id), epoch=3)
    stream = io.StringIO()
    code, _ = run_suite(suite, cells, out, ["test"], calibrate=False, stream=stream)
    assert code == 0
    assert "0 of 1 cells already stored; 1 going on from their checkpoints (epochs 2)" in stream.getvalue()
    record = json.loads((out / "cells" / f"{cells[0].cell_id}.json").read_text())
    assert record["status"] == "ok" and record["epochs_done"] == 4
    assert record["notes"] == ["went on from its checkpoint after epoch 2: the epochs before were trained by an "
                               "earlier process"]
    assert measured(record) == measured(run_cell(cells[0].config))
    assert not (out / ".checkpoints").exists()  # the run's end tidies the folder away
