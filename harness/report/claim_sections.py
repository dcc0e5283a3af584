"""One section of the report per claim: its verdict and why, the forest figure, the pooled ratios and the
claim's parameters, with every configuration's evidence and the claim's other measures folded away."""

from __future__ import annotations

import pandas as pd

from harness.analysis.claims import ClaimResult
from harness.report import wording as claim_wording
from harness.report.numbers import fmt
from harness.report.tables import claim_key, evidence_table, pooled_table


def repeated_claims(results: list) -> list[bool]:
    """Per claim result, whether an earlier one checked the same claim (on another metric). Those draw the
    same configurations again: their figure and by-condition table are folded, so the page stays readable."""
    claims = [claim_key(result.spec) for result in results]
    return [claim in claims[:index] for index, claim in enumerate(claims)]


def claim_section(result: ClaimResult, index: int, repeated: bool, figures: dict) -> list[tuple]:
    """The blocks of the ``index``-th claim result; ``repeated``: an earlier result checked the same claim."""
    blocks: list[tuple] = [("h2", result.title)]
    reason = claim_wording.reason(result)
    blocks.append(("verdict", result.verdict, f"{reason[0].upper()}{reason[1:]}." if reason else ""))
    path = figures.get(f"forest_{index}")
    if path is not None:
        figure = ("figure", f"figures/{path.name}",
                  f"{result.title}: each configuration's ratio with its {result.spec.confidence:.0%} "
                  "interval (hollow: not counted), the pooled ratios (diamonds), no effect (grey) and the "
                  "claim's threshold (dashed).")
        blocks.append(("details", f"{result.title}: figure", [figure]) if repeated else figure)
    blocks.append(("table", pooled_table(result.pooled_table, result.spec.confidence)))
    params = ", ".join(f"{k} = {'/'.join(v) if isinstance(v, list) else v}"
                       for k, v in result.spec.to_dict().items() if k != "name")
    method = result.pooled_table["method"].iloc[0] if not result.pooled_table.empty else "-"
    blocks.append(("p", " ".join([*claim_wording.notes(result), f"Pooling: {method}. Parameters: {params}."])))
    folded = []
    if not result.deciding.empty:
        folded.append(("table", evidence_table(result.deciding, result.spec)))
    if not result.context_table.empty:
        context = result.evidence[result.evidence["role"] == "context"]
        folded += [("p", f"{result.title}, other measures: pooled, then per configuration."),
                   ("table", pooled_table(result.context_table, result.spec.confidence)),
                   ("table", evidence_table(context, result.spec))]
    levels = levels_table(result)
    if not levels.empty:  # every level of the axis, where the claim compares only its last with its first
        folded += [("p", f"{result.title}: each level of {result.spec.axis}, per configuration (geometric mean "
                         "over finished seeds, number of seeds)."), ("table", levels)]
    if folded:
        blocks.append(("details", f"{result.title}: every configuration and other measures", folded))
    return blocks


def levels_table(result: ClaimResult):
    """A claim on an axis: its metric at each level of the axis, one row per configuration (the claim's
    ``levels_table`` fact, pivoted); empty for other claims or fewer than three levels (the comparisons say
    it all)."""
    table = result.facts.get("levels_table")
    axis, metric = result.spec.axis, result.spec.metric
    if table is None or table.empty or axis not in table or table[axis].nunique() < 3:
        return pd.DataFrame()
    keys = [k for k in table.columns if k not in (axis, metric, "seeds")]
    levels = sorted(table[axis].unique(), key=lambda v: (str(type(v)), v))
    rows = []
    for key, group in (table.groupby(keys, dropna=False, sort=True) if keys else [((), table)]):
        key = key if isinstance(key, tuple) else (key,)
        row = {k: fmt(v) for k, v in zip(keys, key)}
        for level in levels:
            point = group[group[axis] == level]
            row[f"{axis} {fmt(level)}"] = (f"{fmt(point[metric].iloc[0], 4)} ({int(point['seeds'].iloc[0])})"
                                           if not point.empty else "-")
        rows.append(row)
    return pd.DataFrame(rows)


def claim_sections(results: list[ClaimResult], figures: dict) -> list[tuple]:
    """Every claim's section, in the order of ``results``."""
    blocks: list[tuple] = []
    for index, (result, repeated) in enumerate(zip(results, repeated_claims(results))):
        blocks += claim_section(result, index, repeated, figures)
    return blocks
