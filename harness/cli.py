"""Command line: thin adapters over keyword functions; the exit code is the verdict.

Each subcommand lives in a module of ``harness.commands`` with a ``register(subparsers)`` function that
adds its parser and sets ``func`` (taking the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from harness import __version__
from harness.errors import HarnessError, is_write_error, os_error_line, shorten

MAX_MESSAGE = 1000
COMMANDS = ("cell", "run", "list", "show", "report", "compare", "ab", "history", "bisect", "baseline", "profile", "schema")


def prog_name(argv0: str | None = None) -> str:
    """How the user called the harness, for help and hints: the ``harness`` console script by its name,
    ``python -m harness`` otherwise."""
    name = os.path.basename(sys.argv[0] if argv0 is None else argv0)
    return name if name.startswith("harness") and not name.endswith(".py") else "python -m harness"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, given the arguments of one command, of that command alone: each
    command module imports what its options need, and a command need not pay for the others'."""
    parser = argparse.ArgumentParser(
        prog=prog_name(),
        description="Train, measure and compare character-level RNN language models.",
    )
    parser.add_argument("--version", action="version", version=f"rnn-harness {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    named = argv[0] if argv and argv[0] in COMMANDS else None
    for name in (named,) if named else COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a reader gone away is caught below and not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`harness show RUN | head`): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool a closed pipe stopped
    except HarnessError as exc:
        # One bounded line whatever the message quotes (a path, a value the user wrote).
        print(f"error: {shorten(str(exc).replace(chr(10), ' '), MAX_MESSAGE)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # The last line of defence for a write outside results.atomic (a log, a copied figure): a full
        # disk or a forbidden path is the user's to fix, not a bug. Any other OSError keeps its traceback.
        if not is_write_error(exc):
            raise
        print(f"error: {shorten(os_error_line(exc), MAX_MESSAGE)}", file=sys.stderr)
        return 2
