"""Decide whether training got slower: a noise-aware comparison of two measurements of the same cells.

The unit of comparison is the run: one process that trained a cell (one ``cell_id`` of a run folder, e.g.
one seed). Each run is summarised by the median of its per-epoch times, warm-up epochs excluded, and the
two sides are compared through these run medians. Epochs are not the unit because, measured on a shared
2-core machine, the level of a cell moves from one process to the next by far more than its epochs vary
within a process (docs/regression.md): epochs of one process are not independent draws of what another
process will measure, and a test on them flags the same code run twice.

A cell regresses only when both hold (the rule of asv and pytest-benchmark's thresholds combined, with
the threshold applied to the confidence interval rather than to the point estimate):

* the slowdown is confidently larger than the threshold: the whole ``1 - alpha`` bootstrap confidence
  interval of the ratio of medians of the run medians, new / baseline, lies above ``1 + threshold``.
  Requiring only the point estimate above it lets a slow few minutes of the machine, which moves every
  run of one side together, pass for a change of the code (docs/regression.md);
* the run medians of the two sides differ significantly: two-sided Mann-Whitney U test (scipy),
  ``p < alpha``. The exact test needs enough runs to reach ``p < alpha`` at all: 5 against 5 at the
  default alpha 0.01 (``runs_needed``); with fewer the verdict is "too few runs".

An improvement is the mirror image: the interval below ``1 / (1 + threshold)`` (symmetric on a log scale,
so 10% means "more than 1.1x slower" or "more than 1.1x faster") and ``p < alpha``. For a metric where
higher is better (tokens per second) the directions swap.

Cells of the two sides are matched by the configuration keys that change the work of an epoch
(``TIMING_IRRELEVANT_KEYS`` are left out). The seed is one of them: a seed changes the weights and the data
order but not the shapes or the number of batches, so the runs of every seed are repeats of the same cost,
and a suite declares its repeats as seeds (``suites/regression.yaml``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from harness.results.speed_measurements import CELL_MACHINE_KEYS, CellTimes, Measurements
from harness.spec.config import FIELDS, GRID_KEYS
from harness.errors import HarnessError
# The statistics live in the stats module, beside the claims' (one place for both).
from harness.analysis.stats import (bootstrap_ratio_ci, enough_runs, mann_whitney_p, median_or_nan, relative_spread, run_medians,
                    runs_needed, safe_ratio)

DEFAULT_THRESHOLD = "10%"
DEFAULT_ALPHA = 0.01

# Configuration keys that do not change the cost of a training epoch (evaluation and its held-out tokens,
# generation, run limits, length of the run) and the seed (repeats, see above).
TIMING_IRRELEVANT_KEYS = ("epochs", "val_tokens", "eval_every", "prefixes", "sample_chars", "timeout", "seed")
# What run.json's ``machine`` must agree on for two timings to be comparable.
PROVENANCE_KEYS = ("cpu_model", "gpu_name", "python", "torch", "cuda", "cudnn")

VERDICTS = ("regression", "improvement", "same", "too few runs")


@dataclass(frozen=True)
class Metric:
    name: str
    column: str  # column of epochs.csv
    unit: str
    higher_is_better: bool


METRICS = {
    "sec_per_epoch": Metric("sec_per_epoch", "sec", "s", higher_is_better=False),
    "tokens_per_sec": Metric("tokens_per_sec", "tokens_per_sec", "tok/s", higher_is_better=True),
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise HarnessError(f"--metric {name!r}: unknown metric (choose from {', '.join(METRICS)})") from None


# --------------------------------------------------------------------------------------------- decision


@dataclass(frozen=True)
class Threshold:
    """The smallest change of the median that counts, as a fraction (0.10 for 10%).

    Parsed from pytest-benchmark style strings: ``10%``, ``median:10%``, ``2.5%``. Only the median is
    compared, so another statistic (``mean:``, ``min:``) is refused rather than silently ignored."""

    fraction: float
    stat: str = "median"

    _PATTERN = re.compile(r"^(?:(?P<stat>[a-z]+):)?(?P<number>[0-9]*\.?[0-9]+)%$")

    @classmethod
    def parse(cls, text) -> Threshold:
        if isinstance(text, Threshold):
            return text
        raw = str(text).strip()
        match = cls._PATTERN.match(raw.lower().replace(" ", ""))
        if not match:
            raise HarnessError(f"threshold {raw!r}: expected a percentage such as 10% or median:10%")
        stat = match.group("stat") or "median"
        if stat != "median":
            raise HarnessError(f"threshold {raw!r}: only the median is compared; write "
                               f"{match.group('number')}% or median:{match.group('number')}%")
        fraction = float(match.group("number")) / 100
        if not 0 <= fraction <= 10:
            raise HarnessError(f"threshold {raw!r}: must be between 0% and 1000%")
        return cls(fraction, stat)

    @property
    def slower_ratio(self) -> float:
        """new / baseline above this is a slowdown large enough to matter."""
        return 1 + self.fraction

    @property
    def faster_ratio(self) -> float:
        return 1 / (1 + self.fraction)

    def __str__(self) -> str:
        return f"{self.stat}:{self.fraction * 100:g}%"


@dataclass(frozen=True)
class Comparison:
    """The verdict on one cell, with the numbers behind it: the raw per-epoch samples of every run of each
    side (warm-up excluded), from which the statistics are derived."""

    base_runs: tuple[tuple[float, ...], ...]
    new_runs: tuple[tuple[float, ...], ...]
    threshold: Threshold
    alpha: float
    higher_is_better: bool
    p_value: float  # Mann-Whitney U on the run medians
    ci_low: float  # confidence interval of the ratio of medians, level 1 - alpha
    ci_high: float
    verdict: str

    @property
    def base(self) -> tuple[float, ...]:
        """The baseline's run medians, one per run."""
        return run_medians(self.base_runs)

    @property
    def new(self) -> tuple[float, ...]:
        return run_medians(self.new_runs)

    @property
    def base_median(self) -> float:
        return median_or_nan(self.base)

    @property
    def new_median(self) -> float:
        return median_or_nan(self.new)

    @property
    def ratio(self) -> float:
        """Median of the new run medians / median of the baseline's."""
        return safe_ratio(self.new_median, self.base_median)

    @property
    def base_spread(self) -> float:
        """How far the baseline's runs disagree: interquartile range / median of the run medians."""
        return relative_spread(self.base)

    @property
    def new_spread(self) -> float:
        return relative_spread(self.new)

    @property
    def noisy(self) -> bool:
        """The runs of one side differ among themselves by more than the threshold, so a change of the
        threshold's size is hard to tell from run-to-run noise (as torch.utils.benchmark flags noisy
        measurements): a verdict of "same" here is weak evidence."""
        spreads = [s for s in (self.base_spread, self.new_spread) if math.isfinite(s)]
        return bool(spreads) and max(spreads) > self.threshold.fraction

    @property
    def confidence(self) -> float:
        return 1 - self.alpha

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


