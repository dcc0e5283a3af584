"""The optimisers and learning-rate schedules a cell trains with.

The recipe's plain SGD (no momentum, no weight decay) is written out as one foreach update
(``ForeachSGD``): constructing any ``torch.optim`` optimiser imports ``torch._dynamo``, about 2 s of every
cell process's start-up, which a suite of many short cells (a regression check) pays over and over. Every
other setting (SGD with momentum or weight decay, Adam, AdamW) uses ``torch.optim``'s own implementation: a
cell that trains with them runs for minutes, and the maintained implementation is the reference.

The schedule sets the learning rate once per epoch, before it: constant, or after ``train.warmup_epochs`` of a
linear rise, half a cosine from ``lr`` down to 0 over the remaining epochs (``torch.optim.lr_scheduler``'s
``CosineAnnealingLR`` stepped once per epoch, with ``T_max`` the epochs after the warm-up).
"""

from __future__ import annotations

import math

import torch


class ForeachSGD:
    """The recipe's optimiser, plain SGD (no momentum, no weight decay): ``p -= lr * p.grad`` for all
    parameters in one foreach kernel, the update of ``torch.optim.SGD(params, lr)``."""

    def __init__(self, params: list[torch.Tensor], lr: float):
        self.params = list(params)
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # Every parameter has a gradient here: the step's clipping has just scaled all of them.
        torch._foreach_add_(self.params, [p.grad for p in self.params], alpha=-self.lr)

    def state_dict(self) -> dict:
        return {}  # no state between steps: a checkpoint needs nothing of it

    def load_state_dict(self, state: dict) -> None:
        pass


def make_optimizer(params: list[torch.Tensor], cfg):
    """The optimiser ``cfg`` (a CellConfig) asks for, at its base learning rate."""
    if cfg.optimizer == "sgd" and not cfg.momentum and not cfg.weight_decay:
        return ForeachSGD(params, cfg.lr)
    import torch.optim  # see the module's docstring: only cells that need it pay for its import

    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               foreach=True)
    kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, foreach=True)


def epoch_lr(cfg, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (1-based)."""
    warmup = cfg.lr_warmup_epochs
    if epoch <= warmup:
        return cfg.lr * epoch / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    after = max(1, cfg.epochs - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup - 1) / after))


def scheduled(cfg) -> bool:
    """Whether the learning rate changes between epochs (the recipe's does not)."""
    return cfg.schedule != "constant" or cfg.lr_warmup_epochs > 0


def set_lr(optimizer, lr: float) -> None:
    if isinstance(optimizer, ForeachSGD):
        optimizer.lr = lr
    else:
        for group in optimizer.param_groups:
            group["lr"] = lr
