"""Train and measure one grid cell with the lesson's recipe.

The hot loop keeps everything on the device: an epoch's batches and one-hot inputs are built once, the
loss is accumulated as a device tensor, and the host reads it once per epoch (which is also where a
diverging loss is noticed). The clock is read only after the device has been synchronised.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from typing import Callable

import torch
from torch.nn import functional as F

from .config import CellConfig
from .data import BATCHERS, Corpus, load_corpus
from .machine import PeakRSS, cpu_model, gpu_name
from .model import CharRNN, count_params, detach_state, training_flops

RESULT_COLUMNS = (
    "cell", "layers", "direction", "device", "seed", "hidden", "epochs", "status", "reason",
    "train_ppl", "val_ppl", "causal_ppl", "sec_per_epoch", "tokens_per_sec", "peak_mem_bytes", "params",
    "flops_per_epoch", "flops_per_sec", "sample",
)
# Recorded beside the columns above: provenance and the spread behind the medians.
EXTRA_COLUMNS = (
    "cell_id", "config_hash", "precision", "threads", "epochs_done", "sec_per_epoch_iqr",
    "tokens_per_epoch", "rss_before_bytes", "peak_rss_bytes", "corpus", "corpus_sha256", "vocab_size",
    "hostname", "cpu_model", "gpu_name", "torch_version",
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(cfg: CellConfig, device: torch.device):
    if cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    """The optimisation step of the recipe: cross-entropy, backward, clip to global norm, SGD."""

    def __init__(self, model: CharRNN, cfg: CellConfig, device: torch.device):
        self.model = model
        self.cfg = cfg
        self.device = device
        self.params = [p for p in model.parameters() if p.requires_grad]
        # foreach/fused: one kernel over all parameters instead of a Python loop of small ones.
        try:
            self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, fused=True)
        except (RuntimeError, TypeError):
            self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, foreach=True)

    def step(self, x_one_hot: torch.Tensor, targets: torch.Tensor, state):
        with autocast(self.cfg, self.device):
            logits, state = self.model.forward_one_hot(x_one_hot, state)
        loss = F.cross_entropy(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip, foreach=True)
        self.optimizer.step()
        return loss.detach(), state

    def epoch(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One pass over (num_batches, batch, steps) tensors. Returns the summed loss (a device tensor,
        token-weighted) and the number of target tokens."""
        x_all = F.embedding(xs.transpose(1, 2), self.model.identity)  # (nb, steps, batch, vocab) one-hot
        y_all = ys.transpose(1, 2).reshape(ys.shape[0], -1)  # time-major targets per batch
        carry = self.cfg.sampling == "sequential"
        total = torch.zeros((), device=self.device)
        state = None
        for i in range(xs.shape[0]):
            loss, state = self.step(x_all[i], y_all[i], state)
            state = detach_state(state) if carry else None
            total += loss
        tokens_per_batch = y_all.shape[1]
        return total * tokens_per_batch, tokens_per_batch * xs.shape[0]


