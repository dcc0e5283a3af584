"""The lesson's claims tested on a run's tables: one pooled effect per claim decides.

Each claim compares cells that differ in one key (layers, or direction) and agree in every other key
that varies in the run: one *configuration* per such pair of groups (e.g. 2-layer GRU on CPU, bi against
uni), with its seeds as replicates. Per configuration the effect is a ratio (compared / reference),
computed on the log scale over seeds, with an interval whose spread is pooled over configurations
(``harness.analysis.stats``). The configurations' effects are then combined into one pooled ratio with a 95%
interval (random effects: configurations differ in their true effects, and the interval says so), and
the claim's verdict follows from where that interval lies against the claim's threshold:

- depth_helps (deeper / shallower perplexity, each step to the next depth): supported when the whole
  interval lies below 1 - margin, not supported when it lies wholly above it;
- bidirectional_slow (bi / uni seconds per epoch or peak memory): supported above ``threshold``, not
  supported below it;
- bidirectional_useless (bi / uni held-out causal perplexity): supported when the whole interval lies
  above 1 - margin (bi no better), not supported when it lies below.

A cell "did not learn" when its best held-out causal perplexity is not below the unigram baseline (the
perplexity of letter frequencies, ``harness.analysis.no_learning``). A perplexity comparison in which neither side
learned is shown but not pooled; one in which only one side learned counts (a real effect of depth or
direction at that budget). Everything here is pure: tables in, verdicts and evidence out, as data (why a
verdict is what it is, notes, the numbers a sentence quotes); ``harness.report.wording`` says them in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.analysis import text_measures
from harness.spec.claims import (BEST_METRIC, SELECTED_METRIC, CLAIM_NAMES, COST_METRICS, PPL_METRICS, ClaimSpec, default_claim,
                          default_claims, parse_claims)
from harness.spec.config import FIELDS, GRID_KEYS
from harness.analysis.stats import (EMPTY_POOL, RESOLUTION, Effect, Pooled, Replicates, configuration_effect, pool,
                    pooled_spread, sign_test)

__all__ = ["CLAIM_NAMES", "ClaimSpec", "ClaimResult", "Note", "Why", "default_claim", "default_claims",
           "evaluate_claims", "parse_claims"]

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
SUPPORTS, CONTRADICTS, UNCLEAR, INSUFFICIENT, NOT_COUNTED = (
    "supports", "contradicts", "unclear", "no interval", "not counted")

# What a comparison divides (compared / reference): the ``comparison`` column of the evidence and pooled
# tables. A depth configuration names its step ("1 -> 2 layers"); its pooled rows pool every step.
DEEPER = "deeper / shallower"
BI_UNI = "bi / uni"


def leak_comparison(direction: str) -> str:
    """The comparison of one direction's held-out causal against teacher-forced perplexity (the leak)."""
    return f"{direction}: causal / teacher-forced"


ENOUGH_SEEDS = 3  # seeds per configuration a claim should rest on; fewer gets a note

GRID_AXES = tuple(k for k in GRID_KEYS if k != "seed")  # seeds are the replicates, not an axis
MACHINE = "machine"


# --- tables -----------------------------------------------------------------------------------------------


