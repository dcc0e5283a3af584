"""The lesson's claims tested on a run's tables: one pooled effect per claim decides.

Each claim compares cells that differ in one key (layers, or direction) and agree in every other key
that varies in the run: one *configuration* per such pair of groups (e.g. 2-layer GRU on CPU, bi against
uni), with its seeds as replicates. Per configuration the effect is a ratio (compared / reference),
computed on the log scale over seeds, with an interval whose spread is pooled over configurations
(``harness.analysis.stats``). The configurations' effects are then combined into one pooled ratio with a 95%
interval (random effects: configurations differ in their true effects, and the interval says so), and
the claim's verdict follows from where that interval lies against the claim's threshold:

- depth_helps (deepest / shallowest perplexity, one comparison per configuration): supported when the
  whole interval lies below 1 - margin, not supported when it lies wholly above it;
- bidirectional_slow (bi / uni seconds per epoch or peak memory): supported above ``threshold``, not
  supported below it;
- bidirectional_useless (bi / uni held-out causal perplexity): supported when the whole interval lies
  above 1 - margin (bi no better), not supported when it lies below.

A cell has learned when its best held-out causal perplexity is at most 0.95 x the unigram baseline (the
perplexity of letter frequencies, ``harness.analysis.no_learning.learned_bound``): a cell on the letter-frequency
plateau sits within 0.5% of it. A perplexity comparison in which a seed of either side did not learn is shown
but not pooled: a ratio to a plateau measures the plateau, not the effect. Everything here is pure: tables in, verdicts and evidence out, as data (why a
verdict is what it is, notes, the numbers a sentence quotes); ``harness.report.wording`` says them in words.
The cells' grouping into configurations is ``harness.analysis.cell_frames``'s, the evidence rows and their
pooling ``harness.analysis.evidence``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.spec.claims import (AXIS, BEST_METRIC, CLAIM_NAMES, COST_METRICS, PPL_METRICS, SELECTED_METRIC, ClaimSpec,
                                 default_claim, default_claims, parse_claims)
from harness.analysis.cell_frames import (MACHINE, axis_context_keys, axis_pairs, best_causal, ids_by_seed,
                                          subset_mask, best_metrics, by_seed, context_keys, depth_extremes,
                                          direction_pairs, ok_cells, training_curves, value_at_time, with_machine)
from harness.analysis.evidence import NOT_COUNTED, Unit, evaluate_units, geomean, measure_key, pooled_rows
from harness.analysis.no_learning import LEARNED_SHARE_OF_UNIGRAM, learned_bound
from harness.analysis.text_error import EVALUATION_OF
from harness.analysis.sample_quality import cell_quality, quality_by_direction
from harness.analysis.stats import EMPTY_POOL, RESOLUTION, Pooled, Replicates

__all__ = ["CLAIM_NAMES", "ClaimSpec", "ClaimResult", "Note", "Why", "default_claim", "default_claims",
           "evaluate_claims", "parse_claims"]

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

# What a comparison divides (compared / reference): the ``comparison`` column of the evidence and pooled
# tables. A depth configuration names its span ("1 -> 4 layers"): its deepest against its shallowest network.
DEEPER = "deepest / shallowest"
BI_UNI = "bi / uni"


def leak_comparison(direction: str) -> str:
    """The comparison of one direction's held-out causal against teacher-forced perplexity (the leak)."""
    return f"{direction}: causal / teacher-forced"


ENOUGH_SEEDS = 3  # seeds per configuration a claim should rest on; fewer gets a note


