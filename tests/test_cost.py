"""The a-priori cost model (harness/cost.py) against what committed quiet runs took."""

import json
from pathlib import Path

import pytest

from harness.spec.config import CellConfig
from harness.cell.cost import estimate_seconds, evaluation_seconds, evaluations

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


def test_an_evaluation_costs_what_it_reads_not_what_training_reads():
    base = evaluation_seconds(config())
    assert evaluation_seconds(config(max_tokens=100_000)) == base and evaluation_seconds(config(batch_size=8)) == base
    assert evaluation_seconds(config(val_tokens=10_000)) > base and evaluation_seconds(config(num_steps=70)) > base
    assert evaluation_seconds(config(direction="bi")) > 2 * base - 0.2  # two passes (teacher-forced, causal)
    assert evaluation_seconds(config(val_tokens=0)) == 0


# Cells of results/full-cpu trained with nothing else on the machine but the run's two cells (one thread
# each): load average at most 2.3 when they started and ended (the run's other cells trained while tests
# and other work shared the machine and took up to twice their estimate).
QUIET_LOAD = 2.3


def quiet_full_cpu_cells() -> list[str]:
    records = [json.loads(p.read_text()) for p in sorted((RESULTS / "full-cpu" / "cells").glob("*.json"))]
    return [r["cell_id"] for r in records if max(r["load_start"], r["load_end"]) <= QUIET_LOAD]


@pytest.mark.parametrize("run, cells", [("full-cpu-timing", None), ("example", None), ("full-cpu", quiet_full_cpu_cells())])
def test_estimates_match_the_committed_quiet_runs(run, cells):
    """Within 25% per cell and 10% for the whole run: the check `harness list` must pass against a run
    it estimated (these runs were taken with nothing else on the machine)."""
    measured, estimated = 0.0, 0.0
    records = sorted((RESULTS / run / "cells").glob("*.json"))
    if cells is not None:
        records = [path for path in records if path.stem in cells]
        assert len(records) == len(cells) >= 40
    assert records
    for path in records:
        record = json.loads(path.read_text())
        estimate = estimate_seconds(CellConfig(**record["config"]))
        assert 0.75 < record["total_sec"] / estimate < 1.25, (path.name, record["total_sec"], estimate)
        measured, estimated = measured + record["total_sec"], estimated + estimate
    assert 0.9 < measured / estimated < 1.1


def test_list_gives_each_devices_estimate_apart(tmp_path):
    from harness.commands.run import estimate_text
    from harness.spec.suite import expand, load_suite

    suite = tmp_path / "two.yaml"
    suite.write_text("name: two\ndata: {corpus: time-machine}\nmodel: {hidden: 256}\ntrain: {epochs: 500}\n"
                     "matrix: {device: [cpu, cuda], layers: [1, 2]}\n")
    cells = expand(load_suite(suite))
    text = estimate_text(cells)
    assert text.startswith("4 cells, estimated ") and "for the 2 CPU cells and " in text and "for the 2 CUDA cells" in text
    one = [c for c in cells if c.config.device == "cpu"][:1]
    assert "for the 1 CPU cell," in estimate_text(one)


def test_fused_gru_and_rnn_cost_less_and_lstm_is_unchanged():
    for cell in ("gru", "rnn"):
        assert estimate_seconds(config(cell=cell, impl="fused")) < estimate_seconds(config(cell=cell))
    assert estimate_seconds(config(cell="lstm", impl="fused")) == estimate_seconds(config())


def test_selection_evaluations_add_their_cost():
    base = estimate_seconds(config())
    selected = config(select_tokens=2000, select_every=10)
    assert estimate_seconds(selected) > base
    # Streamed for a unidirectional cell: far cheaper per token than a bidirectional cell's windows.
    from harness.cell.cost import epoch_seconds, selection_seconds
    assert selection_seconds(selected) < 0.2 * epoch_seconds(selected)
    bi = config(direction="bi", select_tokens=2000, select_every=10)
    assert selection_seconds(bi) > 0.5 * epoch_seconds(bi)


