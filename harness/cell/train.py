"""Train and measure one grid cell with the lesson's recipe.

The hot loop keeps everything on the device: an epoch's batches and one-hot inputs are built once, the
loss is accumulated as a device tensor, and the host reads it once per epoch (which is also where a
diverging loss is noticed). The clock is read only after the device has been synchronised.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
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
from harness.cell.flops import STREAM_SEGMENT
from harness.host.machine import PeakMemory, cpu_model, gpu_name
from harness.host.malloc import this_process_malloc
from harness.cell.model import CharRNN, count_params, detach_state, training_flops
from harness.results.run_folder import EXTRA_COLUMNS, RESULT_COLUMNS  # the columns of a record: the results format's


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(cfg: CellConfig, device: torch.device, cache_enabled: bool = True):
    """bf16 autocast for ``precision: bf16`` (on CPU the model runs its recurrent layers wholly in bf16
    inside it, see ``CharRNN._recurrent_in``). CUDA-graph capture needs ``cache_enabled=False``."""
    if cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


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


def cpu_has_native_bf16() -> bool | None:
    """Whether oneDNN finds bf16 instructions (AVX512-BF16 or AMX) on this CPU; None if it cannot say."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


class ForeachSGD:
    """The recipe's optimiser, plain SGD (no momentum, no weight decay): ``p -= lr * p.grad`` for all
    parameters in one foreach kernel, the update of ``torch.optim.SGD(params, lr)``.

    Written out because constructing any ``torch.optim`` optimiser imports ``torch._dynamo``, about 2 s
    of every cell process's start-up, which a suite of many short cells (a regression check) pays
    over and over."""

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
        self.optimizer = ForeachSGD(self.params, cfg.lr)
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
    """Teacher-forced and causal perplexity of tokens[start:start+count] on one set of windows.

    Every target t is predicted by the output at the position that has read the ``num_steps`` characters
    before it. Causal: the window is exactly those characters. Teacher-forced: the window also holds the
    target itself, as in training, where a bidirectional layer's backward half reads the characters it is
    asked to predict. Same targets, same context: their ratio is the leak alone (1 for a unidirectional
    model, whose output there cannot depend on a later input, so one pass serves both)."""
    if count == 0:
        return float("nan"), float("nan")
    lo = start - cfg.num_steps
    targets = corpus_tokens[start : start + count]
    with_target = corpus_tokens[lo : start + count].unfold(0, cfg.num_steps + 1, 1)
    with autocast(cfg, device):
        forced = position_logits(model, with_target, cfg.num_steps - 1)
        causal = causal_logits(model, with_target[:, :-1]) if model.num_directions == 2 else forced
    forced_ppl = _exp(float(F.cross_entropy(forced.float(), targets)))
    causal_ppl = _exp(float(F.cross_entropy(causal.float(), targets)))
    return forced_ppl, causal_ppl


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
    return _exp(float(F.cross_entropy(logits.float(), targets)))


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
    return _exp(float(loss))


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
    model = CharRNN(len(corpus.vocab), cfg.cell, cfg.layers, cfg.bidirectional, cfg.hidden, effective_impl(cfg)).to(device)
    trainer = Trainer(model, cfg, device, phase=phase)
    if effective_impl(cfg) != cfg.impl:
        trainer.notes.append(f"impl fused ignored: it runs on the CPU in float32 only (device {cfg.device}, "
                             f"precision {cfg.precision}); nn.{cfg.cell.upper()} ran")
    return PreparedCell(device, corpus, model, trainer, corpus.train.to(device), corpus.tokens.to(device),
                        BATCHERS[cfg.sampling], generator)