def ok_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells that finished (status ok), with the result columns numeric."""
    if cells.empty or "status" not in cells:
        return cells.iloc[0:0].copy()
    ok = cells[cells["status"] == "ok"].copy()
    for column in PPL_METRICS + COST_METRICS + ("seed", "layers", "flops_per_epoch", BEST_METRIC, SELECTED_METRIC):
        if column in ok:
            ok[column] = pd.to_numeric(ok[column], errors="coerce")
    return ok


def extra_keys(cells: pd.DataFrame) -> list[str]:
    """Configuration keys beyond the grid axes that take more than one value in ``cells`` (precision,
    hidden, threads ...): cells that differ in one are different configurations."""
    return [k for k in FIELDS if k in cells and k not in GRID_KEYS and cells[k].nunique() > 1]


def configuration_keys(cells: pd.DataFrame) -> list[str]:
    """The grid axes and every other configuration key that varies: one configuration per combination."""
    return [k for k in GRID_AXES if k in cells] + extra_keys(cells)


def context_keys(cells: pd.DataFrame, compared: str) -> list[str]:
    return [k for k in configuration_keys(cells) if k != compared]


def by_seed(group: pd.DataFrame, column: str) -> dict:
    """``column`` of a group of cells as {seed: value} (several rows of one seed are averaged)."""
    if column not in group or "seed" not in group:
        return {}
    values = pd.Series(pd.to_numeric(group[column], errors="coerce").to_numpy(), index=group["seed"].to_numpy())
    values = values[np.isfinite(values)]
    return {int(s): float(v) for s, v in values.groupby(level=0).mean().items()}


def _groups(frame: pd.DataFrame, keys: list[str]):
    if frame.empty:
        return
    if not keys:
        yield (), frame
        return
    for key, group in frame.groupby(keys, dropna=False, sort=True):
        yield (key if isinstance(key, tuple) else (key,)), group


def text_column(cells: pd.DataFrame, column: str) -> pd.Series:
    """``cells[column]`` as strings, empty where missing (and wholly empty when there is no such column)."""
    if column not in cells:
        return pd.Series("", index=cells.index, dtype=object)
    return cells[column].astype(object).where(cells[column].notna(), "").astype(str)


def machine_of(cells: pd.DataFrame) -> pd.Series | None:
    """Per cell, the machine its timings come from: the CPU model, and for CUDA cells the GPU too
    (cells.csv ``cpu_model``, ``gpu_name``; a Ray run's ``node``, else ``hostname``). None when not recorded."""
    if "cpu_model" in cells:
        cpu, gpu = text_column(cells, "cpu_model"), text_column(cells, "gpu_name")
    elif "node" in cells:
        parts = text_column(cells, "node").str.split("|", expand=True).reindex(columns=range(3)).fillna("")
        cpu, gpu = parts[1], parts[2]
    elif "hostname" in cells:
        return text_column(cells, "hostname")
    else:
        return None
    cuda = text_column(cells, "device") == "cuda"
    return cpu.where(~cuda | (gpu == ""), cpu + ", " + gpu).where(cpu != "", "unrecorded")


def with_machine(cells: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``cells`` with a ``machine`` column and ``["machine"]`` as a further context key when the cells were
    timed on more than one machine; otherwise unchanged. Timings are compared only within a machine."""
    machines = machine_of(cells) if not cells.empty else None
    if machines is None or machines.nunique() < 2:
        return cells, []
    return cells.assign(**{MACHINE: machines}), [MACHINE]


def direction_pairs(ok: pd.DataFrame, timing: bool = False):
    """(context, uni cells, bi cells) for every group of cells that differ only in direction and seed."""
    if ok.empty or "direction" not in ok:
        return
    keys = context_keys(ok, "direction")
    if timing:
        ok, machine = with_machine(ok)
        keys += machine
    for key, group in _groups(ok, keys):
        uni, bi = group[group["direction"] == "uni"], group[group["direction"] == "bi"]
        if not uni.empty and not bi.empty:
            yield dict(zip(keys, key)), uni, bi


def depth_steps(ok: pd.DataFrame, keys: list[str]):
    """(context, "lo -> hi layers", shallower cells, deeper cells) for each pair of adjacent depths."""
    for key, group in _groups(ok, keys):
        depths = sorted(group["layers"].dropna().unique())
        for lo, hi in zip(depths, depths[1:]):
            yield (dict(zip(keys, key)), f"{int(lo)} -> {int(hi)} layers", group[group["layers"] == lo],
                   group[group["layers"] == hi])


# --- curves ----------------------------------------------------------------------------------------------


def training_curves(epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per cell_id: its epochs in order with ``elapsed`` (cumulative training seconds).

    A warm-up epoch (one-time allocation and thread start-up, left out of ``sec_per_epoch`` for the same
    reason) counts at the cell's median steady epoch time, so that it does not decide a comparison."""
    if epochs is None or epochs.empty or not {"cell_id", "epoch", "sec"} <= set(epochs.columns):
        return {}
    frame = epochs.copy()
    for column in ("epoch", "sec") + PPL_METRICS:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    curves = {}
    for cell_id, group in frame.groupby("cell_id", sort=False):
        group = group.sort_values("epoch").copy()
        seconds = group["sec"].fillna(0)
        if "warmup" in group:
            warmup = group["warmup"].astype(str).str.lower().isin(("true", "1", "1.0"))
            if warmup.any() and (~warmup).any():
                seconds = seconds.where(~warmup, float(seconds[~warmup].median()))
        group["elapsed"] = seconds.cumsum()
        curves[cell_id] = group
    return curves


def value_at_time(curve: pd.DataFrame, seconds: float, metric: str) -> float:
    """The last value of ``metric`` recorded by ``seconds`` of training (NaN if none was)."""
    if curve is None or metric not in curve or not math.isfinite(seconds):
        return math.nan
    reached = curve[(curve["elapsed"] <= seconds * (1 + 1e-9)) & curve[metric].notna()]
    return float(reached[metric].iloc[-1]) if not reached.empty else math.nan


def best_causal(cells: pd.DataFrame, curves: dict) -> pd.Series:
    """Per cell row: the lowest held-out causal perplexity it reached at any evaluation (its last one
    when there are no curves)."""
    last = pd.to_numeric(cells["causal_ppl"], errors="coerce") if "causal_ppl" in cells \
        else pd.Series(np.nan, index=cells.index)
    if "cell_id" not in cells:
        return last
    best = []
    for cell_id, final in zip(cells["cell_id"], last):
        curve = curves.get(cell_id)
        values = curve["causal_ppl"].dropna() if curve is not None and "causal_ppl" in curve else pd.Series()
        best.append(float(min(values.min(), final)) if len(values) and math.isfinite(final)
                    else float(values.min()) if len(values) else final)
    return pd.Series(best, index=cells.index, dtype=float)


def best_metrics(ok: pd.DataFrame) -> tuple[str, ...]:
    """The early-stopping perplexities ``ok`` has: the best of the held-out evaluations, and the one at the
    epoch chosen on selection text where cells were evaluated on it."""
    selected = SELECTED_METRIC in ok and pd.to_numeric(ok[SELECTED_METRIC], errors="coerce").notna().any()
    return (BEST_METRIC, SELECTED_METRIC) if selected else (BEST_METRIC,)


# --- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Why:
    """Why a verdict is what it is. ``kind`` and its ``values``:

    - ``no_configurations``: nothing to compare;
    - ``no_finished_cells``, ``one_depth`` (``directions``): depth_helps has no two depths to compare;
    - ``did_not_learn`` (``comparisons``): in every comparison neither side learned;
    - ``too_few_seeds``: no comparison had the seeds to count;
    - ``one_seed_one_configuration``: one configuration of single seeds, so no interval;
    - ``interval_above``, ``interval_below``, ``interval_includes`` (``low``, ``high``, ``bound`` on the
      ratio scale; ``pooled``: pooled over configurations rather than one configuration's);
    - ``timings_unreliable`` (``warnings``, ``would_be``: the verdict on these timings, ``interval``: the
      Why behind it).
    """

    kind: str
    values: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Note:
    """Something a reader of a verdict should know. ``kind`` and its ``values``:

    - ``left_out`` (``by_status``: status -> number of cells, ``cells``: their total): cells that did not finish;
    - ``few_seeds`` (``most``, ``enough``): at most ``most`` seeds per configuration;
    - ``bounded`` (``configurations``, ``resolution``): intervals bounded by the resolution, not the seeds;
    - ``not_counted`` (``comparisons``, ``of``): comparisons where neither side learned;
    - ``generated_text`` (``by_direction``: direction -> mean text measures) or ``no_samples``;
    - ``timings_left_out`` (``cells``, ``of``, ``reasons``): cells whose own timings are unreliable;
    - ``would_be`` (``verdict``): the verdict on timings flagged as unreliable.
    """

    kind: str
    values: dict = field(default_factory=dict)


@dataclass
class ClaimResult:
    spec: ClaimSpec
    verdict: str
    why: Why
    pooled: Pooled = field(default_factory=lambda: EMPTY_POOL)  # on the log scale
    evidence: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per configuration and measure
    pooled_table: pd.DataFrame = field(default_factory=pd.DataFrame)  # deciding measure, overall and per cell
    context_table: pd.DataFrame = field(default_factory=pd.DataFrame)  # other measures, pooled
    notes: list[Note] = field(default_factory=list)
    # Numbers the claim's sentence quotes beside the pooled effect (the FLOPs ratio, the leak's pooled row ...).
    facts: dict = field(default_factory=dict)
    threshold: float = 1.0  # the ratio the pooled interval is held against
    no_effect: float = 1.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def ratio(self) -> tuple[float, float, float]:
        p = self.pooled
        return tuple(math.exp(v) if math.isfinite(v) else math.nan for v in (p.estimate, p.low, p.high))

    @property
    def deciding(self) -> pd.DataFrame:
        if self.evidence.empty:
            return self.evidence
        return self.evidence[self.evidence["role"] == "deciding"]


def _pooled_row(table: pd.DataFrame, **match) -> dict | None:
    """The first row of a pooled table whose columns equal ``match`` (metric, comparison ...), or None."""
    if table.empty:
        return None
    for column, value in match.items():
        table = table[table[column] == value]
    if table.empty:
        return None
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in table.iloc[0].items()}


# --- the shared machinery of every claim -----------------------------------------------------------


@dataclass
class Unit:
    """One configuration's comparison of one measure: context, the two sides' seeds, whether it counts."""

    context: dict
    comparison: str
    metric: str
    basis: str
    replicates: Replicates
    learned_a: float = math.nan  # share of the reference side's seeds that learned (NaN: not applicable)
    learned_b: float = math.nan
    role: str = "deciding"

    @property
    def counts(self) -> bool:
        # Neither side learned: a comparison of two plateaus at the letter frequencies says nothing.
        return not (self.learned_a == 0 and self.learned_b == 0)


def _outcome(effect: Effect, lower_bound: float, direction: str, counts: bool) -> tuple[str, str]:
    """How one configuration's interval (ratio scale) lies against ``lower_bound``: ``direction`` "above"
    when the claim wants the ratio above it, "below" when below. (outcome, bearing); the outcome is one of
    above, below, unclear, single_seed, no_values, neither_learned (and too_few_seeds, set by the caller)."""
    if not counts:
        return "neither_learned", NOT_COUNTED
    if not effect.has_interval:
        return ("single_seed" if effect.n else "no_values"), INSUFFICIENT
    low, high = math.exp(effect.low), math.exp(effect.high)
    if direction == "above":
        return (("above", SUPPORTS) if low > lower_bound else ("below", CONTRADICTS) if high < lower_bound
                else ("unclear", UNCLEAR))
    return (("below", SUPPORTS) if high < lower_bound else ("above", CONTRADICTS) if low > lower_bound
            else ("unclear", UNCLEAR))


def _evaluate_units(units: list[Unit], spec: ClaimSpec, kind_bound: float, direction: str) -> pd.DataFrame:
    """Evidence rows for ``units``: each measure's spread is pooled over its own configurations."""
    rows = []
    by_measure: dict[tuple, list[Unit]] = {}
    for unit in units:
        by_measure.setdefault((unit.metric, unit.basis, unit.comparison), []).append(unit)
    for measure_units in by_measure.values():
        counted = [u for u in measure_units if u.counts]
        spread = pooled_spread([u.replicates for u in counted] or [u.replicates for u in measure_units], "ratio")
        for unit in measure_units:
            effect = configuration_effect(unit.replicates, "ratio", spread, spec.confidence)
            enough = min(len(unit.replicates.a), len(unit.replicates.b)) >= spec.min_seeds
            counts = unit.counts and enough
            outcome, bearing = _outcome(effect, kind_bound, direction, unit.counts)
            if unit.counts and not enough:
                outcome, bearing = "too_few_seeds", INSUFFICIENT
            a = np.array(list(unit.replicates.a.values()), dtype=float)
            b = np.array(list(unit.replicates.b.values()), dtype=float)
            rows.append({
                **unit.context, "comparison": unit.comparison, "metric": unit.metric, "basis": unit.basis,
                "role": unit.role, "seeds": effect.n, "pairing": effect.pairing,
                "reference": _geomean(a), "compared": _geomean(b),
                "ratio": math.exp(effect.estimate) if math.isfinite(effect.estimate) else math.nan,
                "ci_low": math.exp(effect.low) if math.isfinite(effect.low) else math.nan,
                "ci_high": math.exp(effect.high) if math.isfinite(effect.high) else math.nan,
                "log_effect": effect.estimate, "log_se": effect.se, "bounded": effect.bounded,
                "learned_reference": unit.learned_a, "learned_compared": unit.learned_b,
                "counted": counts and math.isfinite(effect.estimate), "outcome": outcome, "bearing": bearing,
            })
    return pd.DataFrame(rows)


def _geomean(values: np.ndarray) -> float:
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.exp(np.log(values).mean())) if len(values) else math.nan


