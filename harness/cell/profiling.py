"""Where an epoch's time goes: phases of the training step, timed, and the top operators of a profiled epoch.

The phases are the ones ``Trainer`` marks: data (batches and one-hot inputs), forward (model and loss),
backward, clip, optimizer, and graph replay (the whole step, when CUDA graphs are on); "other" is the rest
of the epoch (the Python loop, state hand-over, loss accumulation). Phase times come from epochs run
without the profiler, with the device synchronised at each phase's end so that GPU work is charged to the
phase that launched it; the operator table comes from one more epoch under ``torch.profiler``.
"""

from __future__ import annotations

import collections
import contextlib
import statistics
import time

import torch

from harness.spec.config import CellConfig
from harness.cell.batches import Corpus
from harness.cell.train import prepare_cell, synchronize

PHASES = ("data", "forward", "backward", "clip", "optimizer", "graph replay")


class PhaseTimer:
    """A ``Trainer.phase`` that adds each phase's wall time (device synchronised at its end) to
    ``seconds[name]`` and marks it for the profiler."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = collections.defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        with torch.profiler.record_function(name):
            start = time.perf_counter()
            try:
                yield
            finally:
                # While a CUDA graph is captured nothing runs, and waiting for the device would break
                # the capture: such a phase is not timed.
                if not (self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
                    synchronize(self.device)
                    self.seconds[name] += time.perf_counter() - start


def marked_phase(name: str):
    """A ``Trainer.phase`` that only marks the phase in the profiler's trace."""
    return torch.profiler.record_function(name)


def phase_shares(phase_seconds: dict[str, float], epoch_seconds: float) -> dict[str, float]:
    """Each phase's share of the epoch, in ``PHASES`` order (phases never entered left out), plus "other"
    for the rest. Shares sum to 1 unless nested phases overlap."""
    shares = {name: phase_seconds[name] / epoch_seconds for name in PHASES if name in phase_seconds}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def top_operators(key_averages, device_type: str, top: int, exclude=PHASES) -> list[dict]:
    """The ``top`` operators by self time from ``profiler.key_averages()``: name, self seconds, share of all
    operators' self time, calls. On CUDA the device's self time is used (where the kernels run)."""
    rows = []
    for event in key_averages:
        if event.key in exclude:
            continue
        if device_type == "cuda":
            self_us = getattr(event, "self_device_time_total", None)
            if self_us is None:
                self_us = getattr(event, "self_cuda_time_total", 0)
        else:
            self_us = event.self_cpu_time_total
        rows.append({"op": event.key, "self_sec": self_us / 1e6, "calls": event.count})
    total = sum(r["self_sec"] for r in rows) or 1.0
    rows.sort(key=lambda r: r["self_sec"], reverse=True)
    for r in rows:
        r["share"] = r["self_sec"] / total
    return rows[:top]


def profile_cell(cfg: CellConfig, warmup_epochs: int = 1, top: int = 15, trace_path: str | None = None,
                 corpus: Corpus | None = None) -> dict:
    """Train ``cfg``'s cell for ``warmup_epochs`` untimed epochs, ``cfg.epochs`` phase-timed epochs and one
    profiled epoch; return the phase breakdown and the top operators (no printing)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        from harness.errors import HarnessError

        raise HarnessError("--device cuda: CUDA is not available here")
    cell = prepare_cell(cfg, corpus, phase=marked_phase)
    device, model, trainer = cell.device, cell.model, cell.trainer
    timer = PhaseTimer(device)

    def one_epoch():
        with trainer.phase("data"):
            xs, ys = cell.next_batches()
        loss_sum, tokens = trainer.epoch(xs, ys)
        return float(loss_sum) / tokens

    model.train()
    for _ in range(warmup_epochs):
        one_epoch()
    trainer.phase = timer
    epoch_seconds = []
    for _ in range(cfg.epochs):
        synchronize(device)
        start = time.perf_counter()
        one_epoch()
        synchronize(device)
        epoch_seconds.append(time.perf_counter() - start)
    per_epoch = {name: sec / cfg.epochs for name, sec in timer.seconds.items()}
    median_epoch = statistics.median(epoch_seconds)

    trainer.phase = marked_phase
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        one_epoch()
        synchronize(device)
    if trace_path:
        prof.export_chrome_trace(trace_path)
    return {
        "cell_id": cfg.cell_id,
        "precision": cfg.precision,
        "threads": torch.get_num_threads() if device.type == "cpu" else cfg.threads,
        "epochs": cfg.epochs,
        "epoch_seconds": epoch_seconds,
        "sec_per_epoch": median_epoch,
        "phase_sec_per_epoch": per_epoch,
        "phase_shares": phase_shares(per_epoch, statistics.mean(epoch_seconds)),
        "top_ops": top_operators(prof.key_averages(), device.type, top),
        "notes": trainer.notes,
    }