# --- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Why:
    """Why a verdict is what it is. ``kind`` and its ``values``:

    - ``no_configurations``: nothing to compare;
    - ``one_level`` (``axis``): an axis claim's cells take one value of its axis;
    - ``levels_differ`` (``verdicts``: comparison -> verdict): an axis claim's levels, each against the
      base, reach different verdicts;
    - ``no_finished_cells``, ``one_depth`` (``directions``): depth_helps has no two depths to compare;
    - ``did_not_learn`` (``comparisons``): in every comparison a side has a seed that did not learn;
    - ``too_few_seeds``: no comparison had the seeds to count;
    - ``one_seed_one_configuration``: one configuration of single seeds, so no interval;
    - ``interval_above``, ``interval_below``, ``interval_includes`` (``low``, ``high``, ``bound`` on the
      ratio scale; ``pooled``: pooled over configurations rather than one configuration's); for
      ``interval_includes`` also ``disagree`` (the configurations' effects differ more than their seeds
      explain: more seeds would not help) and ``i2``;
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
    - ``not_counted`` (``comparisons``, ``of``, ``by_side``: outcome -> comparisons): comparisons in which a
      seed of one side or both did not learn;
    - ``generated_text`` (``by_direction``: direction -> mean text measures) or ``no_samples``;
    - ``timings_left_out`` (``cells``, ``of``, ``reasons``): cells whose own timings are unreliable;
    - ``would_be`` (``verdict``): the verdict on timings flagged as unreliable;
    - ``text_error`` (``share``): the held-out text's share of the pooled interval's variance, or
      ``no_text_error``: the cells stored no per-position losses, so the intervals leave the text out.
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
    def prediction(self) -> tuple[float, float]:
        """Where a new configuration's ratio would land (95% prediction interval); NaN when unknown."""
        p = self.pooled
        return tuple(math.exp(v) if math.isfinite(v) else math.nan for v in (p.pi_low, p.pi_high))

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
    return INCONCLUSIVE, Why("interval_includes", {**where, "disagree": pooled.configurations_disagree,
                                                   "i2": pooled.i2})


def _learned_share(cells: pd.DataFrame, gated: bool = True) -> float:
    """Share of ``cells`` that learned (``learning_status``), among those with a best held-out perplexity and
    a bound to hold it to; NaN when there are none or the comparison is not ``gated``."""
    if not gated or "learned_bound" not in cells or "best_causal_ppl" not in cells or cells.empty:
        return math.nan
    values = pd.to_numeric(cells["best_causal_ppl"], errors="coerce")
    bounds = pd.to_numeric(cells["learned_bound"], errors="coerce")
    known = np.isfinite(values) & np.isfinite(bounds)
    return float((values[known] <= bounds[known]).mean()) if known.any() else math.nan


def _seed_note(rows: pd.DataFrame) -> list[Note]:
    if rows.empty:
        return []
    most = int(rows["seeds"].max())
    return [Note("few_seeds", {"most": most, "enough": ENOUGH_SEEDS})] if most < ENOUGH_SEEDS else []


def _text_note(rows: pd.DataFrame, table: list[dict], metric: str) -> list[Note]:
    """How much of the pooled interval the held-out text's error makes, or that it is left out."""
    if metric not in EVALUATION_OF or rows.empty:
        return []
    share = table[0].get("text_share", math.nan) if table else math.nan
    if math.isfinite(share):
        return [Note("text_error", {"share": share})]
    return [Note("no_text_error")]


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
    pooled, table, widened = pooled_rows(deciding, spec.confidence, measure, bound, direction)
    if widened is not deciding:  # the configurations' own intervals with the text's error
        columns = ["text_sd", "ci_low", "ci_high", "outcome", "bearing"]
        evidence = evidence.copy()
        evidence.loc[widened.index, columns] = widened[columns]
        deciding = widened
    context_rows = []
    for context_measure, rows in context:
        if not rows.empty:
            context_rows += pooled_rows(rows, spec.confidence, context_measure)[1][:1]
    counted = int(deciding["counted"].sum())
    not_counted = int((deciding["bearing"] == NOT_COUNTED).sum())
    verdict, why = _verdict(pooled, bound, direction, len(deciding), counted, not_counted)
    notes = notes + _seed_note(deciding) + _bounded_note(deciding) + _text_note(deciding, table, spec.metric)
    if not_counted:
        sides = deciding.loc[deciding["bearing"] == NOT_COUNTED, "outcome"].value_counts()
        notes.append(Note("not_counted", {"comparisons": not_counted, "of": len(deciding),
                                          "by_side": {str(k): int(v) for k, v in sides.items()}}))
    return ClaimResult(spec, verdict, why, pooled, evidence, pd.DataFrame(table), pd.DataFrame(context_rows),
                       notes, threshold=bound)


# --- depth helps -----------------------------------------------------------------------------------------


