"""Train and measure one grid cell with the lesson's recipe.

The hot loop keeps everything on the device: an epoch's batches and one-hot inputs are built once, the
loss is accumulated as a device tensor, and the host reads it once per epoch (which is also where a
diverging loss is noticed). The clock is read only after the device has been synchronised.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
import math
from pathlib import Path
import statistics
import time
import warnings
from typing import Callable

import torch
from torch.nn import functional as F

from harness.cell.checkpoint import CHECKPOINT_SEC, Checkpointer
from harness.spec.config import CellConfig
from harness.cell.batches import BATCHERS, Corpus, load_corpus
from harness.host.machine import PeakMemory, cpu_model, gpu_name
from harness.host.malloc import this_process_malloc
from harness.cell.evaluation import (SELECTION_COLUMNS, BestEpoch, exp_or_inf, heldout_losses, predict,
                                    selection_ppl)
from harness.cell.flops import model_hidden
from harness.cell.plugin import is_plugin, source_sha256
from harness.cell.model import CharRNN, count_params, detach_state, training_flops
from harness.cell.precision import autocast, cpu_has_native_bf16
from harness.results.losses import PositionLosses
from harness.results.tables import EXTRA_COLUMNS, RESULT_COLUMNS  # the columns of a record: the results format's
from harness.cell.optimizers import epoch_lr, make_optimizer, scheduled, set_lr


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clip_global_norm_(grads: list[torch.Tensor], theta: float) -> torch.Tensor:
    """The seed's clipping: if the L2 norm of all gradients together exceeds ``theta``, multiply every
    gradient by ``theta / norm``. Decided on the device (no host synchronisation, unlike the seed's
    ``if norm > theta``) and applied by one foreach kernel. Returns the norm before clipping.

    Unlike ``torch.nn.utils.clip_grad_norm_`` there is no 1e-6 added to the norm: this is the seed's rule."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    # theta / norm >= 1 exactly when norm <= theta, so clamping at 1 multiplies those gradients by 1.
    scale = (theta / norm).clamp_(max=1.0)
    torch._foreach_mul_(grads, scale)
    return norm


_NOTHING = contextlib.nullcontext()


def untimed_phase(name: str):
    """The default phase marker of a step: does nothing (the profile command times the phases)."""
    return _NOTHING


