"""Causal perplexity cannot see the future, whatever the direction; teacher forcing can, for a
bidirectional model. Untrained models suffice: any path from a later character to an output shows."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from harness.spec.config import CellConfig
from harness.cell.model import CharRNN
from harness.cell.evaluation import causal_logits, causal_ppl

VOCAB, NUM_STEPS, LENGTH = 9, 10, 80
HELD_OUT_START = 30  # the held-out split starts here, as max_tokens would place it
T = 50  # the position whose prediction is examined


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


def _model(cell: str, bidirectional: bool) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(VOCAB, cell, 2, bidirectional, 16).eval()


def _text_and_future_changed() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, VOCAB, (LENGTH,), generator=generator)
    changed = tokens.clone()
    shift = torch.randint(1, VOCAB - 1, (LENGTH - T - 1,), generator=generator)
    changed[T + 1 :] = (tokens[T + 1 :] - 1 + shift) % (VOCAB - 1) + 1  # every character after T differs
    assert bool((changed[T + 1 :] != tokens[T + 1 :]).all()) and torch.equal(changed[: T + 1], tokens[: T + 1])
    return tokens, changed


def _windows(tokens: torch.Tensor) -> torch.Tensor:
    """Row i is the window that predicts position HELD_OUT_START + i."""
    return tokens[HELD_OUT_START - NUM_STEPS : LENGTH - 1].unfold(0, NUM_STEPS, 1)


CASES = list(itertools.product(("rnn", "gru", "lstm"), (False, True)))


@pytest.mark.parametrize("cell, bidirectional", CASES)
def test_causal_predictions_up_to_t_ignore_every_later_character(cell, bidirectional):
    model = _model(cell, bidirectional)
    tokens, changed = _text_and_future_changed()
    before, after = causal_logits(model, _windows(tokens)), causal_logits(model, _windows(changed))
    positions = torch.arange(HELD_OUT_START, LENGTH)
    same = (before == after).all(dim=1)
    # The prediction at p reads tokens[p - NUM_STEPS : p]: untouched up to p = T + 1, touched after.
    assert torch.equal(same, positions <= T + 1)


@pytest.mark.parametrize("cell, bidirectional", CASES)
def test_causal_perplexity_up_to_t_ignores_every_later_character(cell, bidirectional):
    model = _model(cell, bidirectional)
    tokens, changed = _text_and_future_changed()
    cfg = CellConfig(num_steps=NUM_STEPS)
    count = T - HELD_OUT_START + 1  # targets HELD_OUT_START .. T
    device = torch.device("cpu")
    assert causal_ppl(model, tokens, HELD_OUT_START, count, cfg, device) == causal_ppl(
        model, changed, HELD_OUT_START, count, cfg, device)
    whole = LENGTH - HELD_OUT_START
    assert causal_ppl(model, tokens, HELD_OUT_START, whole, cfg, device) != causal_ppl(
        model, changed, HELD_OUT_START, whole, cfg, device)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_teacher_forced_prediction_at_t_sees_the_future_only_when_bidirectional(cell):
    tokens, changed = _text_and_future_changed()
    for bidirectional in (False, True):
        model = _model(cell, bidirectional)
        with torch.no_grad():
            # one forward over the whole text; the output at position T - 1 predicts character T
            before = model(tokens[None, :-1])[0][T - 1]
            after = model(changed[None, :-1])[0][T - 1]
        if bidirectional:
            assert not torch.allclose(before, after), "the backward direction reads characters after T"
        else:
            assert torch.equal(before, after)


@pytest.mark.parametrize("cell, bidirectional", [("lstm", False), ("gru", True)])
def test_causal_perplexity_is_each_character_from_the_window_before_it(cell, bidirectional):
    model = _model(cell, bidirectional)
    tokens, _ = _text_and_future_changed()
    count = 20
    losses = []
    with torch.no_grad():
        for p in range(HELD_OUT_START, HELD_OUT_START + count):
            logits = model(tokens[None, p - NUM_STEPS : p])[0][-1]  # the window's last position
            losses.append(float(F.cross_entropy(logits[None], tokens[p : p + 1])))
    expected = math.exp(sum(losses) / count)
    cfg = CellConfig(num_steps=NUM_STEPS)
    assert causal_ppl(model, tokens, HELD_OUT_START, count, cfg, torch.device("cpu")) == pytest.approx(
        expected, rel=1e-5)


def test_causal_logits_do_not_depend_on_the_chunk_size():
    model = _model("lstm", True)
    tokens, _ = _text_and_future_changed()
    windows = _windows(tokens)
    assert torch.allclose(causal_logits(model, windows, chunk=7), causal_logits(model, windows), atol=1e-6)


@pytest.mark.parametrize("cell, bidirectional", CASES)
def test_heldout_teacher_forced_and_causal_share_windows(cell, bidirectional):
    """Same targets, same context: a unidirectional model scores both the same; a bidirectional one
    gets a different teacher-forced score only because it reads the target (change only the character
    after each target and the teacher-forced score stays)."""
    from harness.cell.evaluation import heldout_ppl

    model = _model(cell, bidirectional)
    tokens, _ = _text_and_future_changed()
    cfg = CellConfig(num_steps=NUM_STEPS, batch_size=1, max_tokens=HELD_OUT_START, val_tokens=20)
    forced, causal = heldout_ppl(model, tokens, HELD_OUT_START, 20, cfg, torch.device("cpu"))
    assert causal == pytest.approx(causal_ppl(model, tokens, HELD_OUT_START, 20, cfg, torch.device("cpu")),
                                   rel=1e-5)
    if bidirectional:
        assert forced != pytest.approx(causal, rel=1e-4)
    else:
        assert forced == causal
    # Teacher-forced windows end at the target: the characters after the last target do not count.
    later = tokens.clone()
    later[HELD_OUT_START + 20 :] = (later[HELD_OUT_START + 20 :] % (VOCAB - 1)) + 1
    assert heldout_ppl(model, later, HELD_OUT_START, 20, cfg, torch.device("cpu")) == (forced, causal)