@torch.no_grad()
def teacher_forced_ppl(model: CharRNN, tokens: torch.Tensor, cfg: CellConfig, device) -> float:
    """Held-out perplexity measured as training measures it: ``batch_size`` rows, windows of
    ``num_steps``, state carried between windows, no random offset."""
    rows = min(cfg.batch_size, max(1, (len(tokens) - 1) // cfg.num_steps))
    length = (len(tokens) - 1) // rows
    windows = length // cfg.num_steps
    if windows == 0:
        return float("nan")
    xs = tokens[: rows * length].reshape(rows, length)
    ys = tokens[1 : rows * length + 1].reshape(rows, length)
    state, total, count = None, 0.0, 0
    for w in range(windows):
        x = xs[:, w * cfg.num_steps : (w + 1) * cfg.num_steps]
        y = ys[:, w * cfg.num_steps : (w + 1) * cfg.num_steps].T.reshape(-1)
        with autocast(cfg, device):
            logits, state = model(x, state)
        total += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        count += y.numel()
    return math.exp(total / count)


@torch.no_grad()
def causal_logits(model: CharRNN, windows: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Logits for the character after each window, computed from that window alone (fresh state), so
    that nothing after the predicted position can influence the prediction, whatever the direction."""
    out = []
    for start in range(0, len(windows), chunk):
        part = windows[start : start + chunk]
        logits, _ = model(part, None)
        out.append(logits.reshape(part.shape[1], part.shape[0], -1)[-1])
    return torch.cat(out)


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
    return math.exp(float(F.cross_entropy(logits.float(), targets)))


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


def _skipped(cfg: CellConfig, reason: str) -> dict:
    record = {key: None for key in RESULT_COLUMNS + EXTRA_COLUMNS}
    record.update(cfg.model_dump(include=set(RESULT_COLUMNS) | {"precision", "threads", "corpus"}))
    record.update(status="skipped", reason=reason, cell_id=cfg.cell_id, config_hash=cfg.config_hash(),
                  epochs_done=0, epoch_log=[], samples=[])
    return record


def cuda_unavailable_reason() -> str | None:
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"CUDA not available: torch {torch.__version__} is a CPU-only build"
    return "CUDA not available: no CUDA device is visible"


def run_cell(cfg: CellConfig, on_epoch: Callable[[dict], None] | None = None,
             corpus: Corpus | None = None) -> dict:
    """Train one cell and measure it. Returns a flat record (``RESULT_COLUMNS`` + ``EXTRA_COLUMNS``) with
    ``epoch_log`` (one dict per epoch) and ``samples`` (prefix, text) attached."""
    if cfg.device == "cuda":
        reason = cuda_unavailable_reason()
        if reason:
            return _skipped(cfg, reason)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    corpus = corpus or load_corpus(cfg.corpus, cfg.strip_boilerplate, cfg.max_tokens, cfg.val_tokens)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = CharRNN(len(corpus.vocab), cfg.cell, cfg.layers, cfg.bidirectional, cfg.hidden).to(device)
    trainer = Trainer(model, cfg, device)
    train_tokens = corpus.train.to(device)
    all_tokens = corpus.tokens.to(device)
    batcher = BATCHERS[cfg.sampling]

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    epoch_log: list[dict] = []
    status, reason = "ok", ""
    synchronize(device)
    rss = PeakRSS()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        rss.start_region()
        synchronize(device)
        t0 = time.perf_counter()
        xs, ys = batcher(train_tokens, cfg.batch_size, cfg.num_steps, generator)
        loss_sum, tokens = trainer.epoch(xs, ys)
        synchronize(device)
        sec = time.perf_counter() - t0
        rss.end_region()
        mean_loss = float(loss_sum) / tokens
        row = {"epoch": epoch, "train_ppl": _exp(mean_loss), "sec": sec, "tokens": tokens,
               "tokens_per_sec": tokens / sec, "warmup": epoch == 1, "val_ppl": None, "causal_ppl": None}
        if not math.isfinite(mean_loss):
            status, reason = "diverged", f"training loss became {mean_loss} in epoch {epoch}"
            epoch_log.append(row)
            break
        last = epoch == cfg.epochs
        if last or (cfg.eval_every and epoch % cfg.eval_every == 0):
            model.eval()
            row["val_ppl"] = teacher_forced_ppl(model, corpus.val.to(device), cfg, device)
            row["causal_ppl"] = causal_ppl(model, all_tokens, cfg.max_tokens, cfg.val_tokens, cfg, device)
        epoch_log.append(row)
        if on_epoch:
            on_epoch(row)
    peak_cuda = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None

    model.eval()
    samples = []
    if status == "ok":
        samples = [{"prefix": p, "text": predict(model, corpus, p, cfg.sample_chars, device)}
                   for p in cfg.prefixes]

    timed = [r["sec"] for r in epoch_log if not r["warmup"]] or [r["sec"] for r in epoch_log]
    tokens_per_epoch = statistics.median(r["tokens"] for r in epoch_log)
    sec_per_epoch = statistics.median(timed)
    quartiles = statistics.quantiles(timed, n=4) if len(timed) >= 2 else [timed[0]] * 3
    flops_per_epoch = training_flops(len(corpus.vocab), cfg.cell, cfg.layers, cfg.bidirectional, cfg.hidden,
                                     int(tokens_per_epoch))
    last_eval = next((r for r in reversed(epoch_log) if r["val_ppl"] is not None), {})
    record = cfg.model_dump(include=set(RESULT_COLUMNS) | {"precision", "corpus"})
    record.update(
        status=status,
        reason=reason,
        train_ppl=epoch_log[-1]["train_ppl"],
        val_ppl=last_eval.get("val_ppl"),
        causal_ppl=last_eval.get("causal_ppl"),
        sec_per_epoch=sec_per_epoch,
        tokens_per_sec=tokens_per_epoch / sec_per_epoch,
        peak_mem_bytes=peak_cuda if peak_cuda is not None else rss.increase,
        params=count_params(model),
        flops_per_epoch=flops_per_epoch,
        flops_per_sec=flops_per_epoch / sec_per_epoch,
        sample=samples[0]["text"] if samples else "",
        cell_id=cfg.cell_id,
        config_hash=cfg.config_hash(),
        threads=torch.get_num_threads() if device.type == "cpu" else cfg.threads,
        epochs_done=len(epoch_log),
        sec_per_epoch_iqr=quartiles[2] - quartiles[0],
        tokens_per_epoch=tokens_per_epoch,
        rss_before_bytes=rss.before,
        peak_rss_bytes=rss.peak,
        corpus_sha256=corpus.sha256,
        vocab_size=len(corpus.vocab),
        hostname=__import__("socket").gethostname(),
        cpu_model=cpu_model(),
        gpu_name=gpu_name() if device.type == "cuda" else None,
        torch_version=torch.__version__,
        epoch_log=[{k: v for k, v in r.items() if k != "tokens"} for r in epoch_log],
        samples=samples,
    )
    return record


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")
