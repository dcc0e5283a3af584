"""What a new user meets first: the command's name, the plan and estimate before a run, errors that every
cell would hit stopping the run at once."""

from __future__ import annotations

import sys

import pytest

from harness import cli


@pytest.mark.parametrize("argv0, expected", [
    ("/home/u/.venv/bin/harness", "harness"),
    ("harness", "harness"),
    ("/home/u/rnn-harness/harness/__main__.py", "python -m harness"),
    ("/usr/bin/pytest", "python -m harness"),
])
def test_the_command_names_itself_by_how_it_was_called(argv0, expected):
    assert cli.prog_name(argv0) == expected


def test_usage_shows_the_console_script_name(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/home/u/.venv/bin/harness", "run"])
    assert cli.build_parser().format_usage().startswith("usage: harness ")