def test_cell_flops_counts_training_and_every_evaluation():
    from harness.cell.cost import cell_flops

    # A 1-layer tanh RNN of hidden 4 over 28 characters: 2 * 4 * (28 + 4) + 2 * 4 * 28 = 480 FLOPs per token
    # forward; an epoch trains on 8 windows of 32 x 35 = 8,960 tokens, forward and backward (3x); a held-out
    # evaluation reads a window of 36 characters per token.
    small = dict(cell="rnn", layers=1, hidden=4, epochs=2, eval_every=1, val_tokens=100)
    assert cell_flops(config(**small)) == (3 * 2 * 8960 * 480, 2 * 100 * 36 * 480)
    # Bidirectional: twice the forward work per token; its causal pass reads the windows again without
    # their last character.
    assert cell_flops(config(**small, direction="bi")) == (3 * 2 * 8960 * 960, 2 * 100 * (36 + 35) * 960)
    # Selection text every epoch, streamed for a unidirectional cell: 50 targets are one segment of 256
    # after 35 characters of context (290 positions); the held-out text is read once more at the chosen epoch.
    selected = config(**small, select_tokens=50, select_every=1)
    assert evaluations(selected) == 3
    assert cell_flops(selected)[1] == 3 * 100 * 36 * 480 + 2 * 290 * 480
    # A bidirectional cell's selection text: one window of 35 characters per target.
    selected_bi = config(**small, direction="bi", select_tokens=50, select_every=1)
    assert cell_flops(selected_bi)[1] == 3 * 100 * 71 * 960 + 2 * 50 * 35 * 960


def test_list_gives_the_arithmetic_and_its_time_at_a_rate(tmp_path, capsys):
    from harness import cli

    suite = tmp_path / "one.yaml"
    suite.write_text("name: one\ndata: {corpus: time-machine, val_tokens: 100}\n"
                     "model: {hidden: 4}\ntrain: {epochs: 2}\neval: {every: 1}\nmatrix: {cell: [rnn], layers: [1]}\n")
    assert cli.main(["list", str(suite), "--flop-rate", "0.001"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    # 25,804,800 + 3,456,000 FLOPs at 1 MFLOP/s: 29.3 s.
    assert last == ("matrix-product work: CPU: 29.3 MFLOP (training 25.8 MFLOP, evaluation 3.46 MFLOP), "
                    "29 s at 0.001 GFLOP/s")
    patient = tmp_path / "patient.yaml"
    patient.write_text(suite.read_text().replace("train: {epochs: 2}", "train: {epochs: 2, patience: 1}")
                       .replace("val_tokens: 100}", "val_tokens: 100, select_tokens: 50}")
                       .replace("eval: {every: 1}", "eval: {every: 1, select_every: 1}"))
    assert cli.main(["list", str(patient), "--flop-rate", "cpu=0.001"]) == 0
    assert capsys.readouterr().out.strip().endswith("at 0.001 GFLOP/s (at most: cells with patience stop early)")
    assert cli.main(["list", str(suite), "--flop-rate", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --flop-rate 0: must be a number of GFLOP/s from 0.001 to 1e+09"


@pytest.mark.parametrize("values, devices, message", [
    (["inf"], {"cpu"}, "--flop-rate inf: must be a number of GFLOP/s from 0.001 to 1e+09"),
    (["nan"], {"cpu"}, "--flop-rate nan: must be a number of GFLOP/s"),
    (["-5"], {"cpu"}, "--flop-rate -5: must be a number of GFLOP/s"),
    (["fast"], {"cpu"}, "--flop-rate fast: 'fast' is not a number of GFLOP/s"),
    (["gpu=3"], {"cpu"}, "--flop-rate gpu=3: unknown device 'gpu' (one of cpu, cuda)"),
    (["178"], {"cpu", "cuda"}, "--flop-rate 178: the cells run on cpu and cuda; give a rate per device (e.g. cpu=178)"),
    (["cpu=10", "20"], {"cpu"}, "--flop-rate 20: a second rate for cpu; give one per device"),
])
def test_bad_flop_rates_are_one_line_errors(values, devices, message):
    from harness.commands.list import parse_flop_rates
    from harness.errors import HarnessError

    with pytest.raises(HarnessError) as error:
        parse_flop_rates(values, devices)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_flop_rates_per_device():
    from harness.commands.list import parse_flop_rates

    assert parse_flop_rates(["178"], {"cpu"}) == {"cpu": 178e9}
    assert parse_flop_rates(["cpu=178", "CUDA=2e4"], {"cpu", "cuda"}) == {"cpu": 178e9, "cuda": 2e13}
    assert parse_flop_rates([], {"cpu"}) == {}
