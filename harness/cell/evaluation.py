"""How well a trained model predicts text: teacher-forced, causal, streamed and selection perplexities of
a span of the corpus, the best epoch by the selection text, and greedy generation for a record's samples.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from harness.cell.batches import Corpus
from harness.cell.flops import STREAM_SEGMENT
from harness.cell.model import CharRNN
from harness.cell.precision import autocast
from harness.spec.config import CellConfig


@torch.no_grad()
def position_logits(model: CharRNN, windows: torch.Tensor, position: int, chunk: int = 1024) -> torch.Tensor:
    """Logits at ``position`` of each window, every window read from a fresh state."""
    out = []
    for start in range(0, len(windows), chunk):
        part = windows[start : start + chunk]
        logits, _ = model(part, None)
        out.append(logits.reshape(part.shape[1], part.shape[0], -1)[position])
    return torch.cat(out)


def causal_logits(model: CharRNN, windows: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Logits for the character after each window, computed from that window alone (fresh state), so
    that nothing after the predicted position can influence the prediction, whatever the direction."""
    return position_logits(model, windows, -1, chunk)


@torch.no_grad()
def heldout_ppl(model: CharRNN, corpus_tokens: torch.Tensor, start: int, count: int, cfg: CellConfig,
                device) -> tuple[float, float]:
    """Teacher-forced and causal perplexity of tokens[start:start+count] (``heldout_losses``)."""
    forced_ppl, causal_ppl, _ = heldout_losses(model, corpus_tokens, start, count, cfg, device)
    return forced_ppl, causal_ppl


@torch.no_grad()
def heldout_losses(model: CharRNN, corpus_tokens: torch.Tensor, start: int, count: int, cfg: CellConfig,
                   device) -> tuple[float, float, torch.Tensor | None]:
    """Teacher-forced and causal perplexity of tokens[start:start+count] on one set of windows, and the
    causal loss (nats, on the CPU) of each of those positions.

    Every target t is predicted by the output at the position that has read the ``num_steps`` characters
    before it. Causal: the window is exactly those characters. Teacher-forced: the window also holds the
    target itself, as in training, where a bidirectional layer's backward half reads the characters it is
    asked to predict. Same targets, same context: their ratio is the leak alone (1 for a unidirectional
    model, whose output there cannot depend on a later input, so one pass serves both). The per-position
    losses let an analysis resample the held-out text itself (its sampling error)."""
    if count == 0:
        return float("nan"), float("nan"), None
    lo = start - cfg.num_steps
    targets = corpus_tokens[start : start + count]
    with_target = corpus_tokens[lo : start + count].unfold(0, cfg.num_steps + 1, 1)
    with autocast(cfg, device):
        forced = position_logits(model, with_target, cfg.num_steps - 1)
        causal = causal_logits(model, with_target[:, :-1]) if model.num_directions == 2 else forced
    forced_ppl = exp_or_inf(float(F.cross_entropy(forced.float(), targets)))
    causal_ppl = exp_or_inf(float(F.cross_entropy(causal.float(), targets)))
    causal_losses = F.cross_entropy(causal.float(), targets, reduction="none").cpu()
    return forced_ppl, causal_ppl, causal_losses


@torch.no_grad()
def causal_ppl(model: CharRNN, corpus_tokens: torch.Tensor, start: int, count: int, cfg: CellConfig,
               device) -> float:
    """Perplexity of tokens[start:start+count], each predicted from the ``num_steps`` tokens before it."""
    if count == 0:
        return float("nan")
    lo = start - cfg.num_steps
    windows = corpus_tokens[lo : start + count - 1].unfold(0, cfg.num_steps, 1)
    targets = corpus_tokens[start : start + count]
    with autocast(cfg, device):
        logits = causal_logits(model, windows)
    return exp_or_inf(float(F.cross_entropy(logits.float(), targets)))


