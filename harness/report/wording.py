"""The claims' results in words: every sentence, reason, note and label the report shows for a claim.

``harness.analysis.claims`` evaluates and returns data (a verdict, why, notes, the numbers a sentence quotes, tables
with ``metric``, ``comparison`` and ``basis`` columns); this module only says it. It computes nothing
beyond the arithmetic of saying a number another way (a ratio as a percent change, or turned round).
"""

from __future__ import annotations

import math

import pandas as pd

from harness.spec.claims import BEST_METRIC, SELECTED_METRIC
from harness.analysis.text_error import BLOCK as TEXT_BLOCK
from harness.analysis.claims import BI_UNI, INCONCLUSIVE, ClaimResult, Note, Why
from harness.analysis.timing_trust import distinct_reasons

METRIC_LABELS = {
    "causal_ppl": "held-out causal perplexity",
    BEST_METRIC: "best held-out causal perplexity (any evaluation)",
    SELECTED_METRIC: "held-out causal perplexity at the epoch chosen on selection text",
    "val_ppl": "held-out teacher-forced perplexity",
    "train_ppl": "training perplexity",
    "sec_per_epoch": "seconds per epoch",
    "peak_mem_bytes": "peak memory",
    "sec_per_flop": "seconds per FLOP",
    "tokens_per_sec": "training tokens per second",
    "leak": "causal / teacher-forced held-out perplexity",
}
SHORT_LABELS = {"causal_ppl": "held-out causal ppl", BEST_METRIC: "best held-out causal ppl",
                SELECTED_METRIC: "held-out causal ppl at the selected epoch",
                "val_ppl": "teacher-forced ppl", "train_ppl": "training ppl", "sec_per_epoch": "s/epoch",
                "peak_mem_bytes": "peak memory", "sec_per_flop": "s/FLOP", "leak": "causal / teacher-forced",
                "tokens_per_sec": "tokens/s"}


def ratio_text(estimate: float, low: float, high: float) -> str:
    """x2.31 [2.10, 2.54], or x2.31 alone without an interval, or '-'."""
    if not math.isfinite(estimate):
        return "-"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"x{estimate:.3g}"
    # As many digits as it takes for a narrow interval not to print as zero width.
    digits = 3
    while digits < 6 and f"{low:.{digits}g}" == f"{high:.{digits}g}":
        digits += 1
    return f"x{estimate:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def effect_text(result: ClaimResult) -> str:
    """The pooled effect with its interval."""
    return ratio_text(*result.ratio)


def interval_text(low: float, high: float) -> str:
    """[0.64, 1.87], with as many digits as keep its ends apart, or "-"."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return ratio_text(math.sqrt(low * high), low, high).split(" ", 1)[1]


def prediction_text(result: ClaimResult) -> str:
    """Where a new configuration would land, "[0.64, 1.87]", or "-" with fewer than three configurations."""
    return interval_text(*result.prediction)


# --- tables ---------------------------------------------------------------------------------------------


def measure_label(metric: str, comparison: str, basis: str = "epochs") -> str:
    """What a pooled row measures: "bi / uni seconds per epoch", "held-out causal perplexity at equal
    training time", "bi: causal / teacher-forced (the leak)"."""
    if metric == "leak":
        return f"{comparison} (the leak)"
    label = METRIC_LABELS.get(metric, metric)
    if comparison == BI_UNI:
        label = f"{comparison} {label}"
    return label + (" at equal training time" if basis == "time" else "")


def measure_labels(table: pd.DataFrame) -> list[str]:
    """``measure_label`` of each row of a pooled table."""
    if table.empty:
        return []
    return [measure_label(r.metric, r.comparison, r.basis) for r in table.itertuples()]


OUTCOMES = {"neither_learned": "neither side learned", "reference_not_learned": "reference side did not learn",
            "compared_not_learned": "compared side did not learn", "single_seed": "single seed",
            "no_values": "no values"}
# What "did not learn" means (analysis.no_learning): the rule as the sentences about such a cell state it.
NOT_LEARNED_RULE = "best held-out causal perplexity above 0.95 x the unigram baseline"


def outcome_text(outcome: str, min_seeds: int) -> str:
    """One configuration's outcome (the evidence's ``outcome`` column) in words."""
    if outcome == "too_few_seeds":
        return f"fewer than {min_seeds} seeds"
    return OUTCOMES.get(outcome, outcome)


# --- why a verdict --------------------------------------------------------------------------------------


def _where(values: dict) -> str:
    which = "pooled" if values["pooled"] else "configuration's"
    return f"the {which} interval [{values['low']:.3g}, {values['high']:.3g}]"