def compare_runs(base_runs: Iterable[Sequence[float]], new_runs: Iterable[Sequence[float]], threshold="10%",
                 alpha: float = DEFAULT_ALPHA, higher_is_better: bool = False) -> Comparison:
    """Compare one cell's runs (each a sequence of per-epoch measurements, warm-up excluded) between a
    baseline and a new measurement, and give a verdict."""
    threshold = Threshold.parse(threshold)
    if not 0 < alpha < 1:
        raise HarnessError(f"alpha {alpha!r}: must be between 0 and 1")
    base_runs = tuple(tuple(float(v) for v in run) for run in base_runs if len(run))
    new_runs = tuple(tuple(float(v) for v in run) for run in new_runs if len(run))
    base, new = run_medians(base_runs), run_medians(new_runs)
    p = mann_whitney_p(base, new)
    low, high = bootstrap_ratio_ci(base, new, 1 - alpha)
    ratio = safe_ratio(median_or_nan(new), median_or_nan(base))
    if not enough_runs(len(base), len(new), alpha) or math.isnan(ratio):
        verdict = "too few runs"
    elif p < alpha and low > threshold.slower_ratio:
        verdict = "improvement" if higher_is_better else "regression"
    elif p < alpha and high < threshold.faster_ratio:
        verdict = "regression" if higher_is_better else "improvement"
    else:
        verdict = "same"
    return Comparison(base_runs, new_runs, threshold, alpha, higher_is_better, p, low, high, verdict)