@torch.no_grad()
def streamed_ppl(model: CharRNN, corpus_tokens: torch.Tensor, start: int, count: int, context: int,
                 segment: int = STREAM_SEGMENT) -> float:
    """Perplexity of tokens[start:start+count] read as a stream: cut into segments of ``segment`` targets,
    read side by side (one batch), each from a fresh state that first reads the ``context`` tokens before
    it; every target is predicted from all the text before it in its segment, never from a later token.

    For a unidirectional model only (a bidirectional one would read ahead). About ``num_steps`` times
    cheaper than ``causal_ppl``'s one window per target, which makes evaluating every epoch affordable."""
    segments = -(-count // segment)
    offsets = start - context + torch.arange(segments)[:, None] * segment + torch.arange(context + segment - 1)
    inputs = corpus_tokens[offsets.clamp_(max=len(corpus_tokens) - 2).to(corpus_tokens.device)]
    target_positions = start + torch.arange(segments)[:, None] * segment + torch.arange(segment)
    keep = (target_positions < start + count).reshape(-1)
    targets = corpus_tokens[target_positions.clamp_(max=len(corpus_tokens) - 1).to(corpus_tokens.device)]
    logits, _ = model(inputs, None)  # (steps * segments, vocab), time-major
    logits = logits.reshape(inputs.shape[1], segments, -1)[context - 1 :].transpose(0, 1).reshape(-1, logits.shape[-1])
    keep = keep.to(logits.device)
    loss = F.cross_entropy(logits[keep].float(), targets.reshape(-1)[keep])
    return exp_or_inf(float(loss))


def selection_ppl(model: CharRNN, corpus_tokens: torch.Tensor, start: int, count: int, cfg: CellConfig,
                  device) -> float:
    """The perplexity that chooses a cell's best epoch: streamed for a unidirectional model, from the
    ``num_steps`` tokens before each target (as ``causal_ppl``) for a bidirectional one."""
    with autocast(cfg, device):
        if model.num_directions == 1:
            return streamed_ppl(model, corpus_tokens, start, count, cfg.num_steps)
    return causal_ppl(model, corpus_tokens, start, count, cfg, device)


@torch.no_grad()
def predict(model: CharRNN, corpus: Corpus, prefix: str, num_chars: int, device) -> str:
    """The seed's greedy generation: warm the state on the prefix one character at a time, then feed
    back the most likely next character."""
    vocab = corpus.vocab
    outputs = vocab.encode(prefix)
    state = model.begin_state(1, device)
    for token in outputs[:-1]:
        _, state = model(torch.tensor([[token]], device=device), state)
    for _ in range(num_chars):
        logits, state = model(torch.tensor([[outputs[-1]]], device=device), state)
        outputs.append(int(logits.argmax(dim=1)))
    return vocab.decode(outputs)


SELECTION_COLUMNS = ("selected_epoch", "selected_select_ppl", "selected_val_ppl", "selected_causal_ppl")


class BestEpoch:
    """The epoch whose selection evaluation was lowest, with a copy of the weights it had then (kept in
    memory, a few MB), so that the held-out text is evaluated once, at the end, at the chosen epoch."""

    def __init__(self, cfg: CellConfig):
        self.patience = cfg.patience
        self.epoch: int | None = None
        self.ppl = math.inf
        self.weights: dict | None = None

    def offer(self, epoch: int, ppl: float, model: CharRNN) -> None:
        if ppl < self.ppl:  # the first of equal evaluations: stopping early is preferred
            self.epoch, self.ppl = epoch, ppl
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def state(self) -> dict:
        return {"epoch": self.epoch, "ppl": self.ppl, "weights": self.weights}

    def restore(self, state: dict, device) -> None:
        self.epoch, self.ppl = state["epoch"], state["ppl"]
        self.weights = None if state["weights"] is None else {k: v.to(device) for k, v in state["weights"].items()}

    def patience_spent(self, epoch: int) -> bool:
        return bool(self.patience) and self.epoch is not None and epoch - self.epoch >= self.patience

    def measure(self, model: CharRNN, all_tokens: torch.Tensor, cfg: CellConfig, device) -> dict:
        """The held-out perplexities at the chosen epoch and, under ``losses``, the per-position causal
        losses (the model is left with those weights)."""
        if self.weights is None:
            return {}
        model.load_state_dict(self.weights)
        model.eval()
        val, causal, losses = heldout_losses(model, all_tokens, cfg.max_tokens, cfg.val_tokens, cfg, device) \
            if cfg.val_tokens else (None, None, None)
        return {"selected_epoch": self.epoch, "selected_select_ppl": self.ppl, "selected_val_ppl": val,
                "selected_causal_ppl": causal, "losses": losses}


def exp_or_inf(x: float) -> float:
    """``math.exp``, or inf where it overflows (a perplexity of a diverged loss)."""
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")
