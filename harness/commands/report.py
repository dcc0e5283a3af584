"""`harness report`: turn a results folder into a Markdown and HTML report with figures."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write the report of a results folder",
        description="Evaluate the suite's claims on a results folder and write index.md, index.html and "
                    "figures/*.png, listed in .harness-report. Rendering again replaces only those files; a "
                    "folder holding files no report wrote is refused.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a results folder written by `harness run`")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="where to write the report (default: beside the run: report/NAME/ next to the "
                             "results/ folder holding results/NAME, else RUN_DIR-report/)")
    parser.add_argument("--timings", metavar="TIMING_RUN_DIR", action="append", default=[],
                        help="take seconds per epoch from this results folder (a quiet timing pass of the same "
                             "cells) instead of RUN_DIR's own; cells matched by id (repeatable)")
    parser.set_defaults(func=main)


def main(args) -> int:
    from harness.results.atomic import writable_folder

    if args.out is not None:
        writable_folder(args.out, "--out")
    from harness.report.build import build_report

    out = build_report(args.run_dir, args.out, timing_dirs=args.timings)
    print(out / "index.md")
    print(out / "index.html")
    return 0
