"""The report's section on the suite's conditions: every claim again on each declared subset of the cells
(its verdict against the first condition's), what a choose condition chose per configuration, and the
numbers behind the depth figure."""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis.conditions import can_compare
from harness.errors import HarnessError
from harness.report import wording as claim_wording
from harness.report.claim_sections import repeated_claims
from harness.report.captions import CELL_MARKERS, FIGURES
from harness.report.numbers import fmt
from harness.results.tables import config_row
from harness.spec.claims import BEST_METRIC, SELECTED_METRIC, parse_conditions
from harness.spec.suite import field_for_axis, expand, recorded_suite


def suite_conditions(run: dict, where: str) -> list:
    """The conditions the suite declared (``harness.analysis.conditions``), none when it declared none."""
    raw = (run.get("suite") or {}).get("conditions") if isinstance(run.get("suite"), dict) else None
    return parse_conditions(raw, where, field_for_axis) if raw else []


def condition_description(spec) -> str:
    """A condition's subset of the cells in words, and what it chooses per configuration."""
    where = ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in spec.where) or "all cells"
    return where + (f"; {spec.choose} chosen per configuration" if spec.choose else "")


def planned_frame(run: dict) -> pd.DataFrame | None:
    """The run's planned cells (run.json's ``cells``) with their configuration as cells.csv has it, from
    the suite it recorded; None when that suite no longer expands to every one of them (an older or damaged
    run.json, or cell ids that changed since)."""
    try:
        grid = expand(recorded_suite(run.get("suite") or {}, "run.json"))
    except (HarnessError, AttributeError, TypeError, ValueError):
        return None
    wanted = {str(c) for c in run.get("cells") or []}
    rows = [config_row(c.cell_id, c.config.model_dump(mode="json")) for c in grid if c.cell_id in wanted]
    return pd.DataFrame(rows) if rows and len(rows) == len(wanted) else None


def compared(result) -> int:
    """How many configurations a claim's pooled ratio rests on (0: nothing compared)."""
    return result.pooled.k if result.pooled is not None else 0


def conditions_table(conditions: list, claim_index: int, complete: bool = True,
                     planned: pd.DataFrame | None = None) -> pd.DataFrame:
    """One claim under each condition: its verdict and pooled effect, and whether the verdict is the
    first condition's (the reference). ``complete``: the run has trained every planned cell. A condition with
    nothing to compare in an unfinished run may still get something ("yet") unless ``planned`` (the run's
    planned cells) shows the suite plans no cells for one side of the claim there."""
    claim = conditions[0].results[claim_index].spec if conditions else None
    # The reference's side once for all conditions: when it can never compare, nothing is still to come.
    reference_can = planned is not None and claim is not None and can_compare(planned, conditions[0].spec, claim)

    def pending(condition) -> bool:
        return not complete and (planned is None or (reference_can and can_compare(planned, condition.spec, claim)))

    rows = []
    first = conditions[0].results[claim_index] if conditions else None
    for i, condition in enumerate(conditions):
        result = condition.results[claim_index]
        if i == 0:
            versus = "reference"
        elif not compared(result) or not compared(first):
            # No configuration on one side: no verdict to hold or change.
            versus = "nothing to compare" + (" yet" if pending(condition) else "")
        else:
            versus = "same" if result.verdict == first.verdict else f"changes ({first.verdict} -> {result.verdict})"
        rows.append({"condition": condition.spec.name, "cells": condition.cells, "configurations": compared(result),
                     "verdict": result.verdict, "pooled effect [95% CI]": claim_wording.effect_text(result),
                     "a new configuration [95% PI]": claim_wording.prediction_text(result),
                     "verdict vs the first": versus})
    return pd.DataFrame(rows)


def chosen_table(condition) -> pd.DataFrame:
    """A choose condition's choice per configuration: each value's score (geometric mean over seeds)."""
    table = condition.chosen
    if table.empty:
        return table
    keys = [k for k in table.columns if k not in ("chosen", "scores", "seeds")]
    key = condition.spec.choose
    values = sorted({v for scores in table["scores"] for v in scores}, key=lambda v: (str(type(v)), v))
    rows = []
    for _, row in table.iterrows():
        out = {k: row[k] for k in keys}
        out[f"chosen {key}"] = row["chosen"]
        for v in values:
            score = row["scores"].get(v, math.nan)
            out[f"{key} {v}"] = f"{fmt(score)} ({row['seeds'].get(v, 0)})" if math.isfinite(score) else "-"
        rows.append(out)
    return pd.DataFrame(rows)


