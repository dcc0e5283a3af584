"""What a claim decides on: per configuration, the effect of one measure over its seeds (compared /
reference, on the log scale) with its interval and how that interval bears on the claim, one row of the
evidence table each; then the counted rows pooled over configurations, overall and per cell type (the
pooled table). The verdict itself is ``harness.analysis.claims``'s."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from harness.spec.claims import ClaimSpec
from harness.analysis.text_error import EVALUATION_OF, combined, configuration_blocks, text_error
from harness.analysis.stats import (EMPTY_POOL, Effect, Pooled, Replicates, configuration_effect, pool, pooled_spread,
                                    sign_test, t_quantile)

# How one configuration's interval bears on the claim: the ``bearing`` column of the evidence table.
SUPPORTS, CONTRADICTS, UNCLEAR, INSUFFICIENT, NOT_COUNTED = (
    "supports", "contradicts", "unclear", "no interval", "not counted")


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
    ids_a: dict = field(default_factory=dict)  # seed -> cell id, to find the cells' per-position losses
    ids_b: dict = field(default_factory=dict)

    @property
    def counts(self) -> bool:
        # A side with a seed on the letter-frequency plateau: the ratio would measure the plateau.
        return not (self.learned_a < 1 or self.learned_b < 1)

    @property
    def unlearned(self) -> str:
        """Which sides have a seed that did not learn: "", "neither", "reference" or "compared"."""
        a, b = self.learned_a < 1, self.learned_b < 1
        return "neither" if a and b else "reference" if a else "compared" if b else ""


def _outcome(effect: Effect, lower_bound: float, direction: str, unlearned: str) -> tuple[str, str]:
    """How one configuration's interval (ratio scale) lies against ``lower_bound``: ``direction`` "above"
    when the claim wants the ratio above it, "below" when below. (outcome, bearing); the outcome is one of
    above, below, unclear, single_seed, no_values, neither_learned, reference_not_learned,
    compared_not_learned (and too_few_seeds, set by the caller)."""
    if unlearned:
        return ("neither_learned" if unlearned == "neither" else f"{unlearned}_not_learned"), NOT_COUNTED
    if not effect.has_interval:
        return ("single_seed" if effect.n else "no_values"), INSUFFICIENT
    low, high = math.exp(effect.low), math.exp(effect.high)
    if direction == "above":
        return (("above", SUPPORTS) if low > lower_bound else ("below", CONTRADICTS) if high < lower_bound
                else ("unclear", UNCLEAR))
    return (("below", SUPPORTS) if high < lower_bound else ("above", CONTRADICTS) if low > lower_bound
            else ("unclear", UNCLEAR))


def _text_blocks(unit: Unit, losses: dict | None):
    """The unit's per-block mean log ratio from its cells' stored losses (``harness.analysis.text_error``),
    or None where the metric has no stored evaluation or a cell has none."""
    evaluation = EVALUATION_OF.get(unit.metric)
    if not losses or evaluation is None or not unit.ids_a or not unit.ids_b:
        return None
    sides = []
    for ids in (unit.ids_a, unit.ids_b):
        side = {}
        for seed, cell_id in ids.items():
            item = (losses.get(cell_id) or {}).get(evaluation)
            if item is None:
                return None
            side[seed] = item.nats
        sides.append(side)
    return configuration_blocks(*sides)


def evaluate_units(units: list[Unit], spec: ClaimSpec, kind_bound: float, direction: str,
                   losses: dict | None = None) -> pd.DataFrame:
    """Evidence rows for ``units``: each measure's spread is pooled over its own configurations. With
    ``losses`` (cell id -> its stored per-position losses), each row also carries its text blocks, from
    which ``add_text_error`` adds the held-out text's error."""
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
            outcome, bearing = _outcome(effect, kind_bound, direction, unit.unlearned)
            if unit.counts and not enough:
                outcome, bearing = "too_few_seeds", INSUFFICIENT
            a = np.array(list(unit.replicates.a.values()), dtype=float)
            b = np.array(list(unit.replicates.b.values()), dtype=float)
            rows.append({
                **unit.context, "comparison": unit.comparison, "metric": unit.metric, "basis": unit.basis,
                "role": unit.role, "seeds": effect.n, "pairing": effect.pairing,
                "reference": geomean(a), "compared": geomean(b),
                "ratio": math.exp(effect.estimate) if math.isfinite(effect.estimate) else math.nan,
                "ci_low": math.exp(effect.low) if math.isfinite(effect.low) else math.nan,
                "ci_high": math.exp(effect.high) if math.isfinite(effect.high) else math.nan,
                "log_effect": effect.estimate, "log_se": effect.se, "bounded": effect.bounded,
                "learned_reference": unit.learned_a, "learned_compared": unit.learned_b,
                "counted": counts and math.isfinite(effect.estimate), "outcome": outcome, "bearing": bearing,
                "dof": effect.dof, "text_blocks": _text_blocks(unit, losses), "text_sd": math.nan,
            })
    return pd.DataFrame(rows)


