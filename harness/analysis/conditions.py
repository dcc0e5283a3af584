"""The claims again under each condition a suite declares: a subset of its cells (``where``), and where
asked, per configuration only the cells of the value of a setting that did best on the selection text
(``choose``, e.g. the learning rate per depth). Pure: tables in, data out; the report says it in words.

Choosing a setting on the text that then reports the result would flatter it, so the choice is made on the
selection text (``selected_select_ppl``: each cell's lowest selection perplexity, geometric mean over its
seeds) and the claims are decided on the held-out text. A run without selection text is chosen on the
best held-out perplexity instead, and ``chosen_on`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from harness.spec.claims import AXIS, BEST_METRIC, SELECTED_METRIC, ConditionSpec
from harness.analysis.cell_frames import (axis_context_keys, axis_pairs, configuration_keys, context_keys,
                                          depth_extremes, direction_pairs, subset_mask)
from harness.analysis.claims import ClaimResult, evaluate_claims, in_subset, learning_status

SELECTION_SCORE = "selected_select_ppl"
CHOSEN = "chosen"  # the value a chosen key takes in the condition's cells: configurations do not split on it


@dataclass
class ConditionResult:
    spec: ConditionSpec
    cells: int  # cells of the condition, any status
    results: list[ClaimResult]
    # choose: one row per configuration: its keys, the chosen value, each value's score and its seeds
    chosen: pd.DataFrame = field(default_factory=pd.DataFrame)
    chosen_on: str = ""  # "selection text" or "held-out text" (choose only)


def in_condition(cells: pd.DataFrame, spec: ConditionSpec) -> pd.Series:
    """Which of ``cells`` belong to the condition's subset (before any choice)."""
    return subset_mask(cells, spec.where)


def _geomean(values) -> float:
    values = np.asarray([v for v in values if math.isfinite(v) and v > 0], dtype=float)
    return float(np.exp(np.log(values).mean())) if len(values) else math.nan


def choose(ok: pd.DataFrame, key: str) -> tuple[pd.DataFrame, str]:
    """Per configuration of ``ok`` (finished cells; every varying key but ``key`` and the seed), the value
    of ``key`` with the lowest score: the geometric mean over seeds of the selection perplexity, or of the
    best held-out one when the cells have no selection text. Returns the table and what it was chosen on."""
    score, on = SELECTION_SCORE, "selection text"
    if score not in ok or not pd.to_numeric(ok[score], errors="coerce").notna().any():
        score, on = BEST_METRIC, "held-out text"
    keys = [k for k in configuration_keys(ok) if k != key]
    rows = []
    for values, group in (ok.groupby(keys, dropna=False, sort=True) if keys else [((), ok)]):
        values = values if isinstance(values, tuple) else (values,)
        scores = {v: _geomean(pd.to_numeric(g[score], errors="coerce")) for v, g in group.groupby(key, sort=True)}
        seeds = {v: int(g["seed"].nunique()) for v, g in group.groupby(key, sort=True)}
        finite = {v: s for v, s in scores.items() if math.isfinite(s)}
        if not finite:
            continue
        best = min(finite, key=finite.get)
        rows.append({**dict(zip(keys, values)), CHOSEN: best, "scores": scores, "seeds": seeds})
    return pd.DataFrame(rows), on


def with_defaults(cells: pd.DataFrame, keys) -> pd.DataFrame:
    """``cells`` with each of ``keys`` that a cell does not record (stored before the key existed) at its
    default value, as the cell was trained."""
    from harness.spec.config import CellConfig

    defaults = CellConfig.model_construct().model_dump(mode="json")
    cells = cells.copy()
    for key in keys:
        if key in defaults and not isinstance(defaults[key], list):
            cells[key] = cells[key].where(cells[key].notna(), defaults[key]) if key in cells else defaults[key]
    return cells