class Trainer:
    """The optimisation step of the recipe: cross-entropy, backward, clip to global norm, SGD.

    ``phase(name)`` returns a context manager wrapped around each part of a step ("data", "forward",
    "backward", "clip", "optimizer"); by default it does nothing. ``notes`` collects what the run should
    know about how it was executed (e.g. a setting that does not apply to this device)."""

    def __init__(self, model: CharRNN, cfg: CellConfig, device: torch.device,
                 phase: Callable[[str], contextlib.AbstractContextManager] | None = None):
        self.model = model
        self.cfg = cfg
        self.device = device
        self.phase = phase or untimed_phase
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, cfg)
        self.notes: list[str] = []
        # CUDA graphs replay the step captured on fixed buffers; on a CPU there are no kernel launches
        # to save, so the setting is ignored there and the record says so.
        self.use_cuda_graphs = cfg.cuda_graphs and device.type == "cuda"
        if cfg.cuda_graphs and not self.use_cuda_graphs:
            self.notes.append(f"cuda_graphs ignored: device is {device.type}, CUDA graphs apply to cuda only")
        self.use_static_step = self.use_cuda_graphs
        self.static_step: StaticStep | None = None
        if cfg.precision == "bf16" and device.type == "cpu" and cpu_has_native_bf16() is False:
            self.notes.append("bf16 on a CPU without native bf16 instructions (no AVX512-BF16 or AMX): "
                              "the recurrent layers run PyTorch's own bf16 cell loop, slower than fp32")

    def step(self, x_one_hot: torch.Tensor, targets: torch.Tensor, state):
        with self.phase("forward"):
            with autocast(self.cfg, self.device, cache_enabled=not self.use_cuda_graphs):
                logits, state = self.model.forward_one_hot(x_one_hot, state)
            loss = F.cross_entropy(logits.float(), targets)
        with self.phase("backward"):
            self.optimizer.zero_grad()
            loss.backward()
        with self.phase("clip"):
            clip_global_norm_([p.grad for p in self.params], self.cfg.clip)
        with self.phase("optimizer"):
            self.optimizer.step()
        return loss.detach(), state

    def epoch(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One pass over (num_batches, batch, steps) tensors. Returns the summed loss (a device tensor,
        token-weighted) and the number of target tokens."""
        with self.phase("data"):
            x_all = F.embedding(xs.transpose(1, 2), self.model.identity)  # (nb, steps, batch, vocab) one-hot
            y_all = ys.transpose(1, 2).reshape(ys.shape[0], -1)  # time-major targets per batch
        step = self.step
        if self.use_static_step:
            if self.static_step is None:
                self.static_step = StaticStep(self, x_all[0], y_all[0])
                if self.use_cuda_graphs:
                    self.static_step.capture()
            step = self.static_step
        carry = self.cfg.sampling == "sequential"
        total = torch.zeros((), device=self.device)
        state = None
        for i in range(xs.shape[0]):
            loss, state = step(x_all[i], y_all[i], state)
            state = detach_state(state) if carry else None
            total += loss
        tokens_per_batch = y_all.shape[1]
        return total * tokens_per_batch, tokens_per_batch * xs.shape[0]


class StaticStep:
    """``Trainer.step`` on fixed input, target and state buffers, so that it can be captured once as a CUDA
    graph and replayed: one launch for forward, backward, clipping and update, no Python in between.

    Each call copies the batch (and the carried state, or zeros for a fresh one) into the buffers and then
    replays the graph, or, before capture and on a CPU, runs the same step eagerly on the same buffers.
    Passing zeros equals passing no state: the recurrent layers start from zeros either way."""

    def __init__(self, trainer: Trainer, x_example: torch.Tensor, y_example: torch.Tensor):
        self.trainer = trainer
        self.x = x_example.clone()
        self.y = y_example.clone()
        self.state = trainer.model.begin_state(x_example.shape[1], x_example.device)
        self.graph = None
        self.loss: torch.Tensor | None = None
        self.next_state = None

    def _run(self) -> None:
        # Detached, so that no step's autograd graph outlives the step.
        self.loss, state = self.trainer.step(self.x, self.y, self.state)
        self.next_state = detach_state(state)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, state):
        self.x.copy_(x)
        self.y.copy_(y)
        for buffer, value in zip(_as_tuple(self.state), _as_tuple(state) if state is not None else ()):
            buffer.copy_(value)
        if state is None:
            for buffer in _as_tuple(self.state):
                buffer.zero_()
        if self.graph is None:
            self._run()
        else:
            with self.trainer.phase("graph replay"):
                self.graph.replay()
        return self.loss, self.next_state

    def capture(self, warmup_steps: int = 3) -> None:
        """Warm up on a side stream (as ``torch.cuda.graphs`` requires), capture, then put the parameters
        back as they were, so that the warm-up steps leave no trace in training."""
        device = self.x.device
        saved = [p.detach().clone() for p in self.trainer.params]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup_steps):
                self._run()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with warnings.catch_warnings():
            # The gradient accumulators made during the warm-up on the side stream meet gradients made
            # on the capture stream; neither is the default stream, so capture is unaffected (the tests
            # compare replayed epochs with eager ones), and PyTorch's warning about it is noise here.
            warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
            with torch.cuda.graph(graph):
                self._run()
        with torch.no_grad():
            for p, value in zip(self.trainer.params, saved):
                p.copy_(value)
        self.graph = graph


def _as_tuple(state) -> tuple:
    return state if isinstance(state, tuple) else (state,)


def _skipped(cfg: CellConfig, reason: str) -> dict:
    record = {key: None for key in RESULT_COLUMNS + EXTRA_COLUMNS}
    record.update(cfg.model_dump(include=set(RESULT_COLUMNS) | {"precision", "threads", "corpus"}))
    record.update(status="skipped", reason=reason, cell_id=cfg.cell_id, config_hash=cfg.config_hash(),
                  epochs_done=0, epoch_log=[], samples=[], notes=[])
    return record


def cuda_unavailable_reason() -> str | None:
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"CUDA not available: torch {torch.__version__} is a CPU-only build"
    return "CUDA not available: no CUDA device is visible"


def effective_impl(cfg: CellConfig) -> str:
    """The recurrent implementation a cell runs: ``fused`` applies to GRU and RNN on the CPU in float32."""
    if cfg.impl == "fused" and cfg.cell in ("gru", "rnn") and cfg.device == "cpu" and cfg.precision == "fp32":
        return "fused"
    return "torch"


@dataclass
class PreparedCell:
    """Everything a cell trains with, built from its configuration alone (seeded)."""

    device: torch.device
    corpus: Corpus
    model: CharRNN
    trainer: Trainer
    train_tokens: torch.Tensor  # on the device
    all_tokens: torch.Tensor  # on the device, for held-out windows that reach back into training text
    batcher: Callable
    generator: torch.Generator  # drives the data order

    def next_batches(self, epoch: int = 1):
        """The batches of epoch ``epoch`` (1-based; it matters only when epochs read the book in turn)."""
        cfg = self.trainer.cfg
        text = self.train_tokens[self.corpus.epoch_span(epoch)]
        return self.batcher(text, cfg.batch_size, cfg.num_steps, self.generator)


def prepare_cell(cfg: CellConfig, corpus: Corpus | None = None, phase=None) -> PreparedCell:
    """Threads, corpus, seeded model and data order, optimiser: the same for training and profiling."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    corpus = corpus or load_corpus(cfg.corpus, cfg.strip_boilerplate, cfg.max_tokens, cfg.val_tokens,
                                   cfg.select_tokens, cfg.train_text)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    hidden = model_hidden(cfg, len(corpus.vocab))
    model = CharRNN(len(corpus.vocab), cfg.cell, cfg.layers, cfg.bidirectional, hidden, effective_impl(cfg),
                    forget_bias=cfg.forget_bias, dropout=cfg.dropout).to(device)
    trainer = Trainer(model, cfg, device, phase=phase)
    if effective_impl(cfg) != cfg.impl:
        trainer.notes.append(f"impl fused ignored: it runs on the CPU in float32 only (device {cfg.device}, "
                             f"precision {cfg.precision}); nn.{cfg.cell.upper()} ran")
    return PreparedCell(device, corpus, model, trainer, corpus.train.to(device), corpus.tokens.to(device),
                        BATCHERS[cfg.sampling], generator)