def _depth_helps(ok, cells, curves, spec: ClaimSpec, baselines, quality, losses=None) -> ClaimResult:
    notes = _left_out_note(cells, (lambda c: c["direction"].isin(spec.directions)) if "direction" in cells else None)
    if "direction" in ok:
        ok = ok[ok["direction"].isin(spec.directions)]
    if ok.empty or "layers" not in ok or ok["layers"].nunique() < 2:
        kind = "one_depth" if not ok.empty and "layers" in ok else "no_finished_cells"
        return ClaimResult(spec, INCONCLUSIVE, Why(kind, {"directions": spec.directions}), notes=notes)
    units = []
    keys = context_keys(ok, "layers")
    metrics = (PPL_METRICS + best_metrics(ok)) if spec.basis == "epochs" else PPL_METRICS
    if spec.basis == "epochs":
        for context, step, a, b in depth_extremes(ok, keys):
            learned = (_learned_share(a), _learned_share(b))
            for metric in metrics:
                role = "deciding" if metric == spec.metric else "context"
                units.append(Unit(context, step, metric, "epochs",
                                  Replicates(by_seed(a, metric), by_seed(b, metric)), *learned, role=role,
                                  ids_a=ids_by_seed(a), ids_b=ids_by_seed(b)))
    else:
        # At equal training time the seconds count, so only cells timed on the same machine are compared.
        timed, machine = with_machine(ok)
        for context, step, a, b in depth_extremes(timed, keys + machine):
            learned = (_learned_share(a), _learned_share(b))
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
    evidence = evaluate_units(units, spec, bound, "below", losses)
    context = [(measure_key(m, DEEPER, spec.basis), evidence[(evidence["metric"] == m) & (evidence["role"] == "context")])
               for m in metrics if m != spec.metric] if not evidence.empty else []
    result = _finish(spec, evidence, measure_key(spec.metric, DEEPER, spec.basis), bound, "below", context, notes)
    # One contrast, not every measure (those are in the claim's section): training perplexity beside a
    # held-out one, held-out causal beside training.
    contrast = "train_ppl" if spec.metric != "train_ppl" else "causal_ppl"
    result.facts["contrast"] = _pooled_row(result.context_table, metric=contrast)
    if not result.deciding.empty:  # the depths compared, as most configurations span them
        result.facts["span"] = str(result.deciding["comparison"].mode().iloc[0])
    return result


# --- bidirectional is slow -------------------------------------------------------------------------------


def _bidirectional_slow(ok, cells, curves, spec: ClaimSpec, baselines, quality, losses=None) -> ClaimResult:
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
    evidence = evaluate_units(units, spec, spec.threshold, "above")
    if not evidence.empty and "flops_per_epoch" in ok:
        flops = {}
        for context, uni, bi in direction_pairs(ok, timing=True):
            fu, fb = geomean(uni["flops_per_epoch"].to_numpy(float)), geomean(bi["flops_per_epoch"].to_numpy(float))
            flops[tuple(context.values())] = fb / fu if fu > 0 else math.nan
        compared = context_keys(ok, "direction") + [MACHINE]
        keys = [k for k in evidence.columns if k in compared]
        evidence["flops_ratio"] = [flops.get(tuple(row[k] for k in keys), math.nan) for _, row in evidence.iterrows()]
    context = [(measure_key(m, BI_UNI), evidence[(evidence["metric"] == m) & (evidence["role"] == "context")])
               for m in ("peak_mem_bytes", "sec_per_epoch", "sec_per_flop") if m != spec.metric] \
        if not evidence.empty else []
    result = _finish(spec, evidence, measure_key(spec.metric, BI_UNI), spec.threshold, "above", context, notes)
    if spec.metric == "sec_per_epoch" and "flops_ratio" in result.evidence:
        # Beside the slowdown: how much more arithmetic bi does, and the slowdown per unit of it.
        result.facts["flops_ratio"] = geomean(result.deciding["flops_ratio"].to_numpy(float))
        result.facts["per_flop"] = _pooled_row(result.context_table, metric="sec_per_flop")
    return result


# --- bidirectional is useless -----------------------------------------------------------------------------