REASONS = {
    "no_configurations": lambda v: "no configurations to compare",
    "no_finished_cells": lambda v: f"no finished {'/'.join(v['directions'])} cells",
    "one_depth": lambda v: f"only one depth among the finished {'/'.join(v['directions'])} cells",
    "did_not_learn": lambda v: (f"did not learn: in all {v['comparisons']} comparisons a side has a seed that did "
                                f"not learn ({NOT_LEARNED_RULE})"),
    "too_few_seeds": lambda v: "too few seeds for an interval",
    "one_level": lambda v: f"the cells take one value of {v['axis']}: nothing to compare",
    "levels_differ": lambda v: "the levels reach different verdicts (" + "; ".join(
        f"{c}: {verdict}" for c, verdict in v["verdicts"].items()) + ")",
    "one_seed_one_configuration": lambda v: ("too few seeds for an interval (one seed per configuration and one "
                                             "configuration)"),
    "interval_above": lambda v: f"{_where(v)} lies above x{v['bound']:.3g}",
    "interval_below": lambda v: f"{_where(v)} lies below x{v['bound']:.3g}",
    "interval_includes": lambda v: (
        f"configurations disagree (I² {v['i2']:.0%}): {_where(v)} includes x{v['bound']:.3g}, and more seeds "
        "would not narrow it" if v.get("disagree") else f"too noisy: {_where(v)} includes x{v['bound']:.3g}"),
    "timings_unreliable": lambda v: "timings unreliable: " + "; ".join(v["warnings"]),
}


def why_text(why: Why) -> str:
    return REASONS[why.kind](why.values)


def reason(result: ClaimResult) -> str:
    """Where the pooled interval lies against the threshold, or why there is no verdict."""
    return why_text(result.why)


# --- notes ----------------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def _generated_text(values: dict) -> str:
    parts = []
    for direction, row in values["by_direction"].items():
        words = f"{row['word_share']:.0%} of words found in the book, " if math.isfinite(row["word_share"]) else ""
        parts.append(f"{direction}: {words}{row['distinct_share']:.0%} distinct, "
                     f"{row['degenerate']:.0%} of samples degenerate")
    return "Generated text (greedy, after the prompt): " + "; ".join(parts) + "."


SIDES = {"neither_learned": "neither side learned", "reference_not_learned": "the reference side did not learn",
         "compared_not_learned": "the compared side did not learn"}


def _by_side(by_side: dict) -> str:
    return ", ".join(f"in {n} {SIDES.get(side, side)}" for side, n in by_side.items())


def _timings_left_out(values: dict) -> str:
    cells = values["cells"]
    listed = ", ".join(cells[:6]) + (" ..." if len(cells) > 6 else "")
    return (f"{len(cells)} of {values['of']} cells left out for unreliable timings ({listed}): "
            f"{'; '.join(distinct_reasons(values['reasons']))}.")


NOTES = {
    "left_out": lambda v: (f"Left out: {', '.join(f'{n} {status}' for status, n in v['by_status'].items())} "
                           f"{_plural(v['cells'], 'cell')} (did not finish)."),
    "few_seeds": lambda v: (f"At most {v['most']} {_plural(v['most'], 'seed')} per configuration: fewer than the "
                            f"{v['enough']} a claim should rest on; the pooled interval borrows the spread of all "
                            "configurations."),
    "bounded": lambda v: (f"In {v['configurations']} {_plural(v['configurations'], 'configuration')} the seeds "
                          f"agreed closer than the resolution ({v['resolution']:.1%}): the interval there (marked †) "
                          "is bounded by that resolution, not by the seeds."),
    "not_counted": lambda v: (f"{v['comparisons']} of {v['of']} comparisons are shown but not counted: a seed of "
                              f"one side or both did not learn ({NOT_LEARNED_RULE})"
                              + (f": {_by_side(v['by_side'])}" if v.get("by_side") else "") + "."),
    "generated_text": _generated_text,
    "no_samples": lambda v: "No generated samples.",
    "timings_left_out": _timings_left_out,
    "would_be": lambda v: f"Would be {v['verdict']} on these timings, which are flagged as unreliable.",
    "text_error": lambda v: (f"The intervals include the held-out text's own sampling error (blocks of "
                             f"{TEXT_BLOCK} characters resampled, the same for every cell): {v['share']:.0%} of the "
                             "pooled interval's variance comes from the text."),
    "no_text_error": lambda v: ("The cells stored no per-position held-out losses, so the intervals leave the "
                                "held-out text's own sampling error out (seeds and configurations only)."),
}


def note_text(note: Note) -> str:
    return NOTES[note.kind](note.values)


def notes(result: ClaimResult) -> list[str]:
    return [note_text(n) for n in result.notes]


# --- the answer in one sentence -------------------------------------------------------------------------


