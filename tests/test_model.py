"""The model: output and state shapes, one-hot input, parameter count and the FLOP formula."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn import functional as F

from harness.cell.model import CharRNN, count_params, detach_state, forward_flops_per_token, training_flops

CELLS = ("rnn", "gru", "lstm")
VOCAB, HIDDEN, BATCH, STEPS = 7, 5, 3, 4


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


def _tokens(seed: int = 0, batch: int = BATCH, steps: int = STEPS) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, steps), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cell, layers, bidirectional", itertools.product(CELLS, (1, 2, 3, 4), (False, True)))
def test_output_and_state_shapes(cell, layers, bidirectional):
    torch.manual_seed(0)
    model = CharRNN(VOCAB, cell, layers, bidirectional, HIDDEN)
    logits, state = model(_tokens())
    directions = 2 if bidirectional else 1
    assert logits.shape == (STEPS * BATCH, VOCAB)  # time-major, like targets Y.T.reshape(-1)
    assert model.head.in_features == directions * HIDDEN
    states = state if cell == "lstm" else (state,)
    assert len(states) == (2 if cell == "lstm" else 1)
    for s in states:
        assert s.shape == (layers * directions, BATCH, HIDDEN)
    begin = model.begin_state(BATCH)
    begins = begin if cell == "lstm" else (begin,)
    assert [b.shape for b in begins] == [s.shape for s in states]
    assert all(not b.any() for b in begins)
    # a zero initial state is what the recurrent layer assumes without one
    assert torch.equal(model(_tokens(), begin)[0], logits)


@pytest.mark.parametrize("cell", CELLS)
def test_logits_are_time_major(cell):
    # Changing the token at (batch 1, step 2) of a unidirectional model changes only the logits of
    # row 1 from step 2 on; in the time-major layout, row t * batch + b holds (step t, batch b).
    torch.manual_seed(0)
    model = CharRNN(VOCAB, cell, 2, False, HIDDEN)
    x = _tokens()
    changed = x.clone()
    changed[1, 2] = (x[1, 2] + 1) % VOCAB
    before = model(x)[0].reshape(STEPS, BATCH, VOCAB)
    after = model(changed)[0].reshape(STEPS, BATCH, VOCAB)
    differs = (before != after).any(dim=-1)  # (steps, batch)
    expected = torch.zeros(STEPS, BATCH, dtype=torch.bool)
    expected[2:, 1] = True
    assert torch.equal(differs, expected)


@pytest.mark.parametrize("cell, bidirectional", [("rnn", False), ("gru", True), ("lstm", True)])
def test_one_hot_lookup_is_exactly_the_seeds_one_hot(cell, bidirectional):
    torch.manual_seed(0)
    model = CharRNN(VOCAB, cell, 2, bidirectional, HIDDEN)
    x = _tokens(seed=1)
    seed_one_hot = F.one_hot(x.T.long(), VOCAB).to(torch.float32)  # the seed's RNNModel.forward
    assert model.one_hot(x).dtype == torch.float32
    assert torch.equal(model.one_hot(x), seed_one_hot)
    ours, our_state = model(x)
    theirs, their_state = model.forward_one_hot(seed_one_hot)
    assert torch.equal(ours, theirs)
    for a, b in zip(our_state if cell == "lstm" else (our_state,), their_state if cell == "lstm" else (their_state,)):
        assert torch.equal(a, b)


def test_parameter_count_matches_the_hand_formula():
    V, H = 5, 3
    # RNN, 1 layer: W_ih (H x V) + W_hh (H x H) + two biases (H each); head (V x H) + bias V
    assert count_params(CharRNN(V, "rnn", 1, False, H)) == (3 * 5 + 3 * 3 + 2 * 3) + (5 * 3 + 5) == 50
    # GRU, 1 layer: three gate blocks of the above
    assert count_params(CharRNN(V, "gru", 1, False, H)) == 3 * (3 * 5 + 3 * 3 + 2 * 3) + (5 * 3 + 5) == 110
    # LSTM, 2 layers, bidirectional: four gate blocks per layer and direction;
    # layer 1 reads V = 5 inputs, layer 2 reads both directions' 2H = 6; the head reads 2H = 6.
    layer1 = 2 * (4 * 3 * (5 + 3) + 2 * 4 * 3)  # 2 * (96 + 24) = 240
    layer2 = 2 * (4 * 3 * (6 + 3) + 2 * 4 * 3)  # 2 * (108 + 24) = 264
    head = 6 * 5 + 5  # 35
    assert count_params(CharRNN(V, "lstm", 2, True, H)) == layer1 + layer2 + head == 539


def test_forward_flops_on_hand_computed_cases():
    # RNN, 1 layer, uni, V = 3, H = 2: 2 * 1 gate * 2 * (3 + 2) = 20; head 2 * 2 * 3 = 12
    assert forward_flops_per_token(3, "rnn", 1, False, 2) == 20 + 12 == 32
    # GRU, 2 layers, bi, V = 4, H = 2:
    #   layer 1: 2 directions * 2 * 3 gates * 2 * (4 + 2) = 144
    #   layer 2: 2 directions * 2 * 3 gates * 2 * (2*2 + 2) = 144
    #   head:    2 * (2*2) * 4 = 32
    assert forward_flops_per_token(4, "gru", 2, True, 2) == 144 + 144 + 32 == 320
    # The lesson's LSTM, 2 layers, uni, V = 28, H = 256:
    #   2*4*256*(28+256) = 581,632;  2*4*256*(256+256) = 1,048,576;  head 2*256*28 = 14,336
    assert forward_flops_per_token(28, "lstm", 2, False, 256) == 581_632 + 1_048_576 + 14_336 == 1_644_544


def test_training_flops_are_three_forward_passes_per_token():
    assert training_flops(4, "gru", 2, True, 2, tokens=10) == 3 * 10 * 320 == 9_600
    assert training_flops(28, "lstm", 2, False, 256, tokens=9_800) == 3 * 9_800 * 1_644_544


@pytest.mark.parametrize("cell, layers, bidirectional", itertools.product(CELLS, (1, 3), (False, True)))
def test_forward_flops_equal_two_per_weight(cell, layers, bidirectional):
    # Each weight matrix multiplies one vector per token and time step: 2 FLOPs per weight (biases excluded).
    model = CharRNN(11, cell, layers, bidirectional, 6)
    weights = sum(p.numel() for name, p in model.named_parameters() if "weight" in name)
    assert forward_flops_per_token(11, cell, layers, bidirectional, 6) == 2 * weights


@pytest.mark.parametrize("cell", CELLS)
def test_detach_state_cuts_the_graph_and_keeps_values(cell):
    model = CharRNN(VOCAB, cell, 1, False, HIDDEN)
    _, state = model(_tokens())
    detached = detach_state(state)
    pairs = zip(state, detached) if cell == "lstm" else [(state, detached)]
    for original, cut in pairs:
        assert original.requires_grad and not cut.requires_grad
        assert torch.equal(original, cut)
