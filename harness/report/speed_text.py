"""Machine-readable and pull-request outputs of the speed checks: JSON and Markdown of `harness compare`
(the text and Markdown of `harness ab` are in ``harness.report.ab_text``), and the Markdown table both use."""

from __future__ import annotations

import math

from harness.report.numbers import fixed


def markdown_table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``align`` has one letter per column (l, r or c)."""
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    align = align or "l" * len(headers)
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _side(m) -> dict:
    return {"source": m.source, "suite": m.suite, "git": m.git or {}, "machine": m.machine or {},
            "calibration_flops_per_sec": m.calibration, "notes": list(getattr(m, "notes", ()))}


def compare_json(report) -> dict:
    """`harness compare`'s report (``harness.analysis.speed_compare.Report``) as plain JSON values."""
    cells = []
    for r in report.results:
        c = r.comparison
        cells.append({
            "cell": r.cell.label, "base_runs": list(r.cell.base_ids), "new_runs": list(r.cell.new_ids),
            "base_run_medians": list(c.base), "new_run_medians": list(c.new),
            "base_median": _num(c.base_median), "new_median": _num(c.new_median), "ratio": _num(c.ratio),
            "ci_low": _num(c.ci_low), "ci_high": _num(c.ci_high), "p_value": _num(c.p_value),
            "base_spread": _num(c.base_spread), "new_spread": _num(c.new_spread), "noisy": c.noisy,
            "verdict": c.verdict, "machines": r.cell.machines or None,
        })
    m = report.matching
    return {
        "base": _side(report.base), "new": _side(report.new), "metric": report.metric.name,
        "unit": report.metric.unit, "threshold": report.threshold.fraction, "alpha": report.alpha,
        "ignore": list(report.ignore), "differences": list(report.differences),
        "machine_speed_changed": report.machine_speed_changed, "cells": cells,
        "only_base": list(m.only_base), "only_new": list(m.only_new), "not_ok": list(m.not_ok),
        "summary": report.summary(), "exit_code": report.exit_code,
    }


def compare_markdown(report) -> str:
    """`harness compare`'s report as a pull-request comment."""
    word = "regression" if report.regressed else "undecided" if report.undecided else "no regression"
    icon = {"regression": ":red_circle:", "undecided": ":grey_question:"}.get(word, ":white_check_mark:")
    level = f"{(1 - report.alpha) * 100:g}%"
    unit = report.metric.unit
    rows = []
    for r in report.results:
        c = r.comparison
        verdict = f"**{c.verdict}**" if c.verdict in ("regression", "improvement") else c.verdict
        rows.append([f"`{r.cell.label}`", f"{len(c.base)}/{len(c.new)}", f"{fixed(c.base_median)} {unit}",
                     f"{fixed(c.new_median)} {unit}", f"{fixed(c.ratio)} [{fixed(c.ci_low)}, {fixed(c.ci_high)}]",
                     "-" if _num(c.p_value) is None else f"{c.p_value:.2g}", verdict + (" (noisy)" if c.noisy else "")])
    lines = [f"### {icon} Training speed (`harness compare`): {word}", "",
             f"baseline `{report.base.source}`, new `{report.new.source}`", ""]
    if report.differences:
        lines += ["> **Different machines or versions:** " + "; ".join(report.differences), ""]
    lines += [markdown_table(["cell", "runs", "baseline median", "new median", f"ratio [{level} CI]", "p", "verdict"],
                             rows, align="lrrrrrl"), "", report.summary(), ""]
    return "\n".join(lines)