def run_cell(cfg: CellConfig, on_epoch: Callable[[dict], None] | None = None,
             corpus: Corpus | None = None, checkpoint: str | Path | None = None,
             checkpoint_every: float = CHECKPOINT_SEC, with_losses: bool = False) -> dict:
    """Train one cell and measure it. Returns a flat record (``RESULT_COLUMNS`` + ``EXTRA_COLUMNS``) with
    ``epoch_log`` (one dict per epoch) and ``samples`` (prefix, text) attached.

    ``checkpoint``: a file (``harness.cell.checkpoint``) that the cell's state is saved to every
    ``checkpoint_every`` seconds and, when it holds this configuration's state, goes on from. The record
    then has ``prior_sec``, the training time of the earlier processes up to their last checkpoint;
    ``on_epoch`` gets the saved epochs' rows again first. ``with_losses``: the record also has ``losses``,
    the per-position held-out losses of its last, best and selected evaluations
    (``harness.results.losses.PositionLosses`` by name), which the caller stores apart from the record."""
    if cfg.device == "cuda":
        reason = cuda_unavailable_reason()
        if reason:
            return _skipped(cfg, reason)
    cell = prepare_cell(cfg, corpus)
    identity = {"config_hash": cfg.config_hash(), "corpus_sha256": cell.corpus.sha256}  # what a checkpoint must match
    training = start_training(cell, Checkpointer(checkpoint, identity, checkpoint_every))
    train_epochs(cell, training, on_epoch)
    record = cell_record(cell, training)
    losses = record.pop("losses", {})
    if with_losses and losses:
        record["losses"] = losses
    return record


