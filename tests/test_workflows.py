"""The workflows a maintainer copies: they parse, and every harness command they run exists with the
flags they give it."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from harness.cli import build_parser

from conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def harness_calls(script: str) -> list[list[str]]:
    """Each ``python -m harness ...`` command line of a step's script, as arguments after ``harness``."""
    calls = []
    for line in script.replace("\\\n", " ").splitlines():
        line = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", line)
        if "-m harness " in line:
            words = shlex.split(line.split("-m harness ", 1)[1])
            calls.append(words)
    return calls


def subcommand_flags(name: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[name]
    return {option for action in sub._actions for option in action.option_strings}


def test_there_are_a_speed_and_a_test_workflow():
    assert {p.name for p in WORKFLOWS} == {"speed.yml", "test.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_a_workflow_parses_and_its_harness_commands_exist_with_their_flags(path):
    workflow = yaml.safe_load(path.read_text())
    assert workflow["name"] and workflow["jobs"]
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for call in harness_calls(step.get("run", "")):
                command, args = call[0], call[1:]
                flags = subcommand_flags(command)
                for arg in args:
                    if arg.startswith("--"):
                        assert arg.split("=")[0] in flags, f"{path.name}: harness {command} has no {arg}"


def test_the_speed_workflow_runs_ab_with_the_constraints_and_fails_on_its_exit_code():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "speed.yml").read_text())
    steps = workflow["jobs"]["ab"]["steps"]
    scripts = "\n".join(step.get("run", "") for step in steps)
    assert "-c constraints.txt" in scripts
    (call,) = [c for c in harness_calls(scripts)]
    assert call[0] == "ab" and "--markdown" in call and "--base" in call and "--new" in call
    assert steps[-1]["run"] == "exit ${{ steps.ab.outputs.code }}"
    assert any("sticky-pull-request-comment" in step.get("uses", "") for step in steps)
    test = yaml.safe_load((REPO / ".github" / "workflows" / "test.yml").read_text())
    assert "bash .ci/run" in test["jobs"]["test"]["steps"][-1]["run"]