def compare_samples(base: Iterable[float], new: Iterable[float], threshold="10%", alpha: float = DEFAULT_ALPHA,
                    higher_is_better: bool = False) -> Comparison:
    """``compare_runs`` where every value is a run of its own (an independent measurement)."""
    return compare_runs([(v,) for v in base], [(v,) for v in new], threshold, alpha, higher_is_better)


# ------------------------------------------------------------------------------------------- matching


def match_key(config: dict, ignore: Iterable[str] = ()) -> tuple:
    """The part of a cell's configuration that changes the cost of an epoch, as a hashable key."""
    skip = set(TIMING_IRRELEVANT_KEYS) | set(ignore)
    return tuple((k, _hashable(config.get(k))) for k in FIELDS if k not in skip)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


LABEL_KEYS = tuple(k for k in GRID_KEYS if k != "seed")  # seeds are the repeats of a matched cell


def cell_labels(keys: Iterable[tuple]) -> dict[tuple, str]:
    """Readable names for matched cells: ``lstm-l2-bi-cpu`` plus ``-key=value`` for each other key whose
    value differs between the cells shown."""
    keys = list(dict.fromkeys(keys))
    varying = []
    if keys:
        for i, (name, _) in enumerate(keys[0]):
            if name not in LABEL_KEYS and len({k[i][1] for k in keys}) > 1:
                varying.append(i)
    labels = {}
    for key in keys:
        d = dict(key)
        label = f"{d.get('cell')}-l{d.get('layers')}-{d.get('direction')}-{d.get('device')}"
        labels[key] = label + "".join(f"-{key[i][0]}={key[i][1]}" for i in varying)
    return labels


@dataclass(frozen=True)
class MatchedCell:
    label: str
    base_ids: tuple[str, ...]
    new_ids: tuple[str, ...]
    base_runs: tuple[tuple[float, ...], ...]  # per run (cell_id), its timed epochs (warm-up excluded)
    new_runs: tuple[tuple[float, ...], ...]
    machines: str = ""  # how the machines of the cells differ (empty: all timed on one kind of machine)
    device: str = "cpu"


@dataclass(frozen=True)
class Matching:
    pairs: tuple[MatchedCell, ...]
    only_base: tuple[str, ...]  # labels
    only_new: tuple[str, ...]
    not_ok: tuple[str, ...]  # "cell_id (status) in SOURCE", not compared
    not_ok_cells: tuple[tuple[str, str, str], ...] = ()  # (side: "baseline" or "new", status, cell_id)


def cell_machine(cell: CellTimes, side: Measurements) -> tuple:
    """(cpu_model, gpu_name) a cell was timed on: its own record, else its run's machine."""
    def value(key):
        found = cell.machine.get(key) if key in cell.machine else side.machine.get(key)
        return None if found is None or found == "" or (isinstance(found, float) and math.isnan(found)) else found

    return tuple(value(k) for k in CELL_MACHINE_KEYS)


def machine_name(machine: tuple) -> str:
    named = [str(v) for v in machine if v is not None]
    return ", ".join(named) if named else "unrecorded machine"


def machine_mismatch(base: set[tuple], new: set[tuple]) -> str:
    """How the machines of a matched pair's cells differ, or "" when they were all timed on one kind
    of machine (same CPU model and GPU)."""
    if len(base | new) <= 1:
        return ""
    if len(base) == 1 and len(new) == 1:
        (b,), (n,) = base, new
        return "; ".join(f"{k} {bv!r} -> {nv!r}" for k, bv, nv in zip(CELL_MACHINE_KEYS, b, n) if bv != nv)
    parts = [f"{side} cells on {len(ms)} machines ({' | '.join(machine_name(m) for m in sorted(ms, key=str))})"
             for side, ms in (("baseline", base), ("new", new)) if len(ms) > 1]
    return "; ".join(parts)