@dataclass
class Training:
    """A cell's training as it goes: its epochs so far, how it ended, and what its checkpoint saves."""

    selection: BestEpoch
    saver: Checkpointer
    memory: PeakMemory
    epoch_log: list[dict]
    first_epoch: int = 1  # the first epoch this process trains
    resumes: list[int] = field(default_factory=list)  # the epochs after which earlier processes stopped
    status: str = "ok"
    reason: str = ""
    # The held-out evaluations whose per-position losses are kept: "last" and "best" (lowest causal
    # perplexity so far), each {"epoch", "ppl", "nats": float16 tensor on the CPU}.
    losses: dict = field(default_factory=dict)


def start_training(cell: PreparedCell, saver: Checkpointer) -> Training:
    """The cell's training before its first epoch here: fresh, or where its checkpoint left off, with the
    memory baseline read once the checkpoint's loaded copy is gone."""
    selection = BestEpoch(cell.trainer.cfg)
    resumed = resume_from_checkpoint(cell, saver, selection)
    synchronize(cell.device)
    if resumed is not None:
        PeakMemory(cell.device).release()  # the loaded copy's memory, freed, goes back before the baseline is read
    memory = PeakMemory(cell.device)
    if resumed is None:
        return Training(selection, saver, memory, epoch_log=[])
    memory.carry_over(**resumed["memory"])
    return Training(selection, saver, memory, resumed["epoch_log"], resumed["first_epoch"], resumed["resumes"],
                    losses=resumed["losses"])


def resume_from_checkpoint(cell: PreparedCell, saver: Checkpointer, selection: BestEpoch) -> dict | None:
    """Put the model, data order, random state and best epoch back as the checkpoint saved them; returns
    what the training goes on with (None without a checkpoint of this configuration). The loaded copy
    itself is not kept: it must not count as the cell's memory."""
    saved = saver.load()
    if saved is None:
        return None
    cell.model.load_state_dict(saved["model"])
    # Adam's moments and SGD's momentum go on where they were; checkpoints of plain SGD hold none.
    if "optimizer" in saved:
        cell.trainer.optimizer.load_state_dict(saved["optimizer"])
    cell.generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    selection.restore(saved["selection"], cell.device)
    return {"epoch_log": list(saved["epoch_log"]), "first_epoch": saved["epoch"] + 1,
            "resumes": list(saved["resumes"]) + [saved["epoch"]], "memory": saved["memory"],
            "losses": saved.get("losses", {})}


def train_epochs(cell: PreparedCell, training: Training, on_epoch: Callable[[dict], None] | None) -> None:
    """Train from ``training.first_epoch`` until the last epoch, patience runs out or the loss diverges,
    reporting each epoch's row (a resumed cell's earlier ones first) and saving a checkpoint when due."""
    cfg, model = cell.trainer.cfg, cell.model
    for row in training.epoch_log:  # a resumed cell's earlier epochs, reported again
        if on_epoch:
            on_epoch(row)
    for epoch in range(training.first_epoch, cfg.epochs + 1):
        if scheduled(cfg):
            set_lr(cell.trainer.optimizer, epoch_lr(cfg, epoch))
        row, mean_loss = timed_epoch(cell, training.memory, epoch, warmup=epoch == training.first_epoch)
        # A finite loss above ~709 nats still overflows the perplexity: that run has diverged too.
        if not math.isfinite(row["train_ppl"]):
            training.status, training.reason = "diverged", f"training loss became {mean_loss:.6g} in epoch {epoch}"
            training.epoch_log.append(row)
            break
        last = evaluate_epoch(cell, training, row)
        training.epoch_log.append(row)
        if on_epoch:
            on_epoch(row)
        if last:
            break
        if training.saver.due():  # never after the last epoch: what remains then is short
            training.saver.save({"epoch": epoch, "model": model.state_dict(), "generator": cell.generator.get_state(),
                                 "torch_rng": torch.get_rng_state(), "selection": training.selection.state(),
                                 "optimizer": cell.trainer.optimizer.state_dict(),
                                 "memory": training.memory.carried_state(), "epoch_log": training.epoch_log,
                                 "resumes": training.resumes, "losses": training.losses})


