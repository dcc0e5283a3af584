"""What a run shows while it trains: the plan before it starts, a progress bar (or one line per finished
cell) and an ETA that weighs each cell by its a-priori cost and settles as cells finish."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Callable

from harness.cell.cost import estimate_seconds
from harness.cell.precision import bf16_warning
from harness.report.numbers import format_duration
from harness.spec.suite import GridCell, Suite


class Progress:
    """One bar over the grid (cells done, current cell and epoch, ETA) on a terminal; one plain line per
    finished cell otherwise.

    The ETA weighs each cell by its a-priori cost (``estimates``, seconds, for the cells still to train) and
    corrects the whole estimate by how long the work done so far really took, so that it settles as cells
    finish. Until enough is done, the a-priori figures weigh in (``prior_sec`` of pretend-accurate work)."""

    def __init__(self, total: int, done: int, stream=None, estimates: dict[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic, started_epochs: dict[str, int] | None = None):
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.total, self.done = total, done
        self.current: GridCell | None = None
        self.estimates = dict(estimates or {})
        self.remaining_est = sum(self.estimates.values())  # cells not finished yet, in flight included
        self.finished_est = 0.0
        self.fractions: dict[str, float] = {}  # cells in flight: share of their epochs done
        # Cells that go on from a checkpoint: the epoch it holds. Their estimates are of what remains, and
        # their share done counts from there (the earlier epochs, reported again, took no time now).
        self.started_epochs = dict(started_epochs or {})
        self.cell_started: dict[str, float] = {}  # cells in flight: when they started
        self.prior_sec = min(300.0, max(1.0, 0.02 * self.remaining_est))
        self.clock = clock
        self.started = clock()
        self.epoch_listeners: list[Callable[[GridCell, dict], None]] = []  # e.g. TensorBoard, per live epoch
        self._postfix = ""
        self.bar = tqdm(total=total, initial=done, unit="cell", file=self.stream, disable=not self.interactive,
                        dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} cells [{elapsed}{postfix}]")

    def _fraction(self, cell_id: str, now: float) -> float:
        """The share of a cell in flight that is done: by its epochs where they are reported, otherwise (a
        cell on a Ray worker, or before its first epoch) by the time it has run against its estimate, so that
        cells training side by side all count as progress."""
        frac = self.fractions[cell_id]
        estimate = self.estimates.get(cell_id, 0.0)
        if frac > 0 or estimate <= 0:
            return frac
        return min(0.9, max(0.0, now - self.cell_started.get(cell_id, now)) / estimate)

    def eta_seconds(self) -> float:
        now = self.clock()
        in_flight = sum(self.estimates.get(cid, 0.0) * self._fraction(cid, now) for cid in self.fractions)
        progress = self.finished_est + in_flight
        elapsed = max(0.0, now - self.started)
        factor = (elapsed + self.prior_sec) / (progress + self.prior_sec)
        return max(0.0, self.remaining_est - in_flight) * factor

    def eta_text(self) -> str:
        return "ETA " + format_duration(self.eta_seconds())

    def _refresh(self) -> None:
        self.bar.set_postfix_str(", ".join(x for x in (self._postfix, self.eta_text()) if x))

    def start_cell(self, cell: GridCell) -> None:
        self.current = cell
        self.fractions[cell.cell_id] = 0.0
        self.cell_started[cell.cell_id] = self.clock()
        self.bar.set_description(cell.cell_id)
        self._postfix = ""
        self._refresh()

    def epoch(self, row: dict) -> None:
        if self.current is not None:
            for listener in self.epoch_listeners:
                listener(self.current, row)
            epochs = max(1, self.current.config.epochs)
            before = min(self.started_epochs.get(self.current.cell_id, 0), epochs - 1)
            self.fractions[self.current.cell_id] = min(1.0, max(0, row["epoch"] - before) / (epochs - before))
            self._postfix = f"epoch {row['epoch']}/{epochs} ppl {row['train_ppl']:.3f}"
            self._refresh()

    def finish_cell(self, cell: GridCell, record: dict) -> None:
        self.done += 1
        estimate = self.estimates.get(cell.cell_id, 0.0)
        self.fractions.pop(cell.cell_id, None)
        self.cell_started.pop(cell.cell_id, None)
        self.remaining_est = max(0.0, self.remaining_est - estimate)
        # A cell skipped at once says nothing about the speed of training; its estimate just drops out.
        if record.get("status") != "skipped":
            self.finished_est += estimate
        self.bar.update(1)
        line = (f"[{self.done}/{self.total}] {cell.cell_id} {record['status']}"
                f" {record.get('total_sec') or 0:.1f}s")
        if record.get("train_ppl") is not None:
            line += f" train_ppl {record['train_ppl']:.3f}"
        if record.get("sec_per_epoch") is not None:
            line += f" sec/epoch {record['sec_per_epoch']:.3f}"
        if record.get("reason"):
            line += f" ({record['reason'][:200]})"
        if self.done < self.total and self.estimates:
            line += f" [{self.eta_text()}]"
        if self.interactive:
            self._refresh()
            self.bar.write(line)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()


def remaining_estimates(pending: list[GridCell], started_epochs: dict[str, int], will_skip: set[str]) -> dict[str, float]:
    """Each pending cell's estimated seconds (``harness.cell.cost``): none for one that will be skipped, and for
    one that goes on from a checkpoint after epoch k of n, the share (n - k) / n of its estimate."""
    estimates = {}
    for cell in pending:
        if cell.cell_id in will_skip:
            estimates[cell.cell_id] = 0.0
            continue
        epochs = max(1, cell.config.epochs)
        done = min(max(0, started_epochs.get(cell.cell_id, 0)), epochs)
        estimates[cell.cell_id] = estimate_seconds(cell.config) * (epochs - done) / epochs
    return estimates


def plan_text(suite: Suite, pending: list[GridCell], estimates: dict[str, float], will_skip: set[str],
              executor: str) -> str:
    """What is about to happen, before it does: the cells by their axes and the estimated time."""
    if not pending:
        return f"{suite.name}: nothing to train"
    axes: dict[str, list] = {}
    for cell in pending:
        for key, value in cell.axes.items():
            axes.setdefault(key, [])
            if value not in axes[key]:
                axes[key].append(value)
    shape = " x ".join(f"{key} {', '.join(map(str, values))}" for key, values in axes.items() if values)
    total = sum(estimates.values())
    when = "one at a time" if executor == "local" else "added up over the cells"
    lines = [f"{suite.name}: {len(pending)} cells to train ({shape})",
             f"estimated {format_duration(total)} ({when}; a rough a-priori estimate fitted on a 2-core CPU, "
             "corrected by the ETA as cells finish)"]
    if will_skip:
        lines.append(f"{len(will_skip)} CUDA cells will be skipped: CUDA is not available on this machine")
    lines += [warning for warning in [bf16_warning(c.config for c in pending)] if warning]
    return "\n".join(lines)


# Flags of `run` that take a value (``--resume``'s is optional); the others stand alone.
_VALUE_FLAGS = ("--out", "--retrain", "--only", "--set", "--tensorboard", "--executor", "--address", "--cells-per-gpu")
_PART_FLAGS = ("--out", "--resume", "--retrain", "--dry-run")  # where and what this part trained: the hint's own


def resume_command(info: dict, path, retrain=(), prog: str | None = None) -> str | None:
    """The shell command that resumes the run of run.json ``info`` in ``path``: its latest part's command line
    (the suite and every flag that shapes the cells, ``--set`` and ``--only`` included, so that the cells
    still match) with ``--resume PATH`` and ``--retrain`` instead of its own. ``prog``: how to call the
    harness where no `run` command line was recorded (None: then there is no command to give)."""
    parts = info.get("resumes") or []
    argv = [str(a) for a in ((parts[-1].get("command") if parts else None) or info.get("command") or [])]
    if "run" not in argv and prog is None:
        return None  # started from code, not from the command line
    at = argv.index("run") if "run" in argv else len(argv)
    words = argv[:at] if "run" in argv else prog.split()
    suite, kept, rest, i = None, [], argv[at + 1:], 0
    while i < len(rest):
        token = rest[i]
        name, inline = token.split("=", 1)[0], "=" in token
        takes = name in _VALUE_FLAGS or (name == "--resume" and i + 1 < len(rest) and not rest[i + 1].startswith("-"))
        group = rest[i:i + (2 if takes and not inline and token.startswith("--") else 1)]
        i += len(group)
        if not token.startswith("-"):
            suite = suite or token
        elif name not in _PART_FLAGS:
            kept += group
    suite = suite or (info.get("suite") or {}).get("file") or "SUITE"
    tail = ["--retrain", ",".join(retrain)] if retrain else []
    return shlex.join([*words, "run", str(suite), "--resume", str(Path(path)), *tail, *kept])
