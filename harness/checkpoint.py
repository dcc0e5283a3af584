"""A cell's training state, saved between epochs so that a cell stopped part-way (an interrupted run, a
killed process, a machine that goes away) goes on from its last checkpoint instead of its first epoch.

One file per cell in the run folder (``RunDir.checkpoint_path``), written atomically at most every
``every_sec`` seconds of training and removed when the cell's record is stored. It is read back only by the
same configuration (``config_hash``) and PyTorch version. Going on from it gives the numbers an unbroken
run gives: the weights, the data order's generator, the global RNG, the epochs' rows and the best epoch's
weights are all in it (the optimiser, plain SGD, has no state of its own).
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .store import write_json_atomic

CHECKPOINT_SEC = 60.0  # a few MB per save: well under a second, against epochs of seconds
FORMAT = 1


class Checkpointer:
    """Saves and loads one cell's state at ``path`` (None: neither). ``notes`` says what a run should know
    (a checkpoint ignored, one that could not be written)."""

    def __init__(self, path: str | Path | None, config_hash: str, every_sec: float = CHECKPOINT_SEC,
                 clock=time.monotonic):
        self.path = Path(path) if path else None
        self.config_hash = config_hash
        self.every_sec = every_sec
        self.clock = clock
        self.started = clock()
        self.last_save = self.started
        self.prior_sec = 0.0  # training time of the processes before this one
        self.notes: list[str] = []

    def load(self) -> dict | None:
        """The saved state, or None (no file, another configuration, unreadable: then a note says so)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception as exc:  # a damaged file must not cost the cell: it trains from its first epoch
            self.notes.append(f"checkpoint {self.path.name} unreadable ({type(exc).__name__}); "
                              "trained from the first epoch")
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            self.notes.append(f"checkpoint {self.path.name} of another format ignored; trained from the first epoch")
            return None
        for key, expected in (("config_hash", self.config_hash), ("torch_version", str(torch.__version__))):
            if state.get(key) != expected:
                self.notes.append(f"checkpoint {self.path.name} ignored: its {key} is {state.get(key)}, "
                                  f"not {expected}; trained from the first epoch")
                return None
        self.prior_sec = float(state["elapsed_sec"])
        return state

    def due(self) -> bool:
        return self.path is not None and self.clock() - self.last_save >= self.every_sec

    def elapsed_sec(self) -> float:
        """Training time of this cell so far, over every process that trained it."""
        return self.prior_sec + self.clock() - self.started

    def save(self, state: dict) -> None:
        """Write ``state`` (with the format, configuration and time so far) atomically: a process killed
        while writing leaves the previous checkpoint whole."""
        if self.path is None:
            return
        state = {**state, "format": FORMAT, "config_hash": self.config_hash, "torch_version": str(torch.__version__),
                 "elapsed_sec": self.elapsed_sec()}
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, partial)
            os.replace(partial, self.path)
        except (OSError, RuntimeError) as exc:  # training goes on without checkpoints rather than failing
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            self.notes.append(f"checkpoints stopped: cannot write {self.path} ({reason})")
            self.path = None
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            return
        self.last_save = self.clock()
        # A torch-free summary beside it, for `harness show` (written second: it may lag, never lead).
        last = state["epoch_log"][-1] if state.get("epoch_log") else {}
        with contextlib.suppress(OSError):
            write_json_atomic(summary_path(self.path), {
                "epoch": state.get("epoch"), "train_ppl": last.get("train_ppl"),
                "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "elapsed_sec": state["elapsed_sec"]})


def summary_path(checkpoint: Path) -> Path:
    """The JSON summary of ``checkpoint`` (its epoch, last training perplexity, when it was saved)."""
    return checkpoint.with_suffix(".json")
