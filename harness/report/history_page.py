"""The page of a speed timeline (``harness history``): each commit's seconds-per-epoch ratio to the reference
commit with its interval, the steps found in it (``harness.analysis.speed_history.change_points``), and a
table of the points; ``index.md``, ``index.html`` and ``timeline.png``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.analysis.speed_history import Step, change_points
from harness.report.numbers import fixed
from harness.report.render import render_html, render_markdown
from harness.results.atomic import write_text_atomic

SUBJECT_WIDTH = 72  # characters of a commit's subject in the table


def points_table(points: dict[str, dict]) -> pd.DataFrame:
    """The points in the range's order."""
    rows = sorted(points.values(), key=lambda p: p.get("position", 0))
    return pd.DataFrame([{k: p.get(k) for k in ("position", "short", "date", "subject", "status", "reason", "ratio",
                                                  "low", "high", "log_se", "verdict")} for p in rows])


def timeline_steps(table: pd.DataFrame, threshold: float) -> list[Step]:
    ratios = [float(r) if r is not None and r == r else math.nan for r in table["ratio"]]
    errors = [float(e) if e is not None and e == e else math.nan for e in table["log_se"]]
    return change_points(ratios, errors, threshold)


def timeline_figure(table: pd.DataFrame, steps: list[Step], reference: str, threshold: float, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.45 * len(table) + 2.5), 4.2), layout="constrained")
    ax = fig.subplots()
    x = list(range(len(table)))
    ok = table["status"] == "ok"
    for i, row in table.iterrows():
        if not ok[i]:
            ax.axvline(i, color="0.85", lw=6, zorder=0)  # a commit that could not be measured
            continue
        if row["low"] is not None and row["high"] is not None and math.isfinite(row["low"]):
            ax.plot([i, i], [row["low"], row["high"]], color="#0173b2", lw=1.4)
        ax.plot([i], [row["ratio"]], marker="o", ms=5, color="#0173b2")
    ax.axhline(1.0, color="0.4", lw=1)
    ax.axhline(1 + threshold, color="#d55e00", lw=1, ls="--", label=f"threshold (x{1 + threshold:.3g})")
    for step in steps:
        ax.axvline(step.index - 0.5, color="#d55e00" if step.slower else "#029e73", lw=1.5, ls=":",
                   label=f"step at {table['short'][step.index][:7]} ({step.change:+.1%})")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_minor_formatter(lambda v, _: f"{v:g}")
    ax.set_xticks(x, [s[:7] for s in table["short"]], rotation=60, fontsize=8, family="monospace")
    ax.set_xlabel("commit (oldest first)")
    ax.set_ylabel(f"seconds per epoch / reference {reference[:7]}")
    ax.legend(fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def history_blocks(header: dict, table: pd.DataFrame, steps: list[Step], figure: str | None) -> list[tuple]:
    settings, reference = header["settings"], header["reference"]
    threshold = settings["threshold"]
    title = f"Training speed over {len(table)} commits"
    blocks = [("h1", title)]
    measured = table[table["status"] == "ok"]
    if steps:
        said = "; ".join(f"{'slower' if s.slower else 'faster'} by {abs(s.change):.1%} from {table['short'][s.index][:7]} "
                         f"({table['subject'][s.index]})" for s in steps)
        blocks.append(("p", f"Speed stepped at {len(steps)} commit{'s' if len(steps) > 1 else ''}: {said}."))
    else:
        blocks.append(("p", f"No step larger than the threshold ({threshold}) among the {len(measured)} measured "
                            "commits."))
    if not measured.empty:
        ratios = measured["ratio"].astype(float)
        inside = sum(lo <= 1 <= hi for lo, hi in zip(measured["low"].astype(float), measured["high"].astype(float)))
        blocks.append(("p", f"Ratios from {ratios.min():.3f} to {ratios.max():.3f}; the "
                            f"{1 - settings['alpha']:.0%} interval of {inside} of {len(measured)} commits contains 1 "
                            f"(at this level about {settings['alpha'] * len(measured):.1f} of {len(measured)} "
                            "unchanged commits would miss it by chance)."))
    blocks.append(("p", f"Each point is one `harness ab` check of the commit against the reference commit "
                        f"`{reference['commit'][:10]}` ({reference['subject'][:SUBJECT_WIDTH]}), interleaved epoch by epoch, so the "
                        f"machine's drift between checks cancels: the geometric-mean ratio of seconds per epoch "
                        f"(commit / reference) over the runs of `{settings['suite']}`, with its "
                        f"{1 - settings['alpha']:.0%} interval; {settings['rounds']} timed rounds per run. Steps: "
                        "PELT on the log-ratios with the Schwarz penalty at the points' typical standard error, "
                        "kept where the segments' means differ by more than the threshold "
                        "(harness.analysis.speed_history)."))
    if figure:
        blocks.append(("figure", figure, "Ratio of seconds per epoch to the reference commit, per commit (oldest "
                                         "first), with its interval; dotted lines mark the steps; grey bands "
                                         "are commits that could not be measured."))
    shown = table.assign(
        ratio=[fixed(v, 3) if v is not None and v == v else "" for v in table["ratio"]],
        interval=[f"[{fixed(lo, 3)}, {fixed(hi, 3)}]" if lo is not None and hi is not None and lo == lo else ""
                  for lo, hi in zip(table["low"], table["high"])],
        verdict=[v if s == "ok" else f"not measured: {r}" for v, s, r in zip(table["verdict"], table["status"],
                                                                               table["reason"])])
    shown["subject"] = [text if len(text) <= SUBJECT_WIDTH else text[:SUBJECT_WIDTH - 3].rstrip() + "..."
                        for text in shown["subject"]]
    shown["date"] = [str(d)[:10] for d in shown["date"]]
    blocks.append(("table", shown[["short", "date", "subject", "ratio", "interval", "verdict"]].rename(
        columns={"short": "commit"})))
    return blocks


def write_history_report(header: dict, points: dict[str, dict], out: Path) -> Path:
    """Write the timeline's page into ``out`` and return it."""
    from harness.analysis.speed_compare import Threshold

    out.mkdir(parents=True, exist_ok=True)
    table = points_table(points)
    threshold = Threshold.parse(header["settings"]["threshold"]).fraction
    steps = timeline_steps(table, threshold) if not table.empty else []
    figure = None
    if not table.empty and (table["status"] == "ok").any():
        timeline_figure(table, steps, header["reference"]["commit"], threshold, out / "timeline.png")
        figure = "timeline.png"
    blocks = history_blocks(header, table, steps, figure)
    write_text_atomic(out / "index.md", render_markdown(blocks))
    write_text_atomic(out / "index.html", render_html(blocks, out, blocks[0][1]))
    return out
