"""`harness ab SUITE`: interleaved A/B speed check of two revisions or settings. Exit 0: nothing
regressed, 1: something did, 2: bad input, or too few runs to decide anything."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

# harness.grid.ab's defaults, repeated here so that --help imports no torch or scipy
DEFAULT_ROUNDS = 6
DEFAULT_THRESHOLD = "5%"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ab", help="interleaved A/B speed check of two revisions or settings (catches ~5-10%%)",
        description="Train every cell of SUITE with two versions of the code (git revisions, each from its own "
                    "temporary worktree; default: the working tree on both sides, an A/A check) and/or settings, "
                    "in a fresh pair of processes per run (cell and seed) that take turns epoch by epoch (A B B A "
                    "...), so both see the same seconds of the machine. Each pair of adjacent epochs gives a ratio "
                    "new/base, and each run the geometric mean of its ratios; a cell (and all cells pooled) "
                    "regresses when the 1 - alpha t-interval of the geometric-mean ratio of its runs lies above 1 "
                    "and the estimate above 1 + threshold. Exit 0 when nothing regressed, 1 when something did, 2 "
                    "for bad input or when nothing could be decided.")
    parser.add_argument("suite", help="suite file, e.g. suites/regression.yaml")
    parser.add_argument("--base", metavar="REV", help="git revision of the base side (default: the working tree)")
    parser.add_argument("--new", metavar="REV", help="git revision of the new side (default: the working tree)")
    parser.add_argument("--set-base", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a default on the base side only (repeatable)")
    parser.add_argument("--set-new", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a default on the new side only (repeatable), e.g. model.hidden=272")
    add_check_arguments(parser)
    parser.add_argument("--out", metavar="DIR",
                        help="folder for the two run folders OUT/base and OUT/new (default results/ab-<suite>-<time>)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write the result as Markdown (a PR comment)")
    parser.set_defaults(func=main)


def add_check_arguments(parser) -> None:
    """The flags of one interleaved check, shared by ab, history and bisect."""
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                        help="keep cells whose KEY has one of the values in the suite itself, before either side's "
                             "--set (repeatable): --only hidden=64 --set-new model.hidden=128 compares 64 with 128")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"timed epochs per side and run, after one warm-up epoch (default {DEFAULT_ROUNDS})")
    parser.add_argument("--threshold", default=DEFAULT_THRESHOLD,
                        help="smallest slowdown that counts, e.g. 10%% or 3%% (default "
                             f"{DEFAULT_THRESHOLD.replace('%', '%%')})")
    parser.add_argument("--alpha", type=float, default=0.01,
                        help="1 - confidence level of the interval of the ratio (default 0.01)")
    parser.add_argument("--rule", choices=["estimate", "interval"], default="estimate",
                        help="what must pass the threshold: the estimate (default) or the whole interval")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc at its defaults in the workers (by default they keep the memory an "
                             "epoch frees, so that page faults do not add noise; see docs/regression.md)")
    parser.add_argument("--repo", metavar="DIR", help="git repository of the revisions (default: the one holding "
                                                      "this harness)")


def check_settings(args):
    """The check's settings from the shared flags (``harness.grid.history.CheckSettings``)."""
    from harness.grid.history import CheckSettings

    return CheckSettings(suite=args.suite, rounds=args.rounds, threshold=args.threshold, alpha=args.alpha,
                         only=tuple(args.only), rule=args.rule, system_malloc=args.system_malloc)


def main(args) -> int:
    from harness.grid.ab import AbRequest, run_ab
    from harness.report.ab_text import format_markdown, format_text
    from harness.results.atomic import writable_file, write_json_atomic, write_text_atomic

    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path is not None:  # checked before the rounds: a bad path must not cost a whole A/B run
            writable_file(path, flag, keep_out_of=[args.out] if args.out else [])
    signal.signal(signal.SIGTERM, raise_interrupt)  # a stopped CI job still removes its worktrees
    request = AbRequest(suite=args.suite, base_rev=args.base, new_rev=args.new, base_sets=tuple(args.set_base),
                        new_sets=tuple(args.set_new), only=tuple(args.only), rounds=args.rounds,
                        threshold=args.threshold, alpha=args.alpha, rule=args.rule, out=args.out, repo=args.repo,
                        system_malloc=args.system_malloc)
    outcome = run_ab(request, argv=["python", "-m", "harness", *sys.argv[1:]])
    print(format_text(outcome))
    if args.json:
        write_json_atomic(Path(args.json), outcome.as_dict())
    if args.markdown:
        write_text_atomic(Path(args.markdown), format_markdown(outcome))
    return outcome.exit_code


def raise_interrupt(signum, frame):
    """SIGTERM as Ctrl-C, so that a stopped job still removes its worktrees (ab, history, bisect)."""
    raise KeyboardInterrupt