def match_cells(base: Measurements, new: Measurements, metric: Metric, ignore: Iterable[str] = ()) -> Matching:
    """Pair the ``ok`` cells of two measurements by their timing-relevant configuration; the cells that
    match one configuration (its seeds) are the runs of that matched cell."""
    ignore = tuple(ignore)
    unknown = [k for k in ignore if k not in FIELDS]
    if unknown:
        raise HarnessError(f"--ignore {unknown[0]!r}: not a configuration key")
    not_ok, not_ok_cells = [], []
    groups: list[dict[tuple, list[CellTimes]]] = []
    for side, name in ((base, "baseline"), (new, "new")):
        grouped: dict[tuple, list[CellTimes]] = {}
        for cell in side.cells:
            if cell.status != "ok":
                not_ok.append(f"{cell.cell_id} ({cell.status}) in {side.source}")
                not_ok_cells.append((name, cell.status, cell.cell_id))
                continue
            grouped.setdefault(match_key(cell.config, ignore), []).append(cell)
        groups.append(grouped)
    base_groups, new_groups = groups
    labels = cell_labels(list(base_groups) + list(new_groups))
    pairs = []
    for key, base_cells in base_groups.items():
        if key not in new_groups:
            continue
        new_cells = new_groups[key]
        pairs.append(MatchedCell(
            label=labels[key],
            base_ids=tuple(c.cell_id for c in base_cells),
            new_ids=tuple(c.cell_id for c in new_cells),
            base_runs=tuple(c.samples(metric) for c in base_cells),
            new_runs=tuple(c.samples(metric) for c in new_cells),
            machines=machine_mismatch({cell_machine(c, base) for c in base_cells},
                                      {cell_machine(c, new) for c in new_cells}),
            device=str(dict(key).get("device", "cpu")),
        ))
    return Matching(
        pairs=tuple(sorted(pairs, key=lambda p: p.label)),
        only_base=tuple(sorted(labels[k] for k in base_groups if k not in new_groups)),
        only_new=tuple(sorted(labels[k] for k in new_groups if k not in base_groups)),
        not_ok=tuple(not_ok),
        not_ok_cells=tuple(not_ok_cells),
    )


def not_compared_summary(not_ok_cells, listed: int = 3) -> str:
    """Unfinished cells in one line: counts by side and status; the ids only of a few problem cells
    (skipped cells, e.g. every CUDA cell of a CPU machine, are just counted)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for side, status, cell_id in not_ok_cells:
        groups.setdefault((side, status), []).append(cell_id)
    parts = []
    for (side, status), ids in groups.items():
        part = f"{len(ids)} {status} in {side}"
        if status != "skipped":
            part += f" ({', '.join(ids[:listed])}{', ...' if len(ids) > listed else ''})"
        parts.append(part)
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ provenance


def provenance_differences(base_machine: dict, new_machine: dict) -> list[str]:
    """What differs between the machines and software versions of two measurements, one line each."""
    if not base_machine or not new_machine:
        which = "baseline" if not base_machine else "new run"
        return [f"the {which} records no machine, so the machines cannot be compared"]
    return [f"{key}: {base_machine.get(key)!r} -> {new_machine.get(key)!r}" for key in PROVENANCE_KEYS
            if base_machine.get(key) != new_machine.get(key)]


def package_differences(base_machine: dict, new_machine: dict) -> list[str]:
    """The dependencies whose versions differ between two run.json ``machine`` entries (recorded from this
    version on: a side without them says nothing)."""
    base, new = base_machine.get("packages"), new_machine.get("packages")
    if not isinstance(base, dict) or not isinstance(new, dict):
        return []
    return [f"{name}: {base.get(name)!r} -> {new.get(name)!r}" for name in sorted(set(base) | set(new), key=str.lower)
            if base.get(name) != new.get(name)]


# --------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class CellResult:
    cell: MatchedCell
    comparison: Comparison


@dataclass(frozen=True)
class Report:
    base: Measurements
    new: Measurements
    metric: Metric
    threshold: Threshold
    alpha: float
    ignore: tuple[str, ...]
    results: tuple[CellResult, ...]
    matching: Matching
    differences: tuple[str, ...]

    @property
    def machine_speed(self) -> dict[str, tuple[float, float]]:
        """device -> (baseline rate, new rate) of the calibrated matrix product, for the devices of the
        matched cells that both sides calibrated."""
        devices = sorted({r.cell.device for r in self.results})
        return {d: (self.base.calibration[d], self.new.calibration[d]) for d in devices
                if d in self.base.calibration and d in self.new.calibration}

    @property
    def machine_speed_changed(self) -> dict[str, float]:
        """device -> new / baseline calibrated rate, where the machine itself ran faster or slower by more
        than the threshold: then part of any difference of the cells is the machine's state, not the code."""
        changed = {}
        for device, (base, new) in self.machine_speed.items():
            ratio = new / base
            if ratio > self.threshold.slower_ratio or ratio < self.threshold.faster_ratio:
                changed[device] = ratio
        return changed

    @property
    def mixed_machines(self) -> tuple[CellResult, ...]:
        """Results whose cells were timed on different machines (compared only when allowed)."""
        return tuple(r for r in self.results if r.cell.machines)

    def count(self, verdict: str) -> int:
        return sum(r.comparison.verdict == verdict for r in self.results)

    @property
    def regressed(self) -> bool:
        return self.count("regression") > 0

    @property
    def undecided(self) -> bool:
        """No matched cell had enough runs on both sides for the test to decide anything."""
        return self.count("too few runs") == len(self.results)

    @property
    def exit_code(self) -> int:
        """1: something regressed; 2: nothing could be decided (too few runs everywhere); 0 otherwise."""
        if self.regressed:
            return 1
        return 2 if self.undecided else 0

    @property
    def runs_needed(self) -> int:
        return runs_needed(self.alpha)

    def summary(self) -> str:
        words = {"regression": "regressed", "improvement": "improved", "same": "same",
                 "too few runs": "with too few runs"}
        parts = [f"{self.count(v)} {words[v]}" for v in VERDICTS]
        word = "REGRESSION" if self.regressed else "UNDECIDED" if self.undecided else "OK"
        mixed = f", {len(self.mixed_machines)} of them timed on different machines" if self.mixed_machines else ""
        hint = ""
        if self.count("too few runs"):
            hint = (f"; a verdict needs {self.runs_needed} runs per side at alpha {self.alpha:g}: repeat the "
                    "cells as seeds, as suites/regression.yaml does")
        return (f"{word}: {', '.join(parts)} in {len(self.results)} matched cell(s){mixed} "
                f"({self.metric.name}, threshold {self.threshold}, alpha {self.alpha:g}){hint}")


