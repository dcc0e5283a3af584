"""Optimisers, schedules and the model settings of deep-network training (forget bias, dropout), each
against PyTorch's own implementation or a value known by hand."""

import math

import pytest
import torch
from torch import nn

from harness.cell.model import CharRNN
from harness.cell.optimizers import ForeachSGD, epoch_lr, make_optimizer, scheduled, set_lr
from harness.errors import HarnessError
from harness.spec.config import CellConfig, build_config


def _params(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, generator=generator, requires_grad=True),
            torch.randn(5, generator=generator, requires_grad=True)]


def _grads(step: int, params) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=generator) for p in params]


def _reference(cfg: CellConfig, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _train(optimizer, params, cfg: CellConfig, epochs: int, steps_per_epoch: int = 3, scheduler=None):
    for epoch in range(1, epochs + 1):
        if scheduler is None and scheduled(cfg):
            set_lr(optimizer, epoch_lr(cfg, epoch))
        for step in range(steps_per_epoch):
            optimizer.zero_grad()
            for p, g in zip(params, _grads(epoch * 10 + step, params)):
                p.grad = g.clone()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return [p.detach().clone() for p in params]


SETTINGS = [
    dict(optimizer="sgd", lr=0.5),
    dict(optimizer="sgd", lr=0.5, momentum=0.9, weight_decay=0.01),
    dict(optimizer="adam", lr=0.01, betas=(0.8, 0.99)),
    dict(optimizer="adam", lr=0.01, weight_decay=0.1),
    dict(optimizer="adamw", lr=0.01, betas=(0.85, 0.995), weight_decay=0.1),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_each_optimizer_takes_the_steps_of_torch_optim(settings):
    cfg = CellConfig(epochs=4, **settings)
    ours, theirs = _params(), _params()
    got = _train(make_optimizer(ours, cfg), ours, cfg, epochs=4)
    want = _train(_reference(cfg, theirs), theirs, cfg, epochs=4)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_recipes_sgd_is_written_out_and_the_others_are_torch_optims():
    assert isinstance(make_optimizer(_params(), CellConfig()), ForeachSGD)
    assert isinstance(make_optimizer(_params(), CellConfig(optimizer="adamw")), torch.optim.AdamW)
    assert isinstance(make_optimizer(_params(), CellConfig(momentum=0.5)), torch.optim.SGD)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_cosine_schedule_is_torchs_cosine_annealing_stepped_per_epoch(optimizer):
    cfg = CellConfig(optimizer=optimizer, lr=0.1, epochs=7, schedule="cosine")
    ours, theirs = _params(), _params()
    got = _train(make_optimizer(ours, cfg), ours, cfg, epochs=7)
    reference = _reference(cfg, theirs)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=7)
    want = _train(reference, theirs, cfg, epochs=7, scheduler=scheduler)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_warmup_rises_linearly_then_the_cosine_falls_to_zero():
    cfg = CellConfig(lr=2.0, epochs=6, schedule="cosine", lr_warmup_epochs=2)
    assert [epoch_lr(cfg, e) for e in (1, 2, 3)] == [1.0, 2.0, 2.0]
    assert epoch_lr(cfg, 5) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 2 / 4)))
    assert epoch_lr(CellConfig(lr=2.0, epochs=6, lr_warmup_epochs=2), 6) == 2.0  # constant after the warm-up
    assert not scheduled(CellConfig()) and scheduled(CellConfig(lr_warmup_epochs=1))


def test_forget_bias_sets_each_forget_gate_and_leaves_the_rest():
    torch.manual_seed(3)
    plain = CharRNN(10, "lstm", layers=2, bidirectional=True, hidden=6)
    torch.manual_seed(3)
    biased = CharRNN(10, "lstm", layers=2, bidirectional=True, hidden=6, forget_bias=1.0)
    for (name, before), (_, after) in zip(plain.rnn.named_parameters(), biased.rnn.named_parameters()):
        if not name.startswith("bias_"):
            assert torch.equal(before, after), name
            continue
        forget = slice(6, 12)
        assert torch.all(after[forget] == (1.0 if name.startswith("bias_ih") else 0.0)), name
        for part in (slice(0, 6), slice(12, 24)):
            assert torch.equal(before[part], after[part]), name
    total = biased.rnn.bias_ih_l1_reverse[6:12] + biased.rnn.bias_hh_l1_reverse[6:12]
    assert torch.all(total == 1.0)