def _effects(rows: pd.DataFrame) -> list[Effect]:
    return [Effect(r.log_effect, r.log_se, 0, math.log(r.ci_low) if r.ci_low > 0 else math.nan,
                   math.log(r.ci_high) if r.ci_high > 0 else math.nan, int(r.seeds), r.pairing)
            for r in rows.itertuples() if r.counted]


def pooled_rows(rows: pd.DataFrame, confidence: float, measure: dict) -> tuple[Pooled, list[dict]]:
    """The pooled effect of the counted ``rows``, overall and per cell type: (overall, table rows). Each
    row starts with ``measure``: the metric, comparison and basis pooled."""
    overall = pool(_effects(rows), confidence) if not rows.empty else EMPTY_POOL
    table = [_pool_row(measure, "all", rows, overall)]
    if "cell" in rows and rows["cell"].nunique() > 1:
        for cell, group in rows.groupby("cell", sort=True):
            table.append(_pool_row(measure, str(cell), group, pool(_effects(group), confidence)))
    return overall, table


def _measure(metric: str, comparison: str, basis: str = "epochs") -> dict:
    return {"metric": metric, "comparison": comparison, "basis": basis}


def _pool_row(measure: dict, cells: str, rows: pd.DataFrame, pooled: Pooled) -> dict:
    estimates = rows.loc[rows["counted"], "log_effect"] if not rows.empty else pd.Series(dtype=float)
    return {**measure, "cells": cells, "pooled_configurations": pooled.k, "configurations": len(rows),
            "ratio": math.exp(pooled.estimate) if math.isfinite(pooled.estimate) else math.nan,
            "ci_low": math.exp(pooled.low) if math.isfinite(pooled.low) else math.nan,
            "ci_high": math.exp(pooled.high) if math.isfinite(pooled.high) else math.nan,
            "i2": pooled.i2, "tau_factor": math.exp(pooled.tau) if math.isfinite(pooled.tau) else math.nan,
            "sign_p": sign_test(estimates), "method": pooled.method}


