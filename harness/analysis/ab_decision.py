"""The decision of `harness ab` over its measured pairs: each run's timed rounds, grouped by matched cell,
decided per cell and pooled over all cells (``harness.analysis.stats``), and the outcome's verdict, exit
code and JSON. Pure: the processes that measure the pairs are ``harness.grid.ab``'s."""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis import stats
from harness.analysis.speed_compare import Threshold, cell_labels, match_key


@dataclass
class PairResult:
    """What one run (cell and seed) gave on both sides."""
    records: tuple[dict, dict]  # base, new
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (base sec, new sec) per timed round
    first: int = 0  # the side (0: base, 1: new) started first and first in the warm-up round


def timed_pairs(base_rows: list[dict], new_rows: list[dict]) -> list[tuple[float, float]]:
    """(base sec, new sec) of the rounds both sides completed, warm-up epochs left out."""
    return [(float(a["sec"]), float(b["sec"])) for a, b in zip(base_rows, new_rows)
            if not a.get("warmup") and not b.get("warmup")]


def median_or_none(values) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class CellOutcome:
    label: str
    cell_ids: list[str]
    pairs: list[tuple[float, float]]  # (base s, new s) per timed round, all runs (seeds) in turn
    run_units: list[list[float]]  # per compared run, its units (stats.abba_units)
    statuses: list[str]  # "base/new" status per run
    firsts: list[str]  # per run, the side ("base" or "new") started first and first in its warm-up round
    decision: stats.Decision | None = None  # on the runs' values (decide_outcome)

    @property
    def run_values(self) -> list[float]:
        """Each run's log-ratio, the mean of its units: the replicates of the decision."""
        return [sum(units) / len(units) for units in self.run_units]

    @property
    def unit_sd(self) -> float:
        """Standard deviation of the units around their run's value: the noise within a process pair."""
        deviations = [u - value for units, value in zip(self.run_units, self.run_values) if len(units) > 1
                      for u in units]
        dof = sum(len(units) - 1 for units in self.run_units if len(units) > 1)
        return math.sqrt(sum(d * d for d in deviations) / dof) if dof else math.nan

    @property
    def base_median(self) -> float | None:
        return median_or_none([a for a, _ in self.pairs])

    @property
    def new_median(self) -> float | None:
        return median_or_none([b for _, b in self.pairs])