def test_dropout_acts_in_training_only_between_layers_and_on_the_output():
    torch.manual_seed(0)
    model = CharRNN(12, "gru", layers=2, hidden=8, dropout=0.5)
    assert model.rnn.dropout == 0.5 and isinstance(model.output_dropout, nn.Dropout)
    assert CharRNN(12, "gru", layers=1, hidden=8, dropout=0.5).rnn.dropout == 0  # nothing between one layer
    tokens = torch.randint(0, 12, (3, 7))
    model.eval()
    first, _ = model(tokens)
    second, _ = model(tokens)
    assert torch.equal(first, second)
    without = CharRNN(12, "gru", layers=2, hidden=8)
    without.load_state_dict(model.state_dict())
    without.eval()
    assert torch.equal(without(tokens)[0], first)  # at evaluation dropout changes nothing
    model.train()
    assert not torch.equal(model(tokens)[0], first)


def test_new_keys_leave_the_hash_of_every_configuration_without_them():
    # Known hashes of configurations stored before these keys existed: resume depends on them.
    assert CellConfig().config_hash() == "f5ded9d1d19d"
    assert CellConfig(cell="gru", layers=3, lr=0.5).config_hash() == "4808714337aa"
    assert CellConfig(optimizer="adam").config_hash() != CellConfig().config_hash()


@pytest.mark.parametrize("values, message", [
    ({"optimizer": "adam", "momentum": 0.9}, "train.momentum = 0.9 applies to optimizer sgd"),
    ({"betas": [0.8, 0.9]}, "train.betas = [0.8, 0.9] applies to optimizer adam or adamw"),
    ({"optimizer": "adam", "betas": [0.9, 1.0]}, "must each be at least 0 and below 1"),
    ({"epochs": 5, "lr_warmup_epochs": 6}, "train.warmup_epochs = 6 is more than train.epochs = 5"),
    ({"dropout": 0.2, "impl": "fused"}, "model.dropout = 0.2 needs model.impl torch"),
    ({"dropout": 1.0}, "dropout"),
    ({"optimizer": "rmsprop"}, "optimizer"),
])
def test_settings_that_do_not_apply_are_one_line_errors(values, message):
    with pytest.raises(HarnessError) as caught:
        build_config(values, "suite.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (3, False), (2, True)])
def test_the_parameter_count_by_arithmetic_is_the_models(cell, layers, bidirectional):
    from harness.cell.flops import param_count
    from harness.cell.model import count_params

    for hidden in (1, 7, 32):
        model = CharRNN(28, cell, layers, bidirectional, hidden)
        assert param_count(28, cell, layers, bidirectional, hidden) == count_params(model)


@pytest.mark.parametrize("target", [1, 5_000, 123_457, 1_000_000])
def test_the_hidden_size_for_a_parameter_count_is_the_closest(target):
    from harness.cell.flops import hidden_for_params, param_count

    chosen = hidden_for_params(target, 28, "lstm", 3, False)
    best = min(range(1, 1200), key=lambda h: (abs(param_count(28, "lstm", 3, False, h) - target), h))
    assert chosen == best


def test_a_parameter_matched_cell_records_its_hidden_size_and_count(tmp_path):
    from harness.cell.flops import hidden_for_params, param_count
    from harness.cell.train import run_cell

    corpus = tmp_path / "text.txt"
    corpus.write_text("the time traveller for so it will be convenient to speak of him " * 40)
    cfg = CellConfig(corpus=str(corpus), max_tokens=1500, val_tokens=200, cell="gru", layers=2, epochs=1,
                     batch_size=8, num_steps=20, target_params=3000, sample_chars=5, threads=1)
    record = run_cell(cfg)
    vocab = record["vocab_size"]
    assert record["hidden"] == hidden_for_params(3000, vocab, "gru", 2, False) != cfg.hidden
    assert record["params"] == param_count(vocab, "gru", 2, False, record["hidden"])