def _verdict(pooled: Pooled, bound: float, direction: str, units_total: int, counted: int,
             not_counted: int) -> tuple[str, Why]:
    """The verdict from where the pooled interval lies against ``bound``, and why."""
    if units_total == 0:
        return INCONCLUSIVE, Why("no_configurations")
    if counted == 0:
        if not_counted:
            return INCONCLUSIVE, Why("did_not_learn", {"comparisons": not_counted})
        return INCONCLUSIVE, Why("too_few_seeds")
    if not pooled.has_interval:
        return INCONCLUSIVE, Why("one_seed_one_configuration")
    low, high = math.exp(pooled.low), math.exp(pooled.high)
    where = {"low": low, "high": high, "bound": bound, "pooled": pooled.k > 1}
    above, below = Why("interval_above", where), Why("interval_below", where)
    if direction == "above":
        if low > bound:
            return SUPPORTED, above
        if high < bound:
            return NOT_SUPPORTED, below
    else:
        if high < bound:
            return SUPPORTED, below
        if low > bound:
            return NOT_SUPPORTED, above
    return INCONCLUSIVE, Why("interval_includes", where)


def _learned_share(cells: pd.DataFrame, baseline: float | None) -> float:
    """Share of ``cells`` whose best held-out causal perplexity is below ``baseline`` (NaN without one)."""
    if baseline is None or not math.isfinite(baseline) or "best_causal_ppl" not in cells or cells.empty:
        return math.nan
    values = pd.to_numeric(cells["best_causal_ppl"], errors="coerce")
    values = values[np.isfinite(values)]
    return float((values < baseline).mean()) if len(values) else math.nan


