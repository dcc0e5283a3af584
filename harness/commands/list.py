"""`harness list SUITE`: the cells a suite expands to, with a rough time estimate."""

from __future__ import annotations

from .run import add_selection_arguments, print_cells, select_cells


def register(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list a suite's cells and estimated times")
    add_selection_arguments(parser)
    parser.set_defaults(func=main)


def main(args) -> int:
    _, cells = select_cells(args)
    print_cells(cells)
    return 0
