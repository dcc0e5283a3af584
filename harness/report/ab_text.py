"""What `harness ab` prints and writes for people: the progress line of each run, the table and verdict
on the terminal, and the Markdown of a pull-request comment (its JSON is ``Outcome.as_dict``)."""

from __future__ import annotations

import math

from harness.analysis import stats
from harness.analysis.ab_decision import Outcome, PairResult, median_or_none
from harness.report.numbers import fixed, percent
from harness.report.speed_text import markdown_table


def progress_line(n: int, total: int, cell, result: PairResult) -> str:
    base, new = result.records
    line = f"[{n}/{total}] {cell.cell_id}: base {base.get('status')}, new {new.get('status')}"
    value = stats.run_value([a for a, _ in result.pairs], [b for _, b in result.pairs])
    if value is not None:
        line += (f", {len(result.pairs)} rounds, base {median_or_none([a for a, _ in result.pairs]):.3f} s, "
                 f"new {median_or_none([b for _, b in result.pairs]):.3f} s per epoch, new/base {math.exp(value):.3f}")
    return line


def summary(outcome: Outcome) -> str:
    """The verdict in one line, the last the command prints."""
    p = outcome.pooled
    counts = ", ".join(f"{outcome.count(v)} {v}" for v in stats.VERDICTS if outcome.count(v))
    return (f"{outcome.word}: pooled new/base {fixed(p.ratio)} [{fixed(p.low)}, {fixed(p.high)}] over {p.n} "
            f"runs ({p.verdict}); cells: {counts or 'none'} (threshold {outcome.threshold.fraction * 100:g}%, "
            f"alpha {outcome.alpha:g}, rule {outcome.rule})")


def format_text(outcome: Outcome) -> str:
    from tabulate import tabulate

    level = f"{(1 - outcome.alpha) * 100:g}%"
    lines = [f"base: {outcome.sides[0].label}  ({outcome.out / 'base'})",
             f"new:  {outcome.sides[1].label}  ({outcome.out / 'new'})"]
    rows = [[c.label, c.decision.n, fixed(c.base_median), fixed(c.new_median),
             f"{fixed(c.decision.ratio)} [{fixed(c.decision.low)}, {fixed(c.decision.high)}]",
             percent(c.decision.sd, 1), c.decision.verdict] for c in outcome.cells]
    p = outcome.pooled
    rows.append(["all cells", p.n, "", "", f"{fixed(p.ratio)} [{fixed(p.low)}, {fixed(p.high)}]",
                 percent(p.sd, 1), p.verdict])
    lines.append(tabulate(rows, headers=["cell", "runs", "base s/epoch", "new s/epoch", f"new/base [{level} CI]",
                                         "run SD", "verdict"], tablefmt="simple", disable_numparse=True))
    if outcome.not_compared:
        lines.append(f"not finished on both sides (not compared): {', '.join(outcome.not_compared)}")
    if outcome.too_few_runs:
        lines.append(outcome.too_few_runs)
    if outcome.busy:
        lines.append(f"!! {outcome.busy}")
    lines.append(f"wall time {outcome.wall_s:.0f} s")
    lines.append(summary(outcome))
    return "\n".join(lines)


def format_markdown(outcome: Outcome) -> str:
    """A pull-request comment: the verdict first, then the table and how it was decided."""
    icon = {"REGRESSION": ":red_circle:", "IMPROVEMENT": ":green_circle:", "NO CHANGE": ":white_check_mark:"}
    level = f"{(1 - outcome.alpha) * 100:g}%"
    rows = [[f"`{c.label}`", str(c.decision.n), fixed(c.base_median), fixed(c.new_median),
             f"{fixed(c.decision.ratio)} [{fixed(c.decision.low)}, {fixed(c.decision.high)}]",
             f"**{c.decision.verdict}**" if c.decision.verdict in ("regression", "improvement") else c.decision.verdict]
            for c in outcome.cells]
    p = outcome.pooled
    rows.append(["**all cells**", str(p.n), "", "", f"{fixed(p.ratio)} [{fixed(p.low)}, {fixed(p.high)}]",
                 f"**{p.verdict}**"])
    lines = [f"### {icon.get(outcome.word, ':grey_question:')} Training speed: {outcome.word.lower()}", "",
             f"`harness ab {outcome.suite}`: base = {outcome.sides[0].label}, new = {outcome.sides[1].label}.", "",
             markdown_table(["cell", "runs", "base s/epoch", "new s/epoch", f"new/base [{level} CI]", "verdict"], rows,
                            align="lrrrrl"), ""]
    if outcome.not_compared:
        lines += [f"Not finished on both sides (not compared): {', '.join(outcome.not_compared)}.", ""]
    if outcome.too_few_runs:
        lines += [outcome.too_few_runs[0].upper() + outcome.too_few_runs[1:] + ".", ""]
    if outcome.busy:
        lines += [f"> **Warning:** {outcome.busy}.", ""]
    lines += [summary(outcome), "",
              f"<details><summary>How this was decided</summary>\n\n"
              f"Both sides trained each run (cell and seed) in a fresh process of their own, one epoch at a time in turn "
              f"(A B B A ...), {outcome.rounds} timed rounds per run after a warm-up epoch, {outcome.wall_s:.0f} s in all. "
              f"Two consecutive rounds (one new-first, one base-first) make a unit, and a run's ratio is the geometric mean "
              f"of its units; the runs are the replicates (a process keeps a speed of its own). The ratio of a cell, and of "
              f"all cells, is the geometric mean of its runs' ratios with a {level} t-interval. Regression: the interval above 1 and the "
              f"{'estimate' if outcome.rule == 'estimate' else 'whole interval'} above 1 + {outcome.threshold.fraction:g}; "
              f"no change: the whole interval within the threshold; otherwise undecided (more runs would tell)."
              f"\n\n</details>"]
    return "\n".join(lines) + "\n"
