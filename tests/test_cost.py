"""The a-priori cost model (harness/cost.py) against what committed quiet runs took."""

import json
from pathlib import Path

import pytest

from harness.config import CellConfig
from harness.cost import estimate_seconds, evaluations

RESULTS = Path(__file__).resolve().parent.parent / "results"


def config(**changes) -> CellConfig:
    return CellConfig(**{"cell": "lstm", "layers": 2, "direction": "uni", "hidden": 256, "epochs": 500,
                         "eval_every": 50, "val_tokens": 5000, **changes})


def test_evaluations_every_n_epochs_and_after_the_last():
    assert evaluations(config()) == 10  # the 10th is the last epoch's
    assert evaluations(config(epochs=30, eval_every=7)) == 5
    assert evaluations(config(eval_every=0)) == 1
    assert evaluations(config(val_tokens=0)) == 0


def test_cost_grows_with_what_a_cell_computes():
    base = estimate_seconds(config())
    assert estimate_seconds(config(layers=3)) > base
    assert estimate_seconds(config(direction="bi")) > base
    assert estimate_seconds(config(hidden=512)) > base
    assert estimate_seconds(config(threads=1)) > estimate_seconds(config(threads=2))
    assert estimate_seconds(config(val_tokens=0)) < base


@pytest.mark.parametrize("run", ["full-cpu-timing", "example"])
def test_estimates_match_the_committed_quiet_runs(run):
    """Within 25% per cell and 10% for the whole run: the check `harness list` must pass against a run
    it estimated (these runs were taken with nothing else on the machine)."""
    measured, estimated = 0.0, 0.0
    records = sorted((RESULTS / run / "cells").glob("*.json"))
    assert records
    for path in records:
        record = json.loads(path.read_text())
        estimate = estimate_seconds(CellConfig(**record["config"]))
        assert 0.75 < record["total_sec"] / estimate < 1.25, (path.name, record["total_sec"], estimate)
        measured, estimated = measured + record["total_sec"], estimated + estimate
    assert 0.9 < measured / estimated < 1.1