def _seed_note(rows: pd.DataFrame) -> list[Note]:
    if rows.empty:
        return []
    most = int(rows["seeds"].max())
    return [Note("few_seeds", {"most": most, "enough": ENOUGH_SEEDS})] if most < ENOUGH_SEEDS else []


def _bounded_note(rows: pd.DataFrame) -> list[Note]:
    if rows.empty or not rows["bounded"].any():
        return []
    return [Note("bounded", {"configurations": int(rows["bounded"].sum()), "resolution": RESOLUTION["ratio"]})]


def _left_out_note(cells: pd.DataFrame, keep=None) -> list[Note]:
    if cells.empty or "status" not in cells:
        return []
    relevant = cells[keep(cells)] if keep is not None else cells
    bad = relevant[relevant["status"] != "ok"]
    if bad.empty:
        return []
    by_status = {str(status): int(n) for status, n in bad["status"].value_counts().items()}
    return [Note("left_out", {"by_status": by_status, "cells": len(bad)})]


def _finish(spec: ClaimSpec, evidence: pd.DataFrame, measure: dict, bound: float, direction: str,
            context: list[tuple[dict, pd.DataFrame]], notes: list[Note]) -> ClaimResult:
    """The verdict on ``evidence``'s deciding rows (pooled as ``measure``), and each ``context`` measure's
    rows pooled overall."""
    deciding = evidence[evidence["role"] == "deciding"] if not evidence.empty else evidence
    if deciding.empty:
        return ClaimResult(spec, INCONCLUSIVE, Why("no_configurations"), EMPTY_POOL, evidence, notes=notes,
                           threshold=bound)
    pooled, table = pooled_rows(deciding, spec.confidence, measure)
    context_rows = []
    for context_measure, rows in context:
        if not rows.empty:
            context_rows += pooled_rows(rows, spec.confidence, context_measure)[1][:1]
    counted = int(deciding["counted"].sum())
    not_counted = int((deciding["bearing"] == NOT_COUNTED).sum())
    verdict, why = _verdict(pooled, bound, direction, len(deciding), counted, not_counted)
    notes = notes + _seed_note(deciding) + _bounded_note(deciding)
    if not_counted:
        notes.append(Note("not_counted", {"comparisons": not_counted, "of": len(deciding)}))
    return ClaimResult(spec, verdict, why, pooled, evidence, pd.DataFrame(table), pd.DataFrame(context_rows),
                       notes, threshold=bound)