def _bidirectional_useless(ok, cells, curves, spec: ClaimSpec, baselines, quality, losses=None) -> ClaimResult:
    notes = _left_out_note(cells)
    units = []
    for context, uni, bi in direction_pairs(ok):
        learned = (_learned_share(uni), _learned_share(bi))
        for metric in ("causal_ppl",) + best_metrics(ok):
            units.append(Unit(context, "bi / uni", metric, "epochs",
                              Replicates(by_seed(uni, metric), by_seed(bi, metric)), *learned,
                              role="deciding" if metric == spec.metric else "context",
                              ids_a=ids_by_seed(uni), ids_b=ids_by_seed(bi)))
        for direction, group in (("bi", bi), ("uni", uni)):
            units.append(Unit(context, leak_comparison(direction), "leak", "epochs",
                              Replicates(by_seed(group, "val_ppl"), by_seed(group, "causal_ppl")),
                              role="context"))
    bound = 1 - spec.margin
    evidence = evaluate_units(units, spec, bound, "above", losses)
    context = []
    if not evidence.empty:
        other = BEST_METRIC if spec.metric == "causal_ppl" else "causal_ppl"
        context.append((measure_key(other, BI_UNI),
                        evidence[(evidence["metric"] == other) & (evidence["comparison"] == BI_UNI)]))
        for direction in ("bi", "uni"):
            leak = leak_comparison(direction)
            context.append((measure_key("leak", leak),
                            evidence[(evidence["metric"] == "leak") & (evidence["comparison"] == leak)]))
    if quality is not None and not quality.empty:
        notes.append(_quality_note(ok, quality))
    result = _finish(spec, evidence, measure_key(spec.metric, BI_UNI), bound, "above", context, notes)
    result.facts["leak"] = _pooled_row(result.context_table, metric="leak", comparison=leak_comparison("bi"))
    return result


def _quality_note(ok: pd.DataFrame, quality: pd.DataFrame) -> Note:
    table = quality_by_direction(ok, quality)
    if table.empty:
        return Note("no_samples")
    by_direction = {d: {k: float(v) for k, v in table.loc[d].items()} for d in ("uni", "bi") if d in table.index}
    return Note("generated_text", {"by_direction": by_direction})


# --- a claim on any axis ---------------------------------------------------------------------------------


def in_subset(cells: pd.DataFrame, where: tuple) -> pd.DataFrame:
    """The cells whose keys each hold one of the given values (``where``: (key, values) pairs); a key the
    table lacks matches no cell unless a value is None (a key not recorded is at its default)."""
    if cells.empty or not where:
        return cells
    return cells[subset_mask(cells, where)]


def _axis_claim(ok, cells, curves, spec: ClaimSpec, baselines, quality, losses=None) -> ClaimResult:
    """A claim on ``spec.axis``: per configuration (every other key that varies, but the keys that move with
    the axis), each level against ``spec.base``, or the last level against the first; a perplexity is held
    to the learned gate as the lesson's claims are. Several levels against one base share its cells, so each
    level is pooled on its own, and the claim's verdict is theirs when they agree."""
    ok, cells = in_subset(ok, spec.where), in_subset(cells, spec.where)
    notes = _left_out_note(cells)
    bound, direction = spec.bound, ("below" if spec.expect == "lower" else "above")
    if ok.empty or spec.axis not in ok or ok[spec.axis].astype(str).nunique() < 2:
        return ClaimResult(spec, INCONCLUSIVE, Why("one_level", {"axis": spec.axis}), notes=notes, threshold=bound)
    keys, moving = axis_context_keys(ok, spec.axis)
    gated = spec.metric in PPL_METRICS + (BEST_METRIC, SELECTED_METRIC)
    units = []
    for context, comparison, a, b in axis_pairs(ok, keys, spec.axis, spec.base):
        learned = (_learned_share(a, gated), _learned_share(b, gated))
        units.append(Unit(context, comparison, spec.metric, "epochs",
                          Replicates(by_seed(a, spec.metric), by_seed(b, spec.metric)), *learned,
                          ids_a=ids_by_seed(a), ids_b=ids_by_seed(b)))
    evidence = evaluate_units(units, spec, bound, direction, losses)
    if evidence.empty:
        return ClaimResult(spec, INCONCLUSIVE, Why("no_configurations"), notes=notes, threshold=bound)
    comparisons = list(dict.fromkeys(evidence["comparison"]))
    parts = {c: _finish(spec, evidence[evidence["comparison"] == c], measure_key(spec.metric, c), bound, direction,
                        [], list(notes)) for c in comparisons}
    result = parts[comparisons[-1]]  # the last level: the farthest from the base, in the axis's order
    result.evidence = evidence
    if len(parts) > 1:
        result.pooled_table = pd.concat([r.pooled_table for r in parts.values()], ignore_index=True)
        verdicts = {c: r.verdict for c, r in parts.items()}
        if len(set(verdicts.values())) > 1:
            result.verdict, result.why = INCONCLUSIVE, Why("levels_differ", {"verdicts": verdicts})
        result.facts["levels"] = {c: {"verdict": r.verdict, "ratio": r.ratio} for c, r in parts.items()}
    result.facts["moves_with"] = moving
    result.facts["levels_table"] = _level_means(ok, keys, spec)
    return result


