"""`run --tensorboard DIR`: each cell's learning curves as TensorBoard scalars, written as its epochs finish.

One TensorBoard run per cell, ``DIR/<results folder name>/<cell_id>``, so that several harness runs can
share DIR. Tags: ``perplexity/train``, ``perplexity/heldout_teacher_forced``, ``perplexity/heldout_causal``
(on the epochs that evaluate), ``seconds_per_epoch`` and ``tokens_per_sec``; the step is the epoch. A cell
resumed or trained again replaces what an earlier process logged from its first step on. Needs
the optional ``tensorboard`` package (``pip install -e '.[tensorboard]'``).
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.errors import HarnessError
from harness.results.run_folder import cell_file_name

TAGS = (
    ("perplexity/train", "train_ppl"),
    ("perplexity/heldout_teacher_forced", "val_ppl"),
    ("perplexity/heldout_causal", "causal_ppl"),
    ("seconds_per_epoch", "sec"),
    ("tokens_per_sec", "tokens_per_sec"),
)


class TensorBoardLog:
    def __init__(self, log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise HarnessError(f"--tensorboard needs TensorBoard: pip install -e '.[tensorboard]' ({exc})") from None
        self.root = Path(log_dir)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HarnessError(f"--tensorboard {self.root}: cannot write there: {exc.strerror or exc}") from None
        self._writer_class = SummaryWriter
        self._writers: dict = {}
        self._last_epoch: dict[str, int] = {}

    def _writer(self, cell_id: str, first_step: int):
        if cell_id not in self._writers:
            # What this process logs from its first step on supersedes what an earlier process logged there
            # (a resumed cell replays its saved epochs; a cell trained again starts over), instead of
            # TensorBoard drawing both.
            self._writers[cell_id] = self._writer_class(log_dir=str(self.root / cell_file_name(cell_id)), purge_step=first_step)
        return self._writers[cell_id]

    def epoch(self, cell_id: str, row: dict) -> None:
        """Log one epoch's row (as the worker reports it); an epoch already logged is left alone."""
        step = int(row["epoch"])
        if step <= self._last_epoch.get(cell_id, 0):
            return
        writer = self._writer(cell_id, step)
        for tag, key in TAGS:
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                writer.add_scalar(tag, float(value), step)
        self._last_epoch[cell_id] = step
        writer.flush()  # live: TensorBoard shows the epoch now, not at the writer's next timed flush

    def finish(self, cell_id: str, record: dict) -> None:
        """A finished cell: its epochs not seen live (a Ray task reports them only at the end), then close."""
        for row in record.get("epoch_log") or []:
            self.epoch(cell_id, row)
        writer = self._writers.pop(cell_id, None)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
