"""`harness history SUITE --revs RANGE`: the training speed of each commit of a range, each measured
interleaved against one reference commit, stored and rendered as a timeline with its steps."""

from __future__ import annotations

import signal
from pathlib import Path

from harness.commands.ab import add_check_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "history", help="speed of every commit of a range against one reference, as a timeline with its steps",
        description="Check each commit of RANGE against one reference commit with `harness ab` (interleaved, so "
                    "that the machine's drift over the hours of a timeline cancels: every point is a ratio of "
                    "seconds per epoch with its interval), store each point under OUT/points as it finishes "
                    "(a commit already measured is not measured again: run the same command to resume or to "
                    "extend the range), and write the timeline (timeline.png, index.md, index.html) with the "
                    "commits where speed stepped by more than the threshold. Exit 0, or 1 when the newest "
                    "measured commit is slower than the reference (an ab regression), 2 for bad input.")
    parser.add_argument("suite", help="suite file, e.g. suites/regression.yaml")
    parser.add_argument("--revs", required=True, metavar="RANGE",
                        help="the commits, as a git range, oldest to newest, e.g. HEAD~15..HEAD")
    parser.add_argument("--reference", metavar="REV",
                        help="the commit every commit is measured against (default: the range's first commit)")
    parser.add_argument("--path", action="append", default=[], metavar="PATH",
                        help="only commits that touched PATH, e.g. harness/cell (repeatable)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="the history's folder (default results/history/SUITE-NAME)")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="where to write the timeline's page (default report/history/SUITE-NAME beside results/)")
    add_check_arguments(parser)
    parser.set_defaults(func=main)


def main(args) -> int:
    from harness.commands.ab import check_settings, raise_interrupt
    from harness.grid.history import run_history
    from harness.report.history_page import write_history_report
    from harness.results.atomic import writable_folder
    from harness.spec.suite import load_suite

    name = load_suite(args.suite).name  # a bad suite is refused before any checkout
    out = Path(args.out) if args.out else Path("results") / "history" / name
    report = Path(args.report) if args.report else Path("report") / "history" / name
    writable_folder(str(out), "--out")
    writable_folder(str(report), "--report")
    signal.signal(signal.SIGTERM, raise_interrupt)  # a stopped job still removes its worktrees
    run = run_history(check_settings(args), args.revs, args.reference, out, tuple(args.path), args.repo)
    points = run.history.points()
    header = run.history.header()
    write_history_report(header, points, report)
    print(f"{len(run.measured)} commits measured, {len(run.reused)} already there; timeline in {report / 'index.md'}")
    newest = max((p for p in points.values() if p.get("status") == "ok"), key=lambda p: p.get("position", -1),
                 default=None)
    return 1 if newest is not None and newest.get("check", {}).get("exit_code") == 1 else 0

