"""`harness compare BASE NEW`: did training get slower? Exit 0: nothing regressed, 1: something did,
2: bad input, or too few runs to decide anything."""

from __future__ import annotations

import math
from pathlib import Path

from harness.results.speed_baselines import DEFAULT_ROOT, open_measurements
from harness.analysis.speed_compare import (DEFAULT_ALPHA, DEFAULT_THRESHOLD, METRICS, Report, Threshold, compare_measurements,
                       not_compared_summary)
from harness.report.numbers import fixed, general, percent


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare per-epoch times of two runs or a baseline and a run",
        description="Match the cells of BASE and NEW by configuration; the cells that differ only in their "
                    "seed are the runs of a matched cell, each summarised by the median of its per-epoch "
                    "times (warm-up excluded). A cell regresses when the 1 - alpha confidence interval of "
                    "the ratio of the medians of its run medians lies above 1 + threshold and a two-sided "
                    "Mann-Whitney U test on the run medians gives p < alpha (at alpha 0.01 that takes 5 runs "
                    "per side). Exit 0 when nothing "
                    "regressed, 1 when something did, 2 for bad input or when no cell had enough runs.")
    parser.add_argument("base", metavar="BASE", help="run folder, baseline JSON file, or baseline:NAME")
    parser.add_argument("new", metavar="NEW", help="run folder, baseline JSON file, or baseline:NAME")
    parser.add_argument("--threshold", default=DEFAULT_THRESHOLD,
                        help="smallest change of the median that counts (the confidence interval of the "
                             "ratio must lie beyond it), e.g. 10%% or median:10%% "
                             f"(default {DEFAULT_THRESHOLD.replace('%', '%%')})")
    parser.add_argument("--metric", default="sec_per_epoch", choices=sorted(METRICS),
                        help="what to compare (default sec_per_epoch)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help="significance level of the Mann-Whitney U test on run medians "
                             f"(default {DEFAULT_ALPHA})")
    parser.add_argument("--ignore", action="append", default=[], metavar="KEY",
                        help="match cells ignoring this configuration key (repeatable), e.g. threads to "
                             "measure what a setting costs")
    parser.add_argument("--allow-different-machine", action="store_true",
                        help="compare even when the machines or versions (run.json) differ, or a matched "
                             "cell's timings come from different machines (cells.csv cpu_model, gpu_name)")
    parser.add_argument("--baselines", default=DEFAULT_ROOT, metavar="DIR",
                        help=f"folder of saved baselines (default {DEFAULT_ROOT})")
    parser.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write it as Markdown (a pull-request comment)")
    parser.set_defaults(func=main)


def main(args) -> int:
    from harness.results.atomic import writable_file

    threshold = Threshold.parse(args.threshold)
    inputs = [Path(spec) for spec in (args.base, args.new) if Path(spec).exists()]
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path is not None:
            writable_file(path, flag, keep_out_of=inputs)
    base = open_measurements(args.base, args.baselines)
    new = open_measurements(args.new, args.baselines)
    report = compare_measurements(base, new, threshold, args.alpha, args.metric, args.ignore,
                                  args.allow_different_machine)
    print(format_report(report))
    if args.json or args.markdown:
        from harness.report.speed_text import compare_json, compare_markdown
        from harness.results.atomic import write_json_atomic, write_text_atomic

        if args.json:
            write_json_atomic(args.json, compare_json(report))
        if args.markdown:
            write_text_atomic(args.markdown, compare_markdown(report))
    return report.exit_code


def _describe(m) -> str:
    commit = (m.git or {}).get("commit")
    extra = [f"suite {m.suite}"] if m.suite else []
    if commit:
        extra.append(f"git {str(commit)[:10]}{'+dirty' if (m.git or {}).get('dirty') else ''}")
    return f"{m.source}" + (f" ({', '.join(extra)})" if extra else "")


def format_report(report: Report) -> str:
    from tabulate import tabulate

    unit = report.metric.unit
    level = f"{(1 - report.alpha) * 100:g}%"
    lines = [f"baseline: {_describe(report.base)}", f"new:      {_describe(report.new)}"]
    # Damaged or missing rows were read from the cell records: say so, or a dropped row would go unseen.
    lines += [f"!! {note}" for side in (report.base, report.new) for note in side.notes]
    if report.differences:
        banner = "!" * 78
        lines += [banner, "!! DIFFERENT MACHINES OR VERSIONS: these timings are not directly comparable"]
        lines += [f"!!   {d}" for d in report.differences]
        lines.append(banner)
    if report.ignore:
        lines.append(f"cells matched ignoring: {', '.join(report.ignore)}")
    changed = report.machine_speed_changed
    for device, (base_rate, new_rate) in report.machine_speed.items():
        mark = "!! " if device in changed else ""
        lines.append(f"{mark}machine speed at each run's start ({device}, calibrated float32 matrix product): "
                     f"{base_rate / 1e9:.4g} -> {new_rate / 1e9:.4g} GFLOP/s ({new_rate / base_rate:.3f}x)")
    if changed:
        lines.append(f"!! the machine itself was faster or slower by more than the threshold ({report.threshold}), "
                     "so part of any difference below may be the machine's state rather than the code: run again")
    mixed = report.mixed_machines
    rows = []
    for r in report.results:
        c = r.comparison
        rows.append([
            r.cell.label, f"{len(c.base)}/{len(c.new)}", f"{general(c.base_median)} {unit}",
            f"{general(c.new_median)} {unit}",
            f"{fixed(c.ratio)} [{fixed(c.ci_low)}, {fixed(c.ci_high)}]",
            "-" if math.isnan(c.p_value) else f"{c.p_value:.2g}",
            f"{percent(c.base_spread)} / {percent(c.new_spread)}" + (" noisy" if c.noisy else ""), c.verdict,
        ] + (["DIFFERENT" if r.cell.machines else "same"] if mixed else []))
    headers = ["cell", "runs", "baseline median", "new median", f"ratio [{level} CI]", "p", "run spread",
               "verdict"]
    headers += ["machines"] if mixed else []
    lines.append(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    if mixed:
        lines.append("!! cells timed on different machines (their verdicts mix machine and code):")
        lines += [f"!!   {r.cell.label}: {r.cell.machines}" for r in mixed]
    m = report.matching
    if m.only_base:
        lines.append(f"only in baseline (not compared): {', '.join(m.only_base)}")
    if m.only_new:
        lines.append(f"only in new (not compared): {', '.join(m.only_new)}")
    if m.not_ok_cells:
        lines.append(f"not finished (not compared): {not_compared_summary(m.not_ok_cells)}")
    if any(r.comparison.noisy for r in report.results):
        lines.append(f"noisy: the runs of one side differ by more than the threshold ({report.threshold}) among "
                     "themselves (run spread: interquartile range / median of the run medians); a 'same' there is weak "
                     "evidence")
    lines.append(report.summary())
    return "\n".join(lines)