def _depth_helps(result: ClaimResult, r: float, low: float, high: float) -> str:
    spec = result.spec
    at = ("at equal training time" if spec.basis == "time" else
          "each at its best evaluation" if spec.metric == BEST_METRIC else
          "each at the epoch chosen on selection text" if spec.metric == SELECTED_METRIC else "after the same epochs")
    change = "lower" if r < 1 else "higher"
    span = result.facts.get("span", "")
    depths = f" ({span})" if span else ""
    text = (f"The deepest network left {SHORT_LABELS[spec.metric]} {ratio_text(r, low, high)} of the shallowest's"
            f"{depths}, {abs(1 - r):.0%} {change}, {at}")
    row = result.facts.get("contrast")
    if row is not None and math.isfinite(row["ratio"]):
        text += f"; {SHORT_LABELS[row['metric']]} {ratio_text(row['ratio'], row['ci_low'], row['ci_high'])}"
    return text + "."


def _bidirectional_slow(result: ClaimResult, r: float, low: float, high: float) -> str:
    what = "as long per epoch as" if result.spec.metric == "sec_per_epoch" else "the peak memory of"
    text = f"Bidirectional cells took {ratio_text(r, low, high)} {what} unidirectional ones"
    if "flops_ratio" in result.facts:
        f = result.facts["flops_ratio"]
        if math.isfinite(f):
            text += f"; they do x{f:.3g} the arithmetic"
        row = result.facts.get("per_flop")
        if row is not None and math.isfinite(row["ratio"]):
            text += f", so per FLOP they take {ratio_text(row['ratio'], row['ci_low'], row['ci_high'])}"
    return text + "."


def _bidirectional_useless(result: ClaimResult, r: float, low: float, high: float) -> str:
    better = "worse" if r > 1 else "better"
    when = ("at their best evaluation" if result.spec.metric == BEST_METRIC else
            "at the epoch chosen on selection text" if result.spec.metric == SELECTED_METRIC else "after the last epoch")
    text = (f"Predicting the next character from the past alone, bidirectional cells reached "
            f"{ratio_text(r, low, high)} the held-out perplexity of unidirectional ones ({better}, {when})")
    row = result.facts.get("leak")
    if row is not None and math.isfinite(row["ratio"]):
        # The leak is causal / teacher-forced; said the other way round: what reading ahead did.
        text += (f", while reading the character they predict made their perplexity "
                 f"{ratio_text(1 / row['ratio'], 1 / row['ci_high'], 1 / row['ci_low'])} of that (the leak)")
    return text + "."


def _axis_claim(result: ClaimResult, r: float, low: float, high: float) -> str:
    spec = result.spec
    comparison = str(result.deciding["comparison"].iloc[-1]) if not result.deciding.empty else spec.axis
    change = "lower" if r < 1 else "higher"
    text = (f"{comparison}: {SHORT_LABELS.get(spec.metric, spec.metric)} {ratio_text(r, low, high)}, "
            f"{abs(1 - r):.0%} {change} (the claim expects it {spec.expect})")
    levels = result.facts.get("levels")
    if levels:
        text += "; " + "; ".join(f"{c}: {v['verdict']}" for c, v in levels.items())
    moving = result.facts.get("moves_with")
    if moving:
        text += f"; with the {spec.axis}, {', '.join(moving)} changed too"
    return text + "."


SENTENCES = {"depth_helps": _depth_helps, "bidirectional_slow": _bidirectional_slow,
             "bidirectional_useless": _bidirectional_useless, "axis": _axis_claim}


def sentence(result: ClaimResult) -> str:
    """The answer in plain words, with the number a reader should remember (or why there is none)."""
    r, low, high = result.ratio
    if not math.isfinite(r):
        return f"{result.verdict.capitalize()}: {reason(result)}."
    return SENTENCES[result.name](result, r, low, high)


def one_side_learned(result: ClaimResult) -> str:
    """The configurations left out of the pool because only one side learned, named: for a claim about
    training, such a configuration is the plainest outcome there is, and the first screen should show it."""
    deciding = result.deciding
    if deciding is None or deciding.empty or "outcome" not in deciding:
        return ""
    sides = {"reference_not_learned": "compared", "compared_not_learned": "reference"}
    rows = deciding[deciding["outcome"].isin(list(sides))]
    if rows.empty:
        return ""
    columns = list(deciding.columns)
    keys = columns[:columns.index("comparison")] if "comparison" in columns else []
    named = [f"{' '.join(str(row[k]) for k in keys)} ({row.get('comparison', '')}): only the {sides[row['outcome']]} side "
             "learned" for _, row in rows.iterrows()]
    more = f"; and {len(named) - 4} more" if len(named) > 4 else ""
    return f"Not pooled, as only one side learned: {'; '.join(named[:4])}{more}."


def summary_sentence(result: ClaimResult) -> str:
    """The sentence, for an inconclusive claim with a number to show why it is inconclusive, and the
    configurations where only one side learned."""
    text, why = sentence(result), reason(result)
    # Without a number the sentence already is the reason.
    if result.verdict == INCONCLUSIVE and why and math.isfinite(result.ratio[0]):
        text = f"{text} Inconclusive: {why}."
    one_side = one_side_learned(result)
    return f"{text} {one_side}" if one_side else text