def timed_epoch(cell: PreparedCell, memory: PeakMemory, epoch: int, warmup: bool) -> tuple[dict, float]:
    """Train one epoch, timed between device synchronisations; returns its row and its mean loss."""
    cell.model.train()
    memory.start_region()
    synchronize(cell.device)
    t0 = time.perf_counter()
    loss_sum, tokens = cell.trainer.epoch(*cell.next_batches(epoch))
    synchronize(cell.device)
    sec = time.perf_counter() - t0
    memory.end_region()
    mean_loss = float(loss_sum) / tokens
    row = {"epoch": epoch, "train_ppl": exp_or_inf(mean_loss), "sec": sec, "tokens": tokens,
           "tokens_per_sec": tokens / sec, "warmup": warmup, "val_ppl": None, "causal_ppl": None,
           "select_ppl": None}
    return row, mean_loss


def evaluate_epoch(cell: PreparedCell, training: Training, row: dict) -> bool:
    """The evaluations due after this epoch, into ``row``: the selection text (offered as the best epoch)
    and the held-out text. Returns whether training stops here (the last epoch, or patience spent)."""
    cfg, model, epoch = cell.trainer.cfg, cell.model, row["epoch"]
    if cfg.select_every and epoch % cfg.select_every == 0:
        model.eval()
        row["select_ppl"] = selection_ppl(model, cell.all_tokens, cfg.max_tokens + cfg.val_tokens,
                                          cfg.select_tokens, cfg, cell.device)
        training.selection.offer(epoch, row["select_ppl"], model)
    # Patience is checked where the selection text was evaluated: between evaluations nothing is known.
    last = epoch == cfg.epochs or (row["select_ppl"] is not None and training.selection.patience_spent(epoch))
    # val_tokens 0: no held-out evaluation at all; val_ppl and causal_ppl stay None (not NaN).
    if cfg.val_tokens and ((last and cfg.eval_last) or (cfg.eval_every and epoch % cfg.eval_every == 0)):
        model.eval()
        row["val_ppl"], row["causal_ppl"], nats = heldout_losses(model, cell.all_tokens, cfg.max_tokens,
                                                                 cfg.val_tokens, cfg, cell.device)
        keep_losses(training.losses, epoch, row["causal_ppl"], nats)
        training.memory.release()
    return last


def keep_losses(kept: dict, epoch: int, ppl: float, nats: torch.Tensor) -> None:
    """Keep an evaluation's per-position losses as the last one and, when its perplexity is the lowest so
    far (the first of equals, as the best evaluation is read from the epochs), as the best one."""
    item = {"epoch": epoch, "ppl": ppl, "nats": nats.to(torch.float16)}
    kept["last"] = item
    if "best" not in kept or ppl < kept["best"]["ppl"]:
        kept["best"] = item


def recorded_losses(kept: dict, selected: dict) -> dict[str, PositionLosses]:
    """The cell's per-position losses by evaluation (``harness.results.losses``), as numpy float16."""
    losses = {name: PositionLosses(item["epoch"], item["nats"].numpy()) for name, item in kept.items()}
    if selected.get("losses") is not None:
        losses["selected"] = PositionLosses(selected["selected_epoch"], selected["losses"].to(torch.float16).numpy())
    return losses