# --- depth helps -----------------------------------------------------------------------------------------


def _depth_helps(ok, cells, curves, spec: ClaimSpec, baselines, quality) -> ClaimResult:
    notes = _left_out_note(cells, (lambda c: c["direction"].isin(spec.directions)) if "direction" in cells else None)
    if "direction" in ok:
        ok = ok[ok["direction"].isin(spec.directions)]
    if ok.empty or "layers" not in ok or ok["layers"].nunique() < 2:
        kind = "one_depth" if not ok.empty and "layers" in ok else "no_finished_cells"
        return ClaimResult(spec, INCONCLUSIVE, Why(kind, {"directions": spec.directions}), notes=notes)
    unigram = (baselines or {}).get("unigram")
    units = []
    keys = context_keys(ok, "layers")
    metrics = (PPL_METRICS + best_metrics(ok)) if spec.basis == "epochs" else PPL_METRICS
    if spec.basis == "epochs":
        for context, step, a, b in depth_steps(ok, keys):
            learned = (_learned_share(a, unigram), _learned_share(b, unigram))
            for metric in metrics:
                role = "deciding" if metric == spec.metric else "context"
                units.append(Unit(context, step, metric, "epochs",
                                  Replicates(by_seed(a, metric), by_seed(b, metric)), *learned, role=role))
    else:
        # At equal training time the seconds count, so only cells timed on the same machine are compared.
        timed, machine = with_machine(ok)
        for context, step, a, b in depth_steps(timed, keys + machine):
            learned = (_learned_share(a, unigram), _learned_share(b, unigram))
            a_time = {int(s): curves[c]["elapsed"].iloc[-1] for s, c in zip(a["seed"], a["cell_id"]) if c in curves}
            fallback = float(np.median(list(a_time.values()))) if a_time else math.nan
            for metric in PPL_METRICS:
                at = {int(s): value_at_time(curves.get(c), a_time.get(int(s), math.nan), metric)
                      for s, c in zip(a["seed"], a["cell_id"])}
                bt = {int(s): value_at_time(curves.get(c), a_time.get(int(s), fallback), metric)
                      for s, c in zip(b["seed"], b["cell_id"])}
                units.append(Unit(context, step, metric, "time",
                                  Replicates({k: v for k, v in at.items() if math.isfinite(v)},
                                             {k: v for k, v in bt.items() if math.isfinite(v)}),
                                  *learned, role="deciding" if metric == spec.metric else "context"))
    bound = 1 - spec.margin
    evidence = _evaluate_units(units, spec, bound, "below")
    context = [(_measure(m, DEEPER, spec.basis), evidence[(evidence["metric"] == m) & (evidence["role"] == "context")])
               for m in metrics if m != spec.metric] if not evidence.empty else []
    result = _finish(spec, evidence, _measure(spec.metric, DEEPER, spec.basis), bound, "below", context, notes)
    # One contrast, not every measure (those are in the claim's section): training perplexity beside a
    # held-out one, held-out causal beside training.
    contrast = "train_ppl" if spec.metric != "train_ppl" else "causal_ppl"
    result.facts["contrast"] = _pooled_row(result.context_table, metric=contrast)
    return result


# --- bidirectional is slow -------------------------------------------------------------------------------