def run_cell(cfg: CellConfig, on_epoch: Callable[[dict], None] | None = None,
             corpus: Corpus | None = None, checkpoint: str | Path | None = None,
             checkpoint_every: float = CHECKPOINT_SEC) -> dict:
    """Train one cell and measure it. Returns a flat record (``RESULT_COLUMNS`` + ``EXTRA_COLUMNS``) with
    ``epoch_log`` (one dict per epoch) and ``samples`` (prefix, text) attached.

    ``checkpoint``: a file (``harness.cell.checkpoint``) that the cell's state is saved to every
    ``checkpoint_every`` seconds and, when it holds this configuration's state, goes on from. The record
    then has ``prior_sec``, the training time of the earlier processes up to their last checkpoint;
    ``on_epoch`` gets the saved epochs' rows again first."""
    if cfg.device == "cuda":
        reason = cuda_unavailable_reason()
        if reason:
            return _skipped(cfg, reason)
    cell = prepare_cell(cfg, corpus)
    device, corpus, model, trainer, all_tokens = cell.device, cell.corpus, cell.model, cell.trainer, cell.all_tokens

    epoch_log: list[dict] = []
    status, reason = "ok", ""
    selection = BestEpoch(cfg)
    saver = Checkpointer(checkpoint, {"config_hash": cfg.config_hash(), "corpus_sha256": corpus.sha256},
                         checkpoint_every)
    saved = saver.load()
    first_epoch, resumes, carried = 1, [], None
    if saved is not None:
        model.load_state_dict(saved["model"])
        cell.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        selection.restore(saved["selection"], device)
        epoch_log = list(saved["epoch_log"])
        first_epoch = saved["epoch"] + 1
        resumes = list(saved["resumes"]) + [saved["epoch"]]
        carried = saved["memory"]
        del saved  # before memory is measured: the loaded copy must not count as the cell's
    synchronize(device)
    if carried is not None:
        PeakMemory(device).release()  # the loaded copy's memory, freed, goes back before the baseline is read
    memory = PeakMemory(device)
    if carried is not None:
        memory.carry_over(**carried)
    for row in epoch_log:  # a resumed cell's earlier epochs, reported again
        if on_epoch:
            on_epoch(row)
    for epoch in range(first_epoch, cfg.epochs + 1):
        model.train()
        memory.start_region()
        synchronize(device)
        t0 = time.perf_counter()
        loss_sum, tokens = trainer.epoch(*cell.next_batches(epoch))
        synchronize(device)
        sec = time.perf_counter() - t0
        memory.end_region()
        mean_loss = float(loss_sum) / tokens
        row = {"epoch": epoch, "train_ppl": _exp(mean_loss), "sec": sec, "tokens": tokens,
               "tokens_per_sec": tokens / sec, "warmup": epoch == first_epoch, "val_ppl": None, "causal_ppl": None,
               "select_ppl": None}
        # A finite loss above ~709 nats still overflows the perplexity: that run has diverged too.
        if not math.isfinite(row["train_ppl"]):
            status, reason = "diverged", f"training loss became {mean_loss:.6g} in epoch {epoch}"
            epoch_log.append(row)
            break
        if cfg.select_every and epoch % cfg.select_every == 0:
            model.eval()
            row["select_ppl"] = selection_ppl(model, all_tokens, cfg.max_tokens + cfg.val_tokens,
                                              cfg.select_tokens, cfg, device)
            selection.offer(epoch, row["select_ppl"], model)
        # Patience is checked where the selection text was evaluated: between evaluations nothing is known.
        last = epoch == cfg.epochs or (row["select_ppl"] is not None and selection.patience_spent(epoch))
        # val_tokens 0: no held-out evaluation at all; val_ppl and causal_ppl stay None (not NaN).
        if cfg.val_tokens and (last or (cfg.eval_every and epoch % cfg.eval_every == 0)):
            model.eval()
            row["val_ppl"], row["causal_ppl"] = heldout_ppl(model, all_tokens, cfg.max_tokens, cfg.val_tokens,
                                                            cfg, device)
            memory.release()
        epoch_log.append(row)
        if on_epoch:
            on_epoch(row)
        if last:
            break
        if saver.due():  # never after the last epoch: what remains then is short
            saver.save({"epoch": epoch, "model": model.state_dict(), "generator": cell.generator.get_state(),
                        "torch_rng": torch.get_rng_state(), "selection": selection.state(),
                        "memory": memory.carried_state(), "epoch_log": epoch_log, "resumes": resumes})

    model.eval()
    samples = []
    if status == "ok":
        samples = [{"prefix": p, "text": predict(model, corpus, p, cfg.sample_chars, device)}
                   for p in cfg.prefixes]

    selected = selection.measure(model, all_tokens, cfg, device) if status == "ok" else {}
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
        peak_mem_bytes=memory.increase,
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
        notes=trainer.notes + saver.notes + [
            f"went on from its checkpoint after epoch {k}: the epochs before were trained by an earlier process"
            for k in resumes],
        stopped_early=status == "ok" and len(epoch_log) < cfg.epochs,
        malloc=this_process_malloc(),
        **{key: selected.get(key) for key in SELECTION_COLUMNS},
    )
    if resumes:
        record["prior_sec"] = saver.prior_sec
    return record


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
        """The held-out perplexities at the chosen epoch (the model is left with those weights)."""
        if self.weights is None:
            return {}
        model.load_state_dict(self.weights)
        model.eval()
        val, causal = heldout_ppl(model, all_tokens, cfg.max_tokens, cfg.val_tokens, cfg, device) \
            if cfg.val_tokens else (None, None)
        return {"selected_epoch": self.epoch, "selected_select_ppl": self.ppl, "selected_val_ppl": val,
                "selected_causal_ppl": causal}


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")
