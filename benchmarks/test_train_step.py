"""pytest-benchmark: one training step (forward, cross-entropy, backward, clipping, SGD) of the lesson's model
per cell type and direction, on pre-built one-hot batches so that only the step itself is timed.

Not part of the default test run (``testpaths = ["tests"]``). Save a baseline, then fail on a slowdown:

    pytest benchmarks --benchmark-autosave
    pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:10%

``HARNESS_BENCH_ROUNDS`` and ``HARNESS_BENCH_WARMUP`` set the rounds (default 30) and warm-up rounds (default 5);
``HARNESS_BENCH_THREADS`` pins torch's CPU threads (default: torch's choice, recorded in extra_info).
"""

from __future__ import annotations

import os

import pytest
import torch

from harness.spec.config import CellConfig
from harness.cell.model import CharRNN, count_params, training_flops
from harness.cell.train import Trainer

ROUNDS = int(os.environ.get("HARNESS_BENCH_ROUNDS", "30"))
WARMUP_ROUNDS = int(os.environ.get("HARNESS_BENCH_WARMUP", "5"))
THREADS = os.environ.get("HARNESS_BENCH_THREADS")
VOCAB = 28  # the lesson's character vocabulary: 26 letters, space and <unk>
LAYERS = 2
HIDDEN = 256
BATCH_SIZE = 32
NUM_STEPS = 35


@pytest.fixture(scope="module", autouse=True)
def _threads():
    if THREADS:
        previous = torch.get_num_threads()
        torch.set_num_threads(int(THREADS))
        yield
        torch.set_num_threads(previous)
    else:
        yield


@pytest.mark.parametrize("direction", ["uni", "bi"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_train_step(benchmark, cell, direction):
    cfg = CellConfig(cell=cell, layers=LAYERS, direction=direction, hidden=HIDDEN, batch_size=BATCH_SIZE,
                     num_steps=NUM_STEPS, device="cpu")
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = CharRNN(VOCAB, cell, LAYERS, cfg.bidirectional, HIDDEN).to(device)
    trainer = Trainer(model, cfg, device)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (BATCH_SIZE, NUM_STEPS + 1), generator=generator)
    x_one_hot = model.one_hot(tokens[:, :-1])  # (steps, batch, vocab), built once outside the timing
    targets = tokens[:, 1:].T.reshape(-1)  # time-major, as the training loop lays them out
    state = model.begin_state(BATCH_SIZE, device)

    def step():
        loss, _ = trainer.step(x_one_hot, targets, state)
        return loss

    loss = benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    assert torch.isfinite(loss)

    step_tokens = BATCH_SIZE * NUM_STEPS
    flops = training_flops(VOCAB, cell, LAYERS, cfg.bidirectional, HIDDEN, step_tokens)
    benchmark.extra_info.update(
        cell=cell, direction=direction, layers=LAYERS, hidden=HIDDEN, batch_size=BATCH_SIZE,
        num_steps=NUM_STEPS, vocab=VOCAB, tokens=step_tokens, flops=flops, params=count_params(model),
        threads=torch.get_num_threads(), torch=torch.__version__,
    )
    if benchmark.stats is not None:  # absent under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info.update(tokens_per_sec=step_tokens / median, flops_per_sec=flops / median)