@dataclass
class Outcome:
    suite: str
    sides: tuple  # (base, new), each with a name, a label and as_dict() (harness.grid.ab.Side)
    out: Path
    threshold: Threshold
    alpha: float
    rule: str
    rounds: int
    cells: list[CellOutcome]
    pooled: stats.Decision
    wall_s: float
    not_compared: list[str]
    load: tuple[float | None, float | None] = (None, None)  # 1-minute load average at the start and end
    malloc: dict = field(default_factory=dict)  # what the workers' malloc was told (KEEP_FREED_MEMORY or {})

    @property
    def busy(self) -> str:
        """A warning when other processes shared the CPUs (load average above their number, by the margin
        that ``harness show`` allows: a quiet check's own threads keep it near 2.0 on 2 CPUs): the pairs are
        then noisier, and with several threads per cell, epochs can be many times slower at random."""
        from harness.analysis.timing_trust import LOAD_MARGIN

        cpus = os.cpu_count() or 1
        high = [v for v in self.load if v is not None and v > cpus + LOAD_MARGIN]
        if not high:
            return ""
        return (f"the machine was busy: load average {' -> '.join(f'{v:.1f}' for v in self.load if v is not None)} "
                f"on {cpus} CPUs; other processes shared the cores, so the pairs are noisy and a verdict is "
                "likelier to be undecided")

    @property
    def too_few_runs(self) -> str:
        """What a verdict of "too few runs" needs, or "": more runs (a cell and seed each), or a run's two
        rounds. The number is the t-interval's fewest values, whatever alpha."""
        short = [c for c in self.cells if c.decision.verdict == "too few runs"]
        if not short and self.pooled.verdict != "too few runs":
            return ""
        where = (f"{min(c.decision.n for c in short)} per cell" if short else "") + (
            f"{', ' if short else ''}{self.pooled.n} in all" if self.pooled.verdict == "too few runs" else "")
        if self.rounds < 2:
            return (f"too few runs: {where}; a run's value needs at least 2 rounds (a unit of two): "
                    "use --rounds 2 or more")
        return (f"too few runs: {where}, at least {stats.MIN_RUNS} needed for an interval; a run is a cell and "
                "seed: give the suite more seeds (e.g. matrix: {seed: [0, 1, 2]})")

    @property
    def exit_code(self) -> int:
        return stats.exit_code([c.decision.verdict for c in self.cells] + [self.pooled.verdict])

    def count(self, verdict: str) -> int:
        return sum(c.decision.verdict == verdict for c in self.cells)

    @property
    def word(self) -> str:
        code = self.exit_code
        if code == 1:
            return "REGRESSION"
        if code == 2:
            return "UNDECIDED"
        return {"improvement": "IMPROVEMENT", "no change": "NO CHANGE"}.get(self.pooled.verdict, "UNDECIDED")

    def as_dict(self) -> dict:
        return {
            "suite": self.suite, "out": str(self.out), "wall_s": round(self.wall_s, 1),
            "threshold": self.threshold.fraction, "alpha": self.alpha, "rule": self.rule, "rounds": self.rounds,
            "base": {**self.sides[0].as_dict(), "run_dir": str(self.out / "base")},
            "new": {**self.sides[1].as_dict(), "run_dir": str(self.out / "new")},
            "cells": [{"cell": c.label, "runs": c.cell_ids, "statuses": c.statuses, "first": c.firsts,
                       "base_median_s": c.base_median, "new_median_s": c.new_median,
                       "pairs": [list(p) for p in c.pairs], "run_units": c.run_units,
                       "units": [u for units in c.run_units for u in units],
                       "unit_sd": c.unit_sd if math.isfinite(c.unit_sd) else None, **c.decision.as_dict()}
                      for c in self.cells],
            "pooled": self.pooled.as_dict(),
            "not_compared": self.not_compared, "load_average": list(self.load), "busy": self.busy or None,
            "malloc": self.malloc,
            "verdict": self.word.lower(), "exit_code": self.exit_code,
        }


def decide_outcome(suite: str, sides, out: Path, results, threshold: Threshold, alpha: float, rule: str,
                   rounds: int, wall_s: float) -> Outcome:
    """Group the runs, ``(base cell, new cell, PairResult)`` each, by matched cell (the seeds of a
    configuration are its repeats, as in ``harness compare``), decide each cell and all of them pooled,
    on the runs' values."""
    keys = {id(a): match_key(a.config.model_dump(mode="json")) for a, _, _ in results}
    labels = cell_labels(keys.values())
    grouped: dict[str, list] = {}
    not_compared = []
    for a, b, result in results:
        statuses = [r.get("status") for r in result.records]
        if statuses != ["ok", "ok"]:
            not_compared.append(f"{a.cell_id} (base {statuses[0]}, new {statuses[1]})")
        grouped.setdefault(labels[keys[id(a)]], []).append((a, b, result, statuses))
    cells = []
    for label, members in grouped.items():
        compared = [r for _, _, r, statuses in members if statuses == ["ok", "ok"]]
        pairs = [p for r in compared for p in r.pairs]
        # Units within each run only: two rounds of different processes do not form an ABBA unit.
        run_units = [stats.abba_units(stats.log_ratios([a for a, _ in r.pairs], [b for _, b in r.pairs]))
                     for r in compared]
        cell = CellOutcome(label, [a.cell_id for a, _, _, _ in members], pairs, [u for u in run_units if u],
                           [f"{s[0]}/{s[1]}" for *_, s in members], [sides[r.first].name for _, _, r, _ in members])
        cell.decision = stats.decide(cell.run_values, threshold.fraction, alpha, rule)
        cells.append(cell)
    pooled = stats.decide([v for c in cells for v in c.run_values], threshold.fraction, alpha, rule)
    return Outcome(suite, sides, out, threshold, alpha, rule, rounds, cells, pooled, wall_s, not_compared)
