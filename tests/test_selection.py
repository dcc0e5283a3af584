"""Choosing a cell's best epoch on selection text, stopping early, training on the whole book, and the
cheap streamed evaluation that makes frequent selection affordable: tiny real runs on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from harness.spec.config import CellConfig, build_config
from harness.cell.batches import load_corpus, training_text
from harness.errors import HarnessError
from harness.cell.model import CharRNN
from harness.cell.evaluation import causal_ppl, streamed_ppl
from harness.cell.train import run_cell

from test_train import book, tiny  # noqa: F401 - fixtures and the tiny cell

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_book_is_read_in_chunks_that_never_touch_held_out_or_selection_text():
    encoded = torch.arange(100)
    train = training_text(encoded, max_tokens=20, held_out=15, train_text="book")
    # The first 20, then what follows the 15 held-out tokens, cut to whole chunks of 20 (35..94; 95..99 left out).
    assert train.tolist() == list(range(20)) + list(range(35, 95))
    assert not set(train.tolist()) & set(range(20, 35))
    assert training_text(encoded, 20, 15, "first").tolist() == list(range(20))


def test_epochs_read_the_chunks_in_turn(book):  # noqa: F811
    corpus = load_corpus(str(book), max_tokens=1000, val_tokens=300, select_tokens=200, train_text="book")
    assert corpus.chunks == len(corpus.train) // 1000 >= 2
    held_out = corpus.tokens[1000:1500]
    assert torch.equal(corpus.val, corpus.tokens[1000:1300]) and torch.equal(corpus.select, corpus.tokens[1300:1500])
    first, second = corpus.train[corpus.epoch_span(1)], corpus.train[corpus.epoch_span(2)]
    assert torch.equal(first, corpus.tokens[:1000]) and torch.equal(second, corpus.tokens[1500:2500])
    assert torch.equal(corpus.train[corpus.epoch_span(corpus.chunks + 1)], first)  # round again
    assert len(held_out) == 500
    recipe = load_corpus(str(book), max_tokens=1000, val_tokens=300)
    assert recipe.chunks == 1 and torch.equal(recipe.train[recipe.epoch_span(7)], recipe.tokens[:1000])


def test_selection_and_held_out_text_must_fit_in_the_corpus(book):  # noqa: F811
    with pytest.raises(HarnessError, match="max_tokens \\+ val_tokens \\+ select_tokens = 3500 exceeds its"):
        load_corpus(str(book), max_tokens=3000, val_tokens=300, select_tokens=200)


@pytest.mark.parametrize("values, message", [
    ({"select_every": 5}, "eval.select_every = 5 needs selection text: set data.select_tokens"),
    ({"select_tokens": 100, "patience": 20}, "train.patience = 20 needs selection evaluations: set eval.select_every"),
])
def test_selection_settings_that_cannot_work_are_refused_in_one_line(values, message):
    with pytest.raises(HarnessError) as info:
        build_config(values, "suite.yaml")
    assert str(info.value) == f"suite.yaml: {message}"


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_streamed_perplexity_is_the_windowed_one_when_each_segment_is_one_target(cell):
    torch.manual_seed(0)
    model = CharRNN(12, cell, layers=2, hidden=16).eval()
    tokens = torch.randint(0, 12, (400,))
    cfg = CellConfig(num_steps=9, max_tokens=1000)  # only num_steps matters to causal_ppl
    windowed = causal_ppl(model, tokens, 100, 37, cfg, "cpu")
    with torch.no_grad():
        assert streamed_ppl(model, tokens, 100, 37, context=9, segment=1) == pytest.approx(windowed, rel=1e-5)
        # Longer segments give every target at least as much context; 37 is not a multiple of 8, so the
        # last segment is cut short and its padding must not count.
        longer = streamed_ppl(model, tokens, 100, 37, context=9, segment=8)
    assert math.isfinite(longer) and longer != pytest.approx(windowed, rel=1e-9)


def test_the_best_epoch_is_chosen_on_selection_text_and_reported_on_held_out_text(book):  # noqa: F811
    cfg = tiny(book, cell="gru", epochs=12, max_tokens=1500, val_tokens=300, select_tokens=300, select_every=1,
               eval_every=1, lr=4.0)
    record = run_cell(cfg)
    log = record["epoch_log"]
    selection = [row["select_ppl"] for row in log]
    best = min(range(len(log)), key=lambda i: selection[i])
    assert record["selected_epoch"] == log[best]["epoch"]
    assert record["selected_select_ppl"] == selection[best]
    # The held-out text is evaluated at the chosen epoch's weights: the same numbers as that epoch's row.
    assert record["selected_causal_ppl"] == pytest.approx(log[best]["causal_ppl"], rel=1e-6)
    assert record["selected_val_ppl"] == pytest.approx(log[best]["val_ppl"], rel=1e-6)
    assert record["stopped_early"] is False and record["epochs_done"] == 12


def test_patience_stops_a_cell_that_no_longer_improves(book):  # noqa: F811
    # lr 40 with no clipping to speak of: the selection perplexity gets worse after the first epochs.
    cfg = tiny(book, cell="rnn", epochs=60, max_tokens=1500, val_tokens=300, select_tokens=300, select_every=2,
               patience=6, eval_every=0, lr=40.0, clip=1000.0)
    record = run_cell(cfg)
    if record["status"] != "ok":
        pytest.skip(f"the run diverged ({record['reason']}); patience was not reached")
    done = record["epochs_done"]
    assert record["stopped_early"] is True and done < 60
    assert done - record["selected_epoch"] == 6  # stopped at the first evaluation 6 epochs after the best
    evaluated = [row for row in record["epoch_log"] if row["select_ppl"] is not None]
    assert all(row["epoch"] % 2 == 0 for row in evaluated)
    assert min(row["select_ppl"] for row in evaluated) == record["selected_select_ppl"]
    # The last epoch done is evaluated on the held-out text, as a last epoch is.
    assert record["epoch_log"][-1]["causal_ppl"] is not None and record["causal_ppl"] is not None


def test_without_selection_nothing_is_selected(book):  # noqa: F811
    record = run_cell(tiny(book, epochs=2))
    assert record["selected_epoch"] is None and record["selected_causal_ppl"] is None
    assert all(row["select_ppl"] is None for row in record["epoch_log"]) and record["stopped_early"] is False


def test_patience_is_checked_only_where_the_selection_text_was_evaluated(book):  # noqa: F811
    # Patience 3 with an evaluation every 5 epochs: stopping at epoch 8 would end the cell between two
    # evaluations; it stops at the first evaluation 3 or more epochs after the best.
    cfg = tiny(book, cell="rnn", epochs=40, max_tokens=1500, val_tokens=300, select_tokens=300, select_every=5,
               patience=3, eval_every=0, lr=40.0, clip=1000.0)
    record = run_cell(cfg)
    if record["status"] != "ok":
        pytest.skip(f"the run diverged ({record['reason']}); patience was not reached")
    assert record["stopped_early"] is True
    assert record["epochs_done"] % 5 == 0 and record["epochs_done"] - record["selected_epoch"] == 5


def test_impl_fused_is_recorded_as_ignored_off_the_cpu_float32_path(book):  # noqa: F811
    from harness.cell.train import effective_impl

    assert effective_impl(tiny(book, cell="gru", impl="fused")) == "fused"
    assert effective_impl(tiny(book, cell="lstm", impl="fused")) == "torch"
    assert effective_impl(tiny(book, cell="gru", impl="fused", precision="bf16")) == "torch"
    assert effective_impl(tiny(book, cell="gru", impl="fused", device="cuda")) == "torch"
    record = run_cell(tiny(book, cell="gru", impl="fused", precision="bf16", epochs=1))
    assert any(note.startswith("impl fused ignored") for note in record["notes"])


def test_without_the_last_evaluation_the_held_out_text_is_read_once_at_the_chosen_epoch(book):  # noqa: F811
    cfg = tiny(book, epochs=4, eval_every=0, select_tokens=200, select_every=1).model_copy(update={"eval_last": False})
    record = run_cell(cfg, with_losses=True)
    assert all(row["causal_ppl"] is None for row in record["epoch_log"])
    assert record["causal_ppl"] is None and record["selected_causal_ppl"] > 1
    assert set(record["losses"]) == {"selected"}


def test_no_last_evaluation_needs_a_selection_text():
    with pytest.raises(HarnessError) as info:
        build_config({"eval_last": False}, "suite.yaml")
    assert str(info.value) == ("suite.yaml: eval.last = false needs selection evaluations (eval.select_every): else "
                               "the held-out text is evaluated only every eval.every epochs, never at the end")
