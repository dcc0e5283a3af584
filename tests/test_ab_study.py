"""benchmarks/ab_study.py: how the study decides its trials again, on literal trials with known answers."""

from __future__ import annotations

import importlib.util
import math

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("ab_study", REPO / "benchmarks" / "ab_study.py")
ab_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ab_study)


def trial(kind: str, units: list[float], firsts=("base", "new", "base", "new", "base")) -> dict:
    """One trial of one cell, five runs (process pairs) of two units each."""
    pooled = {"ratio": math.exp(sum(units) / len(units)), "low": None, "high": None, "sd": None}
    return {"kind": kind, "name": kind.upper(), "wall": 100.0, "alpha": 0.01, "rounds": 4, "exit": 0,
            "load_before": 0.5, "load_after": 0.9, "pooled": pooled,
            "cells": [{"cell": "lstm-l1-uni-cpu", "runs": [f"s{i}" for i in range(5)], "statuses": ["ok/ok"] * 5,
                       "first": list(firsts), "units": units, "ratio": pooled["ratio"], "low": None}]}


NOISE = [0.01, -0.01] * 5  # mean log-ratio 0, SD 0.0105


def test_an_injected_slowdown_is_found_from_the_threshold_up():
    rows, smallest = ab_study.sensitivity_rows([trial("aa", NOISE)] * 4, alpha=0.01)
    shares = {row[0]: row[1:] for row in rows}
    assert shares["1.00"] == ["0%", "0%", "0%"]  # no slowdown: never flagged at 3%, 5% or 10%
    assert shares["1.02"] == ["0%", "0%", "0%"]  # real, but below every threshold
    assert shares["1.04"] == ["100%", "0%", "0%"]
    assert shares["1.30"] == ["100%", "100%", "100%"]
    assert smallest[0.03] == 1.04 and smallest[0.05] == 1.06 and smallest[0.10] in (1.10, 1.12)


def test_an_injected_slowdown_is_not_found_in_noise_too_wide():
    wide = [0.3, 0.3, -0.3, -0.3] * 2 + [0.0, 0.0]  # runs of +-35%: within a run the units agree
    _, smallest = ab_study.sensitivity_rows([trial("aa", wide)], alpha=0.01)
    assert smallest == {}  # none up to 1.30x


def test_position_bias_separates_the_pairs_by_the_side_that_went_first():
    # Runs whose base side went first have the new side 4% faster; the others 1% slower (each run a little
    # off its group's mean, evenly both ways).
    run_means = [math.log(0.96) + 0.01, math.log(1.01) + 0.005, math.log(0.96) - 0.01, math.log(1.01) - 0.005,
                 math.log(0.96)]
    units = [u for mean in run_means for u in (mean, mean)]
    t = trial("aa", units, firsts=("base", "new", "base", "new", "base"))
    rows = ab_study.position_bias([t, t, trial("ab", [0.5] * 10)])  # A/B trials are left out
    assert [r[:3] for r in rows] == [["base first", "6", "0.960"], ["new first", "4", "1.010"]]


def test_the_summary_states_wall_time_sensitivity_and_bias(tmp_path):
    args = ab_study.parse_args(["--out", str(tmp_path), "--summary", str(tmp_path / "s.md")])
    text = ab_study.summarise(args, [trial("aa", NOISE), trial("ab", [math.log(1.2) + u for u in NOISE])])
    assert "median 100 s" in text and "at 3%: 1.04x; at 5%: 1.06x" in text and "| base first | 3 |" in text


def test_runs_are_read_from_run_units_when_a_trial_has_them():
    # Trials of the first design stored the units only (equal shares per run); now each run's are stored.
    cell = {"runs": ["s0", "s1"], "units": [0.1, 0.3, 0.5], "run_units": [[0.1, 0.3], [0.5]]}
    assert ab_study.run_means(cell) == pytest.approx([0.2, 0.5])
    assert ab_study.run_means({"runs": ["s0", "s1"], "units": [0.1, 0.3, 0.5, 0.7]}) == pytest.approx([0.2, 0.6])
    moved = ab_study.injected({"cells": [cell]}, 2.0)["cells"][0]
    assert moved["run_units"][1][0] == 0.5 + math.log(2.0) and moved["units"][0] == 0.1 + math.log(2.0)