def depth_profile_table(profile: pd.DataFrame) -> pd.DataFrame:
    """The condition figure's numbers: per condition and cell type (in the figure's order), each depth's
    geometric mean over seeds with the lowest and highest seed and the number of seeds, and the best n-gram
    model of the cells' training text where it is known."""
    if profile is None or profile.empty:
        return pd.DataFrame()
    depths = sorted(int(n) for n in profile["layers"].unique())
    conditions = list(dict.fromkeys(profile["condition"]))  # in the suite's order
    cell_order = list(CELL_MARKERS)

    def order(item):
        (condition, cell), _ = item
        return conditions.index(condition), cell_order.index(cell) if cell in cell_order else len(cell_order), str(cell)

    def ppl(value) -> str:  # two decimals: a character model's perplexity lies between 1 and the alphabet's size
        return f"{value:.2f}" if math.isfinite(value) else fmt(value)

    def shown(point) -> str:
        seeds = int(point["seeds"])
        low, high = ppl(point["low"]), ppl(point["high"])
        return f"{ppl(point['ppl'])} ({f'{low}-{high}, ' if low != high else ''}{seeds} seed{'s' if seeds != 1 else ''})"

    rows = []
    for (condition, cell), group in sorted(profile.groupby(["condition", "cell"], sort=False), key=order):
        row = {"condition": condition, "cell": cell}
        for n in depths:
            point = group[group["layers"] == n]
            row[f"{n} layer{'s' if n != 1 else ''}"] = shown(point.iloc[0]) if not point.empty else "-"
        ngram = pd.to_numeric(group.get("ngram", pd.Series(dtype=float)), errors="coerce").dropna()
        if len(ngram):  # the networks beside the best n-gram model of the text they trained on
            row["best n-gram of its text"] = ppl(float(ngram.median()))
        rows.append(row)
    return pd.DataFrame(rows)


def condition_blocks(conditions: list, figures: dict, complete: bool = True,
                     planned: pd.DataFrame | None = None, profile: pd.DataFrame | None = None) -> list[tuple]:
    """The section "Under each condition" (nothing when the suite declares no conditions). ``complete``,
    ``planned``: as for ``conditions_table``; ``profile``: the depth figure's points, whose numbers are
    folded under it."""
    if not conditions:
        return []
    blocks: list[tuple] = [("h2", "Under each condition")]
    blocks.append(("p", "Every claim again on the subsets of the cells the suite declares as conditions; the first "
                        "condition is the reference, and each other one says whether its verdict is the same. A "
                        "chosen setting is chosen per configuration on the selection text (never on the held-out "
                        "text that decides the claims) unless the cells had none; a claim that fixes that setting "
                        "is asked there at the chosen value."))
    blocks.append(("table", pd.DataFrame([{"condition": c.spec.name, "subset": condition_description(c.spec),
                                            "cells trained": c.cells} for c in conditions])))
    if figures.get("condition_depth") is not None:
        blocks.append(("figure", f"figures/{figures['condition_depth'].name}", FIGURES["condition_depth"]))
    numbers = depth_profile_table(profile)
    if not numbers.empty:
        selected = "at the epoch chosen on selection text"
        best = "at the best held-out evaluation"
        metrics = set(profile["metric"])
        when = selected if metrics == {SELECTED_METRIC} else best if metrics == {BEST_METRIC} else \
            f"{selected} (in conditions whose cells had no selection text: {best})"
        blocks.append(("details", "The depth figure's numbers",
                       [("p", f"The unidirectional cells' held-out causal perplexity {when}: geometric mean over "
                              "seeds (lowest to highest seed, number of seeds)"
                              + ("; beside them the best n-gram model of the text the cells trained on, on the "
                                 "same held-out text." if "best n-gram of its text" in numbers else "."),
                              ), ("table", numbers)]))
    results = conditions[0].results
    for index, (result, repeated) in enumerate(zip(results, repeated_claims(results))):
        table = ("table", conditions_table(conditions, index, complete, planned))
        # A claim that at most one condition can compare (its own subset lies within one) has nothing to set
        # side by side: folded, as a repeated reading is.
        if repeated or sum(compared(c.results[index]) > 0 for c in conditions) < 2:
            blocks.append(("details", f"{result.title}, by condition", [table]))
        else:
            blocks += [("h3", f"{result.title}, by condition"), table]
    for condition in conditions:
        if condition.spec.choose and not condition.chosen.empty:
            blocks.append(("details", f"{condition.spec.name}: the {condition.spec.choose} chosen per configuration",
                           [("p", f"Chosen on the {condition.chosen_on}: per configuration, each value's "
                                  + ("selection perplexity" if condition.chosen_on == "selection text" else
                                     "best held-out causal perplexity")
                                  + " (geometric mean over seeds, with the number of seeds); the lowest is chosen."),
                            ("table", chosen_table(condition))]))
    return blocks
