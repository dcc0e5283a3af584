"""The held-out text's own error from per-position losses: block differences with literal arrays, the
resampling, and its place in a claim's intervals and in the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.analysis.claims import default_claim, evaluate_claims
from harness.analysis.text_error import BLOCK, block_means, configuration_blocks, text_error
from harness.report import wording
from harness.report.build import build_report
from harness.results.losses import PositionLosses, write_losses

from fixtures import make_run_folder

BASELINES = {"uniform": 28.0, "unigram": 16.9, "bigram": 9.9}


def test_block_means_leave_a_partial_block_out():
    assert block_means(np.arange(10.0), block=4).tolist() == [1.5, 5.5]


def test_a_configurations_blocks_pair_seeds_and_otherwise_compare_means():
    a = {0: np.full(8, 1.0), 1: np.full(8, 2.0)}
    b = {0: np.full(8, 1.5), 1: np.full(8, 2.1)}
    assert configuration_blocks(a, b, block=4).tolist() == pytest.approx([0.3, 0.3])  # (0.5 + 0.1) / 2
    assert configuration_blocks({0: a[0]}, {1: b[1]}, block=4).tolist() == pytest.approx([1.1, 1.1])
    assert configuration_blocks(a, {}, block=4) is None
    assert configuration_blocks({0: np.ones(8)}, {0: np.ones(12)}, block=4) is None  # other texts


def test_a_difference_the_same_in_every_block_has_no_text_error_and_a_varying_one_has():
    steady = text_error([np.full(50, 0.1)], [1.0])
    assert steady.per_configuration[0] == pytest.approx(0.0, abs=1e-12) and steady.pooled == pytest.approx(0.0, abs=1e-12)
    assert steady.blocks == 50
    rng = np.random.default_rng(1)
    noisy = rng.normal(0.1, 0.2, size=400)
    error = text_error([noisy], [1.0])
    # The standard error of a mean of 400 independent blocks: 0.2 / 20.
    assert error.per_configuration[0] == pytest.approx(0.2 / 20, rel=0.15)
    # A shared text: two configurations with the same block pattern keep the whole error when pooled.
    shared = text_error([noisy, noisy + 0.05], [1.0, 1.0])
    assert shared.pooled == pytest.approx(error.per_configuration[0], rel=1e-9)


def uni_bi_cells(seeds=(0, 1, 2)):
    rows = []
    for cell in ("gru", "lstm", "rnn"):
        for direction, ppl in (("uni", 7.0), ("bi", 8.0)):
            for seed in seeds:
                rows.append({"cell_id": f"{cell}-l1-{direction}-cpu-s{seed}", "cell": cell, "layers": 1,
                             "direction": direction, "device": "cpu", "seed": seed, "status": "ok",
                             "causal_ppl": ppl * (1 + 0.002 * seed), "val_ppl": ppl, "train_ppl": ppl})
    return pd.DataFrame(rows)


def losses_for(cells: pd.DataFrame, spread: float) -> dict:
    """Per-position losses whose mean is each cell's log perplexity; the text's blocks differ by
    ``spread`` nats between bidirectional and unidirectional cells (the same pattern for every cell)."""
    rng = np.random.default_rng(7)
    pattern = rng.normal(0.0, spread, size=40)  # per block
    out = {}
    for row in cells.itertuples():
        per_block = np.log(row.causal_ppl) + (pattern if row.direction == "bi" else np.zeros_like(pattern))
        nats = np.repeat(per_block - per_block.mean() + np.log(row.causal_ppl), BLOCK)
        out[row.cell_id] = {"last": PositionLosses(500, nats)}
    return out


def test_the_text_widens_a_claims_intervals_and_says_by_how_much():
    cells = uni_bi_cells()
    spec = default_claim("bidirectional_useless")
    (plain,) = evaluate_claims(cells, pd.DataFrame(), pd.DataFrame(), [spec], None, BASELINES)
    (with_text,) = evaluate_claims(cells, pd.DataFrame(), pd.DataFrame(), [spec], None, BASELINES,
                                   losses=losses_for(cells, spread=0.3))
    assert with_text.ratio[0] == pytest.approx(plain.ratio[0])
    assert with_text.ratio[1] < plain.ratio[1] and with_text.ratio[2] > plain.ratio[2]
    assert (with_text.deciding["ci_high"] > plain.deciding["ci_high"]).all()
    share = with_text.pooled_table.iloc[0]["text_share"]
    assert 0.5 < share < 1  # seeds agree closely here: the text dominates
    assert any("comes from the text" in n for n in wording.notes(with_text))
    assert any("leave the held-out text's own sampling error out" in n for n in wording.notes(plain))


def test_the_report_shows_the_texts_share(tmp_path):
    run_dir = make_run_folder(tmp_path, claims=["bidirectional_useless"], seeds=(0, 1, 2))
    run = json.loads((run_dir / "run.json").read_text())
    run["baselines"] = {"uniform": 28.0, "unigram": 30.0, "bigram": 9.9, "tokens": 2000}
    (run_dir / "run.json").write_text(json.dumps(run))
    cells = pd.read_csv(run_dir / "cells.csv")
    for row in cells[cells["status"] == "ok"].itertuples():
        rng = np.random.default_rng(abs(hash(row.cell_id)) % 1000)
        nats = math.log(row.causal_ppl) + np.repeat(rng.normal(0, 0.05, 20), BLOCK)
        nats += math.log(row.causal_ppl) - nats.mean()
        write_losses(run_dir / "losses" / f"{row.cell_id}.npz", {"last": PositionLosses(4, nats)})
    markdown = (build_report(run_dir, tmp_path / "report") / "index.md").read_text()
    assert "of the pooled interval's variance comes from the text" in markdown
    assert "| from the text" in markdown or "from the text |" in markdown