def _bidirectional_slow(ok, cells, curves, spec: ClaimSpec, baselines, quality) -> ClaimResult:
    notes = _left_out_note(cells)
    units = []
    for context, uni, bi in direction_pairs(ok, timing=True):
        for metric in COST_METRICS:
            units.append(Unit(context, "bi / uni", metric, "epochs",
                              Replicates(by_seed(uni, metric), by_seed(bi, metric)),
                              role="deciding" if metric == spec.metric else "context"))
        if spec.metric == "sec_per_epoch" and "flops_per_epoch" in uni:
            # Time per unit of arithmetic: does bi run slower per FLOP, or only do more FLOPs?
            per_flop = {}
            for side, group in (("a", uni), ("b", bi)):
                sec, flops = by_seed(group, "sec_per_epoch"), by_seed(group, "flops_per_epoch")
                per_flop[side] = {s: sec[s] / flops[s] for s in sec if flops.get(s, 0) > 0}
            units.append(Unit(context, "bi / uni", "sec_per_flop", "epochs",
                              Replicates(per_flop["a"], per_flop["b"]), role="context"))
    evidence = _evaluate_units(units, spec, spec.threshold, "above")
    if not evidence.empty and "flops_per_epoch" in ok:
        flops = {}
        for context, uni, bi in direction_pairs(ok, timing=True):
            fu, fb = _geomean(uni["flops_per_epoch"].to_numpy(float)), _geomean(bi["flops_per_epoch"].to_numpy(float))
            flops[tuple(context.values())] = fb / fu if fu > 0 else math.nan
        keys = [k for k in evidence.columns if k in context_keys(ok, "direction") + [MACHINE]]
        evidence["flops_ratio"] = [flops.get(tuple(row[k] for k in keys), math.nan) for _, row in evidence.iterrows()]
    context = [(_measure(m, BI_UNI), evidence[(evidence["metric"] == m) & (evidence["role"] == "context")])
               for m in ("peak_mem_bytes", "sec_per_epoch", "sec_per_flop") if m != spec.metric] \
        if not evidence.empty else []
    result = _finish(spec, evidence, _measure(spec.metric, BI_UNI), spec.threshold, "above", context, notes)
    if spec.metric == "sec_per_epoch" and "flops_ratio" in result.evidence:
        # Beside the slowdown: how much more arithmetic bi does, and the slowdown per unit of it.
        result.facts["flops_ratio"] = _geomean(result.deciding["flops_ratio"].to_numpy(float))
        result.facts["per_flop"] = _pooled_row(result.context_table, metric="sec_per_flop")
    return result


# --- bidirectional is useless -----------------------------------------------------------------------------


def _bidirectional_useless(ok, cells, curves, spec: ClaimSpec, baselines, quality) -> ClaimResult:
    notes = _left_out_note(cells)
    unigram = (baselines or {}).get("unigram")
    units = []
    for context, uni, bi in direction_pairs(ok):
        learned = (_learned_share(uni, unigram), _learned_share(bi, unigram))
        for metric in ("causal_ppl",) + best_metrics(ok):
            units.append(Unit(context, "bi / uni", metric, "epochs",
                              Replicates(by_seed(uni, metric), by_seed(bi, metric)), *learned,
                              role="deciding" if metric == spec.metric else "context"))
        for direction, group in (("bi", bi), ("uni", uni)):
            units.append(Unit(context, leak_comparison(direction), "leak", "epochs",
                              Replicates(by_seed(group, "val_ppl"), by_seed(group, "causal_ppl")),
                              role="context"))
    bound = 1 - spec.margin
    evidence = _evaluate_units(units, spec, bound, "above")
    context = []
    if not evidence.empty:
        other = BEST_METRIC if spec.metric == "causal_ppl" else "causal_ppl"
        context.append((_measure(other, BI_UNI),
                        evidence[(evidence["metric"] == other) & (evidence["comparison"] == BI_UNI)]))
        for direction in ("bi", "uni"):
            leak = leak_comparison(direction)
            context.append((_measure("leak", leak),
                            evidence[(evidence["metric"] == "leak") & (evidence["comparison"] == leak)]))
    if quality is not None and not quality.empty:
        notes.append(_quality_note(ok, quality))
    result = _finish(spec, evidence, _measure(spec.metric, BI_UNI), bound, "above", context, notes)
    result.facts["leak"] = _pooled_row(result.context_table, metric="leak", comparison=leak_comparison("bi"))
    return result