def condition_cells(cells: pd.DataFrame, epochs: pd.DataFrame, spec: ConditionSpec, baselines: dict | None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The condition's cells (with a chosen key set to ``CHOSEN``), the choice table and what it was made on."""
    cells = with_defaults(cells, [k for k, _ in spec.where] + ([spec.choose] if spec.choose else []))
    subset = cells[in_condition(cells, spec)].copy()
    if not spec.choose or subset.empty or spec.choose not in subset:
        return subset, pd.DataFrame(), ""
    ok = learning_status(subset, epochs, baselines)
    table, on = choose(ok, spec.choose)
    if table.empty:
        return subset.iloc[0:0], table, on
    keys = [k for k in table.columns if k not in (CHOSEN, "scores", "seeds")]
    wanted = {tuple(str(v) for v in row[keys]) + (str(row[CHOSEN]),) for _, row in table.iterrows()}
    mine = subset[keys + [spec.choose]].astype(str).apply(tuple, axis=1)
    kept = subset[mine.isin(wanted)].copy()
    kept[spec.choose] = CHOSEN
    return kept, table, on


def can_compare(planned: pd.DataFrame, spec: ConditionSpec, claim) -> bool:
    """Whether the condition's share of ``planned`` (cells with their configuration, trained or not) holds
    both sides of ``claim`` in one configuration, with the claim's ``min_seeds`` on each side, paired as the
    claim pairs them. When it does not, training the rest of the run will not give the condition anything to
    compare. A claim this does not know is assumed comparable."""
    if claim.name not in ("depth_helps", "bidirectional_slow", "bidirectional_useless", AXIS):
        return True
    cells = with_defaults(planned, [k for k, _ in spec.where] + ([spec.choose] if spec.choose else []))
    subset = cells[in_condition(cells, spec)].copy() if not cells.empty else cells
    if subset.empty or "seed" not in subset:
        return False
    if spec.choose and spec.choose in subset:
        subset[spec.choose] = CHOSEN  # one value per configuration is kept: it does not split configurations
    if claim.name == AXIS:
        (claim,) = yielding_to_choice([claim], spec.choose)
        subset = in_subset(subset, claim.where)
        if claim.axis not in subset:
            return False
        keys, _ = axis_context_keys(subset, claim.axis)
        sides = [(a, b) for _, _, a, b in axis_pairs(subset, keys, claim.axis, claim.base)]
    elif claim.name == "depth_helps":
        if "direction" in subset:
            subset = subset[subset["direction"].isin(claim.directions)]
        sides = [(a, b) for _, _, a, b in depth_extremes(subset, context_keys(subset, "layers"))] \
            if "layers" in subset else []
    else:
        sides = [(uni, bi) for _, uni, bi in direction_pairs(subset)]
    return any(min(a["seed"].nunique(), b["seed"].nunique()) >= claim.min_seeds for a, b in sides)


def yielding_to_choice(claims, key: str | None) -> list:
    """``claims`` with ``key`` left out of their ``where``: under a condition that chooses ``key`` per
    configuration, the chosen value takes the place of a value the claim fixes (a claim at lr 0.003 is asked,
    under "lr chosen per configuration", at each configuration's chosen rate)."""
    if not key:
        return list(claims)
    return [replace(c, where=tuple((k, v) for k, v in c.where if k != key))
            if any(k == key for k, _ in getattr(c, "where", ())) else c for c in claims]


def evaluate_conditions(cells: pd.DataFrame, epochs: pd.DataFrame, samples: pd.DataFrame, specs,
                        conditions: list[ConditionSpec], **claim_options) -> list[ConditionResult]:
    """Every claim of ``specs`` under each condition (``claim_options``: as ``evaluate_claims`` takes them)."""
    out = []
    epochs = epochs if epochs is not None else pd.DataFrame()
    samples = samples if samples is not None else pd.DataFrame()
    for spec in conditions:
        subset, chosen, on = condition_cells(cells, epochs, spec, claim_options.get("baselines"))
        ids = set(subset["cell_id"]) if "cell_id" in subset else set()
        sub_epochs = epochs[epochs["cell_id"].isin(ids)] if "cell_id" in epochs else epochs
        sub_samples = samples[samples["cell_id"].isin(ids)] if "cell_id" in samples else samples
        if spec.choose and "cell_id" in sub_epochs and spec.choose in sub_epochs:
            sub_epochs = sub_epochs.assign(**{spec.choose: CHOSEN})
        results = evaluate_claims(subset, sub_epochs, sub_samples, yielding_to_choice(specs, spec.choose),
                                  **claim_options)
        out.append(ConditionResult(spec, len(subset), results, chosen, on))
    return out


def depth_profile(cells: pd.DataFrame, epochs: pd.DataFrame, conditions: list[ConditionSpec],
                  baselines: dict | None, direction: str = "uni") -> pd.DataFrame:
    """Per condition, cell type and depth: the geometric mean over seeds (and its range) of the best
    held-out causal perplexity, at the epoch chosen on selection text where there is one. For the figure."""
    rows = []
    for spec in conditions:
        subset, _, _ = condition_cells(cells, epochs, spec, baselines)
        ok = learning_status(subset, epochs, baselines) if not subset.empty else subset
        if ok.empty:
            continue
        ok = ok[ok["direction"] == direction] if "direction" in ok else ok
        metric = SELECTED_METRIC if SELECTED_METRIC in ok and ok[SELECTED_METRIC].notna().any() else BEST_METRIC
        for (cell, layers), group in ok.groupby(["cell", "layers"], sort=True):
            values = pd.to_numeric(group[metric], errors="coerce").dropna()
            if values.empty:
                continue
            # The best n-gram model of the text these cells trained on (run_text.cell_baselines), for its line.
            ngram = pd.to_numeric(group.get("ngram_baseline", pd.Series(dtype=float)), errors="coerce").dropna()
            rows.append({"condition": spec.name, "cell": cell, "layers": int(layers), "metric": metric,
                         "ppl": _geomean(values), "low": float(values.min()), "high": float(values.max()),
                         "seeds": int(group.loc[values.index, "seed"].nunique()),
                         "ngram": float(ngram.median()) if len(ngram) else math.nan})
    return pd.DataFrame(rows)
