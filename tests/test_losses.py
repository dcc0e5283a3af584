"""Per-position held-out losses: the file format with literal arrays, which evaluations a cell keeps,
their survival across a checkpoint, and a run folder's losses/ from a tiny real run."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from harness.results.losses import PositionLosses, pack_losses, read_losses, write_losses
from harness.results.run_folder import RunDir
from harness.cell.train import keep_losses, run_cell

from conftest import REPO
from test_checkpoint import book, stopped_after, tiny  # noqa: F401 - fixture and the tiny cell
from test_runner import harness

pytestmark = pytest.mark.usefixtures("one_thread")


def test_losses_are_written_as_float16_and_read_back_with_their_epochs(tmp_path):
    path = tmp_path / "cell.npz"
    write_losses(path, {"last": PositionLosses(500, np.array([0.5, 1.25, 2.0])),
                        "selected": PositionLosses(120, np.array([1.0, 1.0]))})
    back = read_losses(path)
    assert list(back) == ["last", "selected"]
    assert back["last"].epoch == 500 and back["last"].nats.dtype == np.float16
    assert back["last"].nats.tolist() == [0.5, 1.25, 2.0]  # exact in float16
    assert back["selected"].ppl == pytest.approx(math.e)


def test_a_loss_beyond_float16_is_inf_and_so_is_its_perplexity(tmp_path):
    path = tmp_path / "cell.npz"
    write_losses(path, {"best": PositionLosses(3, np.array([1.0, 1e6]))})
    assert read_losses(path)["best"].ppl == math.inf


def test_an_unknown_evaluation_is_refused():
    with pytest.raises(ValueError, match="unknown evaluations \\['first'\\]"):
        pack_losses({"first": PositionLosses(1, np.zeros(2))})


def test_a_damaged_losses_file_is_named(tmp_path):
    path = tmp_path / "cell.npz"
    path.write_bytes(pack_losses({"last": PositionLosses(1, np.zeros(4))})[:40])
    with pytest.raises(HarnessError, match="cell.npz: not a readable losses file"):
        read_losses(path)


def test_the_best_evaluation_is_the_lowest_and_the_first_of_equals():
    kept = {}
    for epoch, ppl in [(10, 9.0), (20, 7.0), (30, 7.0), (40, 8.0)]:
        keep_losses(kept, epoch, ppl, torch.full((3,), float(epoch)))
    assert kept["last"]["epoch"] == 40 and kept["best"]["epoch"] == 20
    assert kept["best"]["nats"].dtype == torch.float16 and kept["best"]["nats"].tolist() == [20.0] * 3


def test_a_cell_keeps_the_losses_of_its_last_best_and_selected_evaluations(book):  # noqa: F811
    cfg = tiny(book)
    record = run_cell(cfg, with_losses=True)
    losses = record["losses"]
    assert set(losses) == {"last", "best", "selected"}
    assert all(len(item.nats) == cfg.val_tokens for item in losses.values())
    evaluated = {r["epoch"]: r["causal_ppl"] for r in record["epoch_log"] if r["causal_ppl"] is not None}
    assert losses["last"].epoch == max(evaluated)
    assert losses["best"].epoch == min(evaluated, key=evaluated.get)
    assert losses["selected"].epoch == record["selected_epoch"]
    # float16 losses give back the recorded perplexities to float16's precision.
    assert losses["last"].ppl == pytest.approx(record["causal_ppl"], rel=2e-3)
    assert losses["best"].ppl == pytest.approx(evaluated[losses["best"].epoch], rel=2e-3)
    assert losses["selected"].ppl == pytest.approx(record["selected_causal_ppl"], rel=2e-3)
    assert "losses" not in run_cell(cfg)  # only when asked: other callers' records stay JSON


def test_a_resumed_cell_has_the_losses_of_an_unbroken_run(book, tmp_path):  # noqa: F811
    cfg = tiny(book, cell="lstm", direction="bi")
    unbroken = run_cell(cfg, with_losses=True)["losses"]
    path = tmp_path / "cell.pt"
    stopped_after(cfg, path, epoch=5)  # after the held-out evaluations of epochs 2 and 4
    resumed = run_cell(cfg, checkpoint=path, with_losses=True)["losses"]
    for name in ("last", "best", "selected"):
        assert resumed[name].epoch == unbroken[name].epoch
        assert np.array_equal(resumed[name].nats, unbroken[name].nats), name


def test_a_run_folder_holds_each_finished_cells_losses(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(textwrap.dedent("""
        name: tiny
        data: {max_tokens: 1500, val_tokens: 200, select_tokens: 100}
        model: {layers: 1, hidden: 8}
        train: {epochs: 2}
        eval: {every: 0, sample_chars: 5, select_every: 1}
        run: {threads: 1, timeout: 120}
        matrix: {cell: [gru], direction: [uni, bi]}
    """))
    out = tmp_path / "run"
    proc = harness("run", suite, "--out", out, "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = RunDir(out)
    records = run.finished_records()
    assert len(records) == 2
    for cell_id, record in records.items():
        assert "losses" not in record
        losses = run.read_losses(cell_id)
        assert set(losses) == {"last", "best", "selected"}
        assert len(losses["selected"].nats) == 200
        assert losses["selected"].ppl == pytest.approx(record["selected_causal_ppl"], rel=2e-3)
    assert sorted(p.name for p in (out / "losses").iterdir()) == sorted(f"{c}.npz" for c in records)
    assert run.read_losses("no-such-cell") == {}


def test_the_format_is_documented():
    text = (REPO / "docs" / "results-format.md").read_text()
    assert "losses/<name>.npz" in text


def test_evaluations_of_the_same_epoch_are_stored_once(tmp_path):
    nats = np.linspace(0.1, 3.0, 1000)
    shared = pack_losses({"last": PositionLosses(9, nats), "best": PositionLosses(9, nats)})
    apart = pack_losses({"last": PositionLosses(9, nats), "best": PositionLosses(8, nats[::-1])})
    assert len(shared) < 0.7 * len(apart)
    path = tmp_path / "cell.npz"
    path.write_bytes(shared)
    back = read_losses(path)
    assert back["best"].epoch == back["last"].epoch == 9
    assert np.array_equal(back["best"].nats, back["last"].nats)