def _level_means(ok: pd.DataFrame, keys: list[str], spec: ClaimSpec) -> pd.DataFrame:
    """The per-level curve behind the verdict: the metric's geometric mean over seeds per configuration and
    level of the axis."""
    if spec.metric not in ok:
        return pd.DataFrame()
    values = pd.to_numeric(ok[spec.metric], errors="coerce")
    frame = ok.assign(_value=np.log(values.where(values > 0)))
    table = frame.groupby(keys + [spec.axis], dropna=False)["_value"].agg(["mean", "count"]).reset_index()
    table[spec.metric] = np.exp(table.pop("mean"))
    return table.rename(columns={"count": "seeds"})


# --- entry point --------------------------------------------------------------------------------------


EVALUATORS = {"depth_helps": _depth_helps, "bidirectional_slow": _bidirectional_slow,
              "bidirectional_useless": _bidirectional_useless, AXIS: _axis_claim}


def learning_status(cells: pd.DataFrame, epochs: pd.DataFrame, baselines: dict | None) -> pd.DataFrame:
    """Finished cells with ``best_causal_ppl``, ``learned_bound`` (0.95 x the unigram baseline of the cell's
    own training text: its ``unigram_baseline`` column, ``harness.analysis.run_text.cell_baselines``, else
    that of ``baselines``) and ``learned`` (best held-out causal perplexity at most the bound; NaN without
    one)."""
    ok = ok_cells(cells)
    curves = training_curves(epochs)
    ok["best_causal_ppl"] = best_causal(ok, curves) if not ok.empty else pd.Series(dtype=float)
    if "unigram_baseline" in ok:
        ok["learned_bound"] = LEARNED_SHARE_OF_UNIGRAM * pd.to_numeric(ok["unigram_baseline"], errors="coerce")
    else:
        bound = learned_bound(baselines)
        ok["learned_bound"] = bound if bound is not None else np.nan
    # A cell with no held-out reading has not learned; one with no bound to hold it to is neither.
    known = ok["learned_bound"].notna()
    learned = ok["best_causal_ppl"] <= ok["learned_bound"]
    ok["learned"] = learned if known.all() else learned.astype(object).where(known, np.nan)
    return ok


def evaluate_claims(cells: pd.DataFrame, epochs: pd.DataFrame, samples: pd.DataFrame, specs,
                    corpus_words: set[str] | None = None, baselines: dict | None = None,
                    timing_warnings: list[str] | None = None,
                    flagged_cells: dict[str, str] | None = None, losses: dict | None = None,
                    on_result=None) -> list[ClaimResult]:
    """Evaluate each claim of ``specs`` (default: the lesson's three) on a run's tables.

    ``baselines``: the no-learning perplexities (``harness.analysis.no_learning``); without them every comparison
    counts. ``timing_warnings``: reasons the whole run's timings are unreliable; claims on timings are then
    not decided. ``flagged_cells``: cell id -> why that cell's own timings are unreliable; its timings are
    left out of timing comparisons (its perplexities still count). ``losses``: cell id -> its stored
    per-position held-out losses (``RunDir.read_losses``); with them the held-out text's own error is part
    of every perplexity interval (``harness.analysis.text_error``). ``on_result(index, result)``: called as
    each claim is decided (the report draws its figure meanwhile)."""
    specs = default_claims() if specs is None else list(specs)
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
        result = EVALUATORS[spec.name](cells_in, cells, curves, spec, baselines, quality, losses)
        if timed and flagged:
            result.notes.append(Note("timings_left_out", {"cells": sorted(flagged), "of": len(ok),
                                                          "reasons": sorted(set(flagged.values()))}))
        if timed and timing_warnings:
            # Unreliable timings are the reason, also where the interval alone would leave the claim open.
            if result.verdict != INCONCLUSIVE:
                result.notes.append(Note("would_be", {"verdict": result.verdict}))
            result.why = Why("timings_unreliable", {"warnings": list(timing_warnings), "would_be": result.verdict,
                                                    "interval": result.why})
            result.verdict = INCONCLUSIVE
        results.append(result)
        if on_result is not None:
            on_result(len(results) - 1, result)
    return results