def add_text_error(rows: pd.DataFrame, pooled: Pooled, confidence: float, bound: float,
                   direction: str) -> tuple[pd.DataFrame, Pooled, float]:
    """The counted ``rows`` and their ``pooled`` effect with the held-out text's error added where every
    counted row has its text blocks: each configuration's interval, and the pooled interval and prediction
    interval (the text's error is common to all configurations, so it is added once, after pooling, not
    averaged away). Returns the rows, the pooled effect and the text's share of the pooled variance (NaN
    when the text's error is unknown)."""
    counted = rows[rows["counted"]] if not rows.empty else rows
    if counted.empty or "text_blocks" not in counted or counted["text_blocks"].isna().any() or pooled.k == 0:
        return rows, pooled, math.nan
    tau2 = pooled.tau**2 if math.isfinite(pooled.tau) else 0.0
    weights = [1 / (se**2 + tau2) if math.isfinite(se) and se > 0 else 1.0 for se in counted["log_se"]]
    error = text_error(list(counted["text_blocks"]), weights)
    if error is None:
        return rows, pooled, math.nan
    rows = rows.copy()
    for index, text_sd in zip(counted.index, error.per_configuration):
        row = rows.loc[index]
        se = combined(row["log_se"], text_sd)
        dof = row["dof"] if row["dof"] and math.isfinite(row["dof"]) else math.inf
        half = t_quantile(0.5 + confidence / 2, dof) * se
        rows.loc[index, ["text_sd", "ci_low", "ci_high"]] = [text_sd, math.exp(row["log_effect"] - half),
                                                              math.exp(row["log_effect"] + half)]
        widened = Effect(row["log_effect"], se, dof, row["log_effect"] - half, row["log_effect"] + half, 1, "")
        rows.loc[index, ["outcome", "bearing"]] = list(_outcome(widened, bound, direction, ""))
    k = pooled.k
    t = t_quantile(0.5 + confidence / 2, max(k - 1, 1))
    se_pooled = (pooled.high - pooled.low) / 2 / t if pooled.has_interval else math.nan
    total = combined(se_pooled, error.pooled)
    half = t * total
    pi_low = pi_high = math.nan
    if k >= 3:
        spread = t_quantile(0.5 + confidence / 2, k - 2) * math.sqrt(tau2 + total**2)
        pi_low, pi_high = pooled.estimate - spread, pooled.estimate + spread
    share = error.pooled**2 / total**2 if total > 0 else math.nan
    widened = replace(pooled, low=pooled.estimate - half, high=pooled.estimate + half, pi_low=pi_low,
                      pi_high=pi_high, method=pooled.method + "; held-out text resampled in blocks")
    return rows, widened, share



def geomean(values: np.ndarray) -> float:
    """The geometric mean of the finite, positive ``values`` (NaN when there are none)."""
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.exp(np.log(values).mean())) if len(values) else math.nan


def _effects(rows: pd.DataFrame) -> list[Effect]:
    if rows.empty:
        return []
    # Columns read once (itertuples over a wide table cost more than the pooling itself).
    columns = {c: rows[c].tolist() for c in ("counted", "log_effect", "log_se", "ci_low", "ci_high", "seeds", "pairing")}
    return [Effect(effect, se, 0, math.log(low) if low > 0 else math.nan, math.log(high) if high > 0 else math.nan,
                   int(seeds), pairing)
            for counted, effect, se, low, high, seeds, pairing in zip(*columns.values()) if counted]


def pooled_rows(rows: pd.DataFrame, confidence: float, measure: dict, bound: float | None = None,
                direction: str = "") -> tuple[Pooled, list[dict], pd.DataFrame]:
    """The pooled effect of the counted ``rows``, overall and per cell type: (overall, table rows). Each
    row starts with ``measure``: the metric, comparison and basis pooled. With ``bound`` and ``direction``
    (the deciding measure), the held-out text's error is added where the rows carry it
    (``add_text_error``), and each row says its share of the variance (``text_share``). Also returns
    ``rows`` with the text's error in each configuration's interval."""

    def pooled(group):
        result = pool(_effects(group), confidence) if not group.empty else EMPTY_POOL
        if bound is None:
            return group, result, math.nan
        return add_text_error(group, result, confidence, bound, direction)

    widened, overall, share = pooled(rows)
    table = [{**_pool_row(measure, "all", rows, overall), "text_share": share}]
    if "cell" in rows and rows["cell"].nunique() > 1:
        for cell, group in rows.groupby("cell", sort=True):
            _, result, cell_share = pooled(group)
            table.append({**_pool_row(measure, str(cell), group, result), "text_share": cell_share})
    return overall, table, widened


def measure_key(metric: str, comparison: str, basis: str = "epochs") -> dict:
    """The columns that name a measure in a pooled table."""
    return {"metric": metric, "comparison": comparison, "basis": basis}


def _pool_row(measure: dict, cells: str, rows: pd.DataFrame, pooled: Pooled) -> dict:
    estimates = rows.loc[rows["counted"], "log_effect"] if not rows.empty else pd.Series(dtype=float)
    return {**measure, "cells": cells, "pooled_configurations": pooled.k, "configurations": len(rows),
            "ratio": math.exp(pooled.estimate) if math.isfinite(pooled.estimate) else math.nan,
            "ci_low": math.exp(pooled.low) if math.isfinite(pooled.low) else math.nan,
            "ci_high": math.exp(pooled.high) if math.isfinite(pooled.high) else math.nan,
            "pi_low": math.exp(pooled.pi_low) if math.isfinite(pooled.pi_low) else math.nan,
            "pi_high": math.exp(pooled.pi_high) if math.isfinite(pooled.pi_high) else math.nan,
            "i2": pooled.i2, "tau_factor": math.exp(pooled.tau) if math.isfinite(pooled.tau) else math.nan,
            "sign_p": sign_test(estimates), "method": pooled.method}
