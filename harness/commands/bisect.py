"""`harness bisect SUITE --good REV --bad REV`: the first commit that made training slower, with
`harness ab` as the judge."""

from __future__ import annotations

import signal

from harness.commands.ab import add_check_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bisect", help="find the first commit slower than a good one, with ab as the judge",
        description="Between --good and --bad (first parents), find the first commit that `harness ab` finds "
                    "slower than --good by the threshold, in about log2(n) checks, each an interleaved check "
                    "against --good. --bad is checked first. A commit whose check fails (it does not build or has "
                    "no ab worker) or cannot decide is skipped, as `git bisect skip` does; if skipped commits "
                    "hide the answer, the candidates are listed. Exit 0 when the commit is found, 1 when --bad is "
                    "not slower than --good, 2 for bad input or when skipped commits leave several candidates.")
    parser.add_argument("suite", help="suite file, e.g. suites/regression.yaml")
    parser.add_argument("--good", required=True, metavar="REV", help="a commit whose speed is the reference")
    parser.add_argument("--bad", required=True, metavar="REV", help="a later commit that is slower")
    add_check_arguments(parser)
    parser.set_defaults(func=main)


def main(args) -> int:
    from harness.commands.ab import check_settings, raise_interrupt
    from harness.grid.history import run_bisect
    from harness.spec.suite import load_suite

    load_suite(args.suite)  # a bad suite is refused before any checkout
    signal.signal(signal.SIGTERM, raise_interrupt)
    result, commits, outcomes = run_bisect(check_settings(args), args.good, args.bad, args.repo)
    if not result.bad_is_slower:
        verdict = next(iter(outcomes.values()), {})
        ratio = (verdict.get("pooled") or {}).get("ratio")
        print(f"--bad {args.bad} is not slower than --good {args.good} by {args.threshold}"
              + (f" (ratio {ratio:.3f})" if ratio else f" ({verdict.get('reason') or verdict.get('verdict')})"))
        return 1
    for sha, verdict in result.checked.items():
        ratio = (outcomes[sha].get("pooled") or {}).get("ratio")
        print(f"  {commits[sha].short} {verdict:<10} {f'x{ratio:.3f}' if ratio else '':>7}  {commits[sha].subject[:70]}")
    if result.first_slower:
        commit = commits[result.first_slower]
        print(f"first slower commit: {commit.sha} {commit.subject}")
        return 0
    print("skipped commits leave several candidates for the first slower commit: "
          + ", ".join(f"{commits[c].short} ({commits[c].subject[:40]})" for c in result.candidates))
    return 2

