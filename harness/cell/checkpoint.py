"""A cell's training state, saved between epochs so that a cell stopped part-way (an interrupted run, a
killed process, a machine that goes away) goes on from its last checkpoint instead of its first epoch.

One file per cell in the run folder (``RunDir.checkpoint_path``), written atomically at most every
``every_sec`` seconds of training, with a torch-free JSON summary beside it (``results.checkpoint_summary_path``), and removed
when the cell's record is stored (kept for a failed cell, which a resumed run trains again). It is read
back only by the same configuration, text and PyTorch version (``identity``). Going on from it gives the
numbers an unbroken run gives: the weights, the data order's generator, the global RNG, the epochs' rows and
the best epoch's weights are all in it (the optimiser, plain SGD, has no state of its own).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from harness.results.run_folder import checkpoint_summary_path
from harness.results.atomic import write_json_atomic

CHECKPOINT_SEC = 60.0  # a few MB per save: well under a second, against epochs of seconds
FORMAT = 1


class Checkpointer:
    """Saves and loads one cell's state at ``path`` (None: neither). ``identity``: what a checkpoint must
    match to be gone on from (the configuration's hash, the text's SHA-256); the PyTorch version is added.
    ``notes`` says what a run should know (a checkpoint ignored, one that could not be written, earlier
    epochs trained on another machine)."""

    def __init__(self, path: str | Path | None, identity: dict, every_sec: float = CHECKPOINT_SEC,
                 clock=time.monotonic):
        self.path = Path(path) if path else None
        self.identity = {**identity, "torch_version": str(torch.__version__)}
        self.every_sec = every_sec
        self.clock = clock
        self.started = clock()
        self.last_save = self.started
        self.prior_sec = 0.0  # training time of the processes before this one, up to their last checkpoint
        self.notes: list[str] = []
        self._failed = False

    def load(self) -> dict | None:
        """The saved state (its tensors on the CPU), or None (no file, another identity, unreadable: then a
        note says so)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file must not cost the cell: it trains from its first epoch
            self.notes.append(f"checkpoint {self.path.name} unreadable ({type(exc).__name__}); "
                              "trained from the first epoch")
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            self.notes.append(f"checkpoint {self.path.name} of another format ignored; trained from the first epoch")
            return None
        for key, expected in self.identity.items():
            if state.get(key) != expected:
                self.notes.append(f"checkpoint {self.path.name} ignored: its {key} is {state.get(key)}, "
                                  f"not {expected}; trained from the first epoch")
                return None
        if state.get("hostname") != socket.gethostname():
            self.notes.append(f"epochs 1-{state['epoch']} trained on {state.get('hostname')}, the rest on "
                              f"{socket.gethostname()}: their times are not comparable")
        self.prior_sec = float(state["elapsed_sec"])
        return state

    def due(self) -> bool:
        return self.path is not None and self.clock() - self.last_save >= self.every_sec

    def elapsed_sec(self) -> float:
        """Training time of this cell so far, over every process that trained it."""
        return self.prior_sec + self.clock() - self.started

    def save(self, state: dict) -> None:
        """Write ``state`` (with the format, identity, machine and time so far) atomically: a process killed
        while writing leaves the previous checkpoint whole. A failed write is noted once and tried again at
        the next checkpoint: training goes on either way."""
        if self.path is None:
            return
        state = {**state, **self.identity, "format": FORMAT, "hostname": socket.gethostname(),
                 "elapsed_sec": self.elapsed_sec()}
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self.last_save = self.clock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, partial)
            os.replace(partial, self.path)
        except (OSError, RuntimeError) as exc:
            if not self._failed:
                reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
                self.notes.append(f"a checkpoint could not be written to {self.path} ({reason}); "
                                  "tried again at each later one")
            self._failed = True
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            return
        # A torch-free summary beside it, for `harness show` and the runner (written second: it may lag,
        # never lead).
        last = state["epoch_log"][-1] if state.get("epoch_log") else {}
        with contextlib.suppress(OSError):
            write_json_atomic(checkpoint_summary_path(self.path), {
                "epoch": state.get("epoch"), "train_ppl": last.get("train_ppl"),
                "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "elapsed_sec": state["elapsed_sec"], "config_hash": self.identity.get("config_hash")})