def compare_measurements(base: Measurements, new: Measurements, threshold="10%", alpha: float = DEFAULT_ALPHA,
                         metric: str = "sec_per_epoch", ignore: Iterable[str] = (),
                         allow_different_machine: bool = False) -> Report:
    """Match the cells of two measurements and compare each; refuse (HarnessError) when no cell matches
    or the machines differ without ``allow_different_machine``."""
    threshold = Threshold.parse(threshold)
    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha {alpha!r}: must be between 0 and 1")
    metric_def = get_metric(metric)
    differences = tuple(provenance_differences(base.machine, new.machine))
    if differences and not allow_different_machine:
        raise HarnessError(f"{base.source} and {new.source} were measured on different machines or versions "
                           f"({'; '.join(differences)}); pass --allow-different-machine to compare anyway")
    # Other dependencies' versions are said, not refused: an upgrade is what a comparison may be about.
    differences += tuple(package_differences(base.machine or {}, new.machine or {}))
    if base.malloc != new.malloc:
        raise HarnessError(f"{base.source} and {new.source} were measured with different malloc settings "
                           f"({base.malloc} -> {new.malloc}), which change an epoch's time; compare runs of the "
                           "same setting (harness run --system-malloc leaves malloc alone)")
    matching = match_cells(base, new, metric_def, ignore)
    if not matching.pairs:
        raise HarnessError(f"{base.source} and {new.source} have no cell in common "
                           f"(baseline: {', '.join(matching.only_base) or 'no ok cell'}; "
                           f"new: {', '.join(matching.only_new) or 'no ok cell'})")
    mixed = [p for p in matching.pairs if p.machines]
    if mixed and not allow_different_machine:
        listed = "; ".join(f"{p.label}: {p.machines}" for p in mixed[:3])
        more = f"; and {len(mixed) - 3} more" if len(mixed) > 3 else ""
        raise HarnessError(f"{len(mixed)} matched cell(s) of {base.source} and {new.source} were timed on "
                           f"different machines ({listed}{more}); pass --allow-different-machine to compare anyway")
    results = tuple(CellResult(cell, compare_runs(cell.base_runs, cell.new_runs, threshold, alpha,
                                                  metric_def.higher_is_better))
                    for cell in matching.pairs)
    return Report(base, new, metric_def, threshold, alpha, tuple(ignore), results, matching, differences)