def cell_quality(samples: pd.DataFrame, corpus_words: set[str] | None) -> pd.DataFrame:
    """Per cell_id: the mean of each text measure over its samples (``harness.analysis.text_measures``)."""
    if samples is None or samples.empty or "cell_id" not in samples:
        return pd.DataFrame(columns=list(text_measures.MEASURES))
    rows = []
    for row in samples.itertuples():
        prefix = row.prefix if isinstance(getattr(row, "prefix", ""), str) else ""
        text = text_measures.generated_part(getattr(row, "text", ""), prefix)
        rows.append({"cell_id": row.cell_id, **text_measures.measure(text, corpus_words)})
    return pd.DataFrame(rows).groupby("cell_id").mean()


def quality_by_direction(ok: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """Mean text measures of each direction's finished cells."""
    if quality is None or quality.empty or "cell_id" not in ok or "direction" not in ok:
        return pd.DataFrame()
    joined = ok[["cell_id", "direction"]].join(quality, on="cell_id")
    return joined.groupby("direction")[list(text_measures.MEASURES)].mean()


def _quality_note(ok: pd.DataFrame, quality: pd.DataFrame) -> Note:
    table = quality_by_direction(ok, quality)
    if table.empty:
        return Note("no_samples")
    by_direction = {d: {k: float(v) for k, v in table.loc[d].items()} for d in ("uni", "bi") if d in table.index}
    return Note("generated_text", {"by_direction": by_direction})


# --- entry point --------------------------------------------------------------------------------------


EVALUATORS = {"depth_helps": _depth_helps, "bidirectional_slow": _bidirectional_slow,
              "bidirectional_useless": _bidirectional_useless}


def learning_status(cells: pd.DataFrame, epochs: pd.DataFrame, baselines: dict | None) -> pd.DataFrame:
    """Finished cells with ``best_causal_ppl`` and ``learned`` (best held-out causal perplexity below the
    unigram baseline; NaN without baselines)."""
    ok = ok_cells(cells)
    curves = training_curves(epochs)
    ok["best_causal_ppl"] = best_causal(ok, curves) if not ok.empty else pd.Series(dtype=float)
    unigram = (baselines or {}).get("unigram")
    if unigram is not None and math.isfinite(unigram):
        ok["learned"] = ok["best_causal_ppl"] < unigram
    else:
        ok["learned"] = np.nan
    return ok


def evaluate_claims(cells: pd.DataFrame, epochs: pd.DataFrame, samples: pd.DataFrame, specs,
                    corpus_words: set[str] | None = None, baselines: dict | None = None,
                    timing_warnings: list[str] | None = None,
                    flagged_cells: dict[str, str] | None = None) -> list[ClaimResult]:
    """Evaluate each claim of ``specs`` (default: the lesson's three) on a run's tables.

    ``baselines``: the no-learning perplexities (``harness.analysis.no_learning``); without them every comparison
    counts. ``timing_warnings``: reasons the whole run's timings are unreliable; claims on timings are then
    not decided. ``flagged_cells``: cell id -> why that cell's own timings are unreliable; its timings are
    left out of timing comparisons (its perplexities still count)."""
    specs = list(specs) if specs else default_claims()
    cells = cells if cells is not None else pd.DataFrame()
    epochs = epochs if epochs is not None else pd.DataFrame()
    curves = training_curves(epochs)
    ok = learning_status(cells, epochs, baselines) if not cells.empty else pd.DataFrame()
    quality = cell_quality(samples, corpus_words)
    results = []
    flagged = {k: v for k, v in (flagged_cells or {}).items() if "cell_id" in ok and k in set(ok["cell_id"])}
    for spec in specs:
        timed = (spec.name == "bidirectional_slow" and spec.metric == "sec_per_epoch") or (
            spec.name == "depth_helps" and spec.basis == "time")
        cells_in = ok.copy()
        if timed and flagged:
            cells_in = cells_in[~cells_in["cell_id"].isin(set(flagged))]
        result = EVALUATORS[spec.name](cells_in, cells, curves, spec, baselines, quality)
        if timed and flagged:
            result.notes.append(Note("timings_left_out", {"cells": sorted(flagged), "of": len(ok),
                                                          "reasons": sorted(set(flagged.values()))}))
        if timed and timing_warnings and result.verdict != INCONCLUSIVE:
            result.notes.append(Note("would_be", {"verdict": result.verdict}))
            result.why = Why("timings_unreliable", {"warnings": list(timing_warnings), "would_be": result.verdict,
                                                    "interval": result.why})
            result.verdict = INCONCLUSIVE
        results.append(result)
    return results
