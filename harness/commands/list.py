"""`harness list SUITE`: the cells a suite expands to, with a rough time estimate and their arithmetic."""

from __future__ import annotations

from ..errors import HarnessError
from .run import add_selection_arguments, print_cells, select_cells


def register(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list a suite's cells and estimated times")
    add_selection_arguments(parser)
    parser.add_argument("--flop-rate", type=float, metavar="GFLOPS",
                        help="also give the time the cells' matrix-product work takes at this rate (GFLOP/s, e.g. "
                             "the calibrated rate in a run's run.json times the cells run at once): a floor that no "
                             "implementation goes below on that machine")
    parser.set_defaults(func=main)


def main(args) -> int:
    rate = args.flop_rate
    if rate is not None and not rate > 0:  # also NaN
        raise HarnessError(f"--flop-rate {rate:g}: must be a positive number of GFLOP/s")
    _, cells = select_cells(args)
    print_cells(cells, flop_rate=rate * 1e9 if rate else None)
    return 0