def cell_record(cell: PreparedCell, training: Training) -> dict:
    """The cell's record once training has ended: samples and the held-out evaluation at the chosen epoch
    (when it did not diverge), the epochs' timing, memory, the machine and the notes."""
    cfg, device, corpus, model = cell.trainer.cfg, cell.device, cell.corpus, cell.model
    status, epoch_log, memory, resumes = training.status, training.epoch_log, training.memory, training.resumes
    model.eval()
    samples = []
    if status == "ok":
        samples = [{"prefix": p, "text": predict(model, corpus, p, cfg.sample_chars, device)}
                   for p in cfg.prefixes]

    selected = training.selection.measure(model, cell.all_tokens, cfg, device) if status == "ok" else {}
    timed = [r["sec"] for r in epoch_log if not r["warmup"]] or [r["sec"] for r in epoch_log]
    tokens_per_epoch = statistics.median(r["tokens"] for r in epoch_log)
    sec_per_epoch = statistics.median(timed)
    quartiles = statistics.quantiles(timed, n=4) if len(timed) >= 2 else [timed[0]] * 3
    hidden = model.rnn.hidden_size  # model.hidden, or the size chosen for model.params
    # A user's module does work the harness cannot count: its FLOPs stay unknown.
    flops_per_epoch = None if is_plugin(cfg.cell) else training_flops(
        len(corpus.vocab), cfg.cell, cfg.layers, cfg.bidirectional, hidden, int(tokens_per_epoch))
    last_eval = next((r for r in reversed(epoch_log) if r["val_ppl"] is not None), {})
    record = cfg.model_dump(include=set(RESULT_COLUMNS) | {"precision", "corpus"})
    record.update(
        hidden=hidden,
        status=status,
        reason=training.reason,
        train_ppl=epoch_log[-1]["train_ppl"],
        val_ppl=last_eval.get("val_ppl"),
        causal_ppl=last_eval.get("causal_ppl"),
        sec_per_epoch=sec_per_epoch,
        tokens_per_sec=tokens_per_epoch / sec_per_epoch,
        peak_mem_bytes=memory.increase,
        params=count_params(model),
        flops_per_epoch=flops_per_epoch,
        flops_per_sec=None if flops_per_epoch is None else flops_per_epoch / sec_per_epoch,
        sample=samples[0]["text"] if samples else "",
        cell_id=cfg.cell_id,
        config_hash=cfg.config_hash(),
        threads=torch.get_num_threads() if device.type == "cpu" else cfg.threads,
        epochs_done=len(epoch_log),
        sec_per_epoch_iqr=quartiles[2] - quartiles[0],
        tokens_per_epoch=tokens_per_epoch,
        rss_before_bytes=memory.before,
        peak_rss_bytes=memory.peak,
        # False: /proc/self/clear_refs could not be written, so peak_mem_bytes is the whole process's peak.
        peak_mem_exact=memory.exact,
        corpus_sha256=corpus.sha256,
        vocab_size=len(corpus.vocab),
        hostname=__import__("socket").gethostname(),
        cpu_model=cpu_model(),
        gpu_name=gpu_name() if device.type == "cuda" else None,
        torch_version=torch.__version__,
        epoch_log=[{k: v for k, v in r.items() if k != "tokens"} for r in epoch_log],
        samples=samples,
        notes=cell.trainer.notes + training.saver.notes + [
            f"went on from its checkpoint after epoch {k}: the epochs before were trained by an earlier process"
            for k in resumes],
        stopped_early=status == "ok" and len(epoch_log) < cfg.epochs,
        malloc=this_process_malloc(),
        **{key: selected.get(key) for key in SELECTION_COLUMNS},
    )
    if status == "ok":
        record["losses"] = recorded_losses(training.losses, selected)
    if resumes:
        record["prior_sec"] = training.saver.prior_sec
    if is_plugin(cfg.cell):
        record["cell_module_sha256"] = source_sha256(cfg.cell)
    return record
