"""The speed-regression decision on literal samples, and `harness compare` / `harness baseline` on small run
folders built from literal data (run.json, cells.csv, epochs.csv as in docs/results-format.md).

In the fixture run folders each matched cell has several runs (seeds); a run's epochs are its level times
``SHAPE``, so its median is the level times a constant and the verdicts on run medians are those of the
levels themselves."""

from __future__ import annotations

import csv
import json
import math

import pytest

from harness.results.speed_baselines import list_baselines, load_baseline, read_baseline_file, save_baseline
from harness.cli import main as cli
from harness.analysis.speed_compare import (Threshold, compare_measurements, compare_runs, compare_samples, match_cells, METRICS,
                                            package_differences, provenance_differences)
from harness.results.speed_measurements import read_run
from harness.spec.config import CellConfig
from harness.errors import HarnessError
from harness.host.machine import describe, machine_id
from harness.analysis.stats import enough_runs, relative_spread, runs_needed

# Distinct values (no ties), so that scipy uses the exact Mann-Whitney distribution.
BASE = [1.000, 1.012, 0.991, 1.021, 0.982, 1.004, 1.015, 0.995]
NOISE = [1.013, 0.993, 1.002, 1.019, 0.985, 1.006, 1.025, 0.978]
SLOWER = [v * 1.3 for v in BASE]
FASTER = [v * 0.7 for v in BASE]

MACHINE = {"hostname": "bench-1", "cpu_model": "Test CPU 9000", "cpu_count": 2, "memory_bytes": 8_000_000_000,
           "gpu_name": None, "python": "3.11.7", "torch": "2.13.0", "cuda": None, "cudnn": None}


# ------------------------------------------------------------------------------------------ decision


def test_clear_regression_is_flagged():
    c = compare_samples(BASE, SLOWER, "10%", alpha=0.01)
    assert c.verdict == "regression"
    assert c.ratio == pytest.approx(1.3)
    # 8 against 8 with no overlap: the exact two-sided p is 2 / C(16, 8)
    assert c.p_value == pytest.approx(2 / math.comb(16, 8))
    assert c.ci_low <= c.ratio <= c.ci_high
    assert c.ci_low > 1.1


def test_noise_only_is_not_flagged():
    c = compare_samples(BASE, NOISE, "10%", alpha=0.01)
    assert c.verdict == "same"
    assert c.p_value > 0.5
    assert c.ci_low < 1 < c.ci_high


def test_improvement_is_reported_and_symmetric_on_a_log_scale():
    assert compare_samples(BASE, FASTER).verdict == "improvement"
    # 0.95x is within 1/1.1 = 0.909 of the baseline even though it is significant
    slightly_faster = [v * 0.95 for v in BASE]
    c = compare_samples(BASE, slightly_faster, "10%")
    assert c.significant and c.verdict == "same"
    assert compare_samples(BASE, [v * 0.85 for v in BASE], "10%").verdict == "improvement"


def test_significant_but_small_slowdown_is_not_a_regression():
    c = compare_samples(BASE, [v * 1.05 for v in BASE], "10%")
    assert c.significant
    assert c.verdict == "same"
    assert compare_samples(BASE, [v * 1.05 for v in BASE], "2%").verdict == "regression"


def test_a_slowdown_is_a_regression_only_when_its_whole_interval_is_beyond_the_threshold():
    base = runs([1.00, 1.01, 0.99, 1.02, 0.98])
    # every new run slower (p = 2 / C(10, 5)) and the median ratio 1.13, but the interval reaches below 1.1
    c = compare_runs(base, runs([1.10, 1.12, 1.20, 1.25, 1.13]), "10%", alpha=0.01)
    assert c.significant and c.ratio == pytest.approx(1.13)
    assert c.ci_low < 1.1 < c.ratio
    assert c.verdict == "same"
    c = compare_runs(base, runs([1.30, 1.32, 1.40, 1.45, 1.33]), "10%", alpha=0.01)
    assert c.ci_low > 1.1 and c.verdict == "regression"
    # the mirror image for improvements
    c = compare_runs(base, runs([0.80, 0.82, 0.75, 0.78, 0.83]), "10%", alpha=0.01)
    assert c.ci_high < 1 / 1.1 and c.verdict == "improvement"
    c = compare_runs(base, runs([0.90, 0.88, 0.80, 0.78, 0.91]), "10%", alpha=0.01)
    assert c.significant and c.ratio < 1 / 1.1 < c.ci_high and c.verdict == "same"


def test_large_but_insignificant_slowdown_is_not_a_regression():
    base = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    new = [1.3, 2.4, 3.3, 1.1, 2.5, 2.9]
    c = compare_samples(base, new, "10%")
    assert c.ratio > 1.1
    assert not c.significant
    assert c.verdict == "same"


def test_too_few_runs():
    # 3 against 3 cannot reach p < 0.01 whatever the data: the smallest two-sided p is 2 / C(6, 3) = 0.1
    c = compare_samples([1.0, 1.1, 1.2], [2.0, 2.1, 2.2], "10%", alpha=0.01)
    assert c.verdict == "too few runs"
    assert c.ratio == pytest.approx(2.1 / 1.1)  # still shown
    assert compare_samples([1.0], SLOWER).verdict == "too few runs"
    assert compare_samples([], SLOWER).verdict == "too few runs"
    assert enough_runs(5, 5, 0.01)  # 2 / 252 < 0.01
    assert not enough_runs(4, 5, 0.01)  # 2 / 126 > 0.01
    assert enough_runs(4, 4, 0.05)
    assert not enough_runs(2, 100, 0.05)  # fewer than MIN_RUNS on one side
    assert (runs_needed(0.01), runs_needed(0.05), runs_needed(0.001)) == (5, 4, 7)
    # one run per side, however many epochs: nothing can be decided
    c = compare_runs([BASE], [SLOWER])
    assert c.verdict == "too few runs" and c.ratio == pytest.approx(1.3)


SHAPE = (1.000, 1.012, 0.991, 1.021)  # the epochs of a run at level 1 (median 1.006)


def runs(levels) -> list[tuple[float, ...]]:
    return [tuple(level * v for v in SHAPE) for level in levels]


def test_the_run_is_the_unit_so_a_level_shift_between_processes_is_noise():
    # Epochs within a run agree to 3%, but the level moves from run to run, as measured on a shared
    # machine: four of five new runs happen to be slow.
    base = runs([1.00, 1.01, 0.99, 1.02, 0.98])
    new = runs([1.25, 0.995, 1.23, 1.24, 1.26])
    c = compare_runs(base, new, "10%", alpha=0.01)
    assert c.base == pytest.approx([level * 1.006 for level in (1.00, 1.01, 0.99, 1.02, 0.98)])
    assert c.ratio == pytest.approx(1.24)
    assert not c.significant and c.verdict == "same"
    # pooling the epochs as if they were independent draws would call the same data a regression
    pooled = compare_samples([v for r in base for v in r], [v for r in new for v in r], "10%", alpha=0.01)
    assert pooled.verdict == "regression"
    # every new run slower: a regression
    c = compare_runs(base, runs([1.25, 1.26, 1.23, 1.27, 1.24]), "10%")
    assert c.verdict == "regression" and not c.noisy
    assert c.p_value == pytest.approx(2 / math.comb(10, 5))
    assert c.ci_low <= c.ratio <= c.ci_high


def test_runs_keep_their_raw_epochs_and_empty_runs_are_left_out():
    c = compare_runs([(1.0, 2.0, 9.0), (), (3.0,)], [(1.0,), (2.0,)])
    assert c.base_runs == ((1.0, 2.0, 9.0), (3.0,))
    assert c.base == (2.0, 3.0)
    assert c.new_median == 1.5


def test_relative_spread_is_the_interquartile_range_over_the_median():
    assert relative_spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((4.0 - 2.0) / 3.0)
    assert relative_spread([1.0, 1.0, 1.0, 1.0, 9.0]) == 0.0  # one outlying run does not make it noisy
    assert math.isnan(relative_spread([1.0]))
    # runs that disagree by more than the threshold make a comparison noisy
    tight = runs([1.00, 1.01, 0.99, 1.02, 0.98])
    assert compare_runs(tight, runs([1.0, 1.2, 0.9, 1.1, 1.3]), "10%").noisy
    assert not compare_runs(tight, runs([1.0, 1.2, 0.9, 1.1, 1.3]), "20%").noisy
    assert not compare_runs(tight, tight, "10%").noisy


def test_higher_is_better_swaps_the_directions():
    tokens_per_sec = [1000 / v for v in BASE]
    fewer = [1000 / v for v in SLOWER]
    assert compare_samples(tokens_per_sec, fewer, higher_is_better=True).verdict == "regression"
    assert compare_samples(fewer, tokens_per_sec, higher_is_better=True).verdict == "improvement"


def test_interval_is_deterministic():
    a = compare_samples(BASE, NOISE)
    b = compare_samples(BASE, NOISE)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)


@pytest.mark.parametrize("text, fraction", [("10%", 0.10), ("median:10%", 0.10), ("2.5%", 0.025),
                                            (" Median:5% ", 0.05), ("0%", 0.0)])
def test_threshold_parsing(text, fraction):
    t = Threshold.parse(text)
    assert t.fraction == pytest.approx(fraction)
    assert t.stat == "median"
    assert Threshold.parse(str(t)) == t


@pytest.mark.parametrize("text", ["10", "0.1", "mean:10%", "min:5%", "abc", "-5%", "median:%", "", "10%%",
                                  "2000%"])
def test_bad_thresholds_are_refused(text):
    with pytest.raises(HarnessError, match="threshold"):
        Threshold.parse(text)


def test_bad_alpha_is_refused():
    with pytest.raises(HarnessError, match="alpha"):
        compare_samples(BASE, NOISE, alpha=1.5)


def test_provenance_differences():
    other = dict(MACHINE, torch="2.14.0", cpu_model="Other CPU", hostname="bench-2")
    diff = provenance_differences(MACHINE, other)
    assert diff == ["cpu_model: 'Test CPU 9000' -> 'Other CPU'", "torch: '2.13.0' -> '2.14.0'"]
    assert provenance_differences(MACHINE, dict(MACHINE, hostname="twin")) == []  # same model: comparable
    assert provenance_differences(MACHINE, {}) != []


def test_dependency_versions_that_differ_are_said_not_refused():
    base = dict(MACHINE, packages={"numpy": "2.4.6", "pandas": "3.1.1", "ray": None})
    new = dict(MACHINE, packages={"numpy": "2.5.0", "pandas": "3.1.1", "ray": "2.60.0"})
    assert package_differences(base, new) == ["numpy: '2.4.6' -> '2.5.0'", "ray: None -> '2.60.0'"]
    assert provenance_differences(base, new) == []  # comparable: the machine and torch are the same
    assert package_differences(MACHINE, new) == []  # a run.json from before versions were recorded


# ----------------------------------------------------------------------------------- fixture run folders


def cell(secs, status="ok", suffix="", ran_on=None, **config) -> dict:
    """A literal cell: configuration overrides and raw per-epoch seconds (the first is the warm-up);
    ``suffix`` extends the cell id as the runner does for other matrix axes; ``ran_on``: the cell's own
    cpu_model and gpu_name (a Ray node), by default the run's machine."""
    return {"config": dict({"hidden": 8, "epochs": len(secs)}, **config), "sec": secs, "status": status,
            "suffix": suffix, "ran_on": ran_on}


def write_run(folder, cells, machine=MACHINE, tokens=1120, cpu_rate=100e9):
    """Write run.json, cells.csv and epochs.csv of a finished run holding ``cells``; ``cpu_rate``: the
    calibrated float32 matrix-product rate at the run's start."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "suite": {"name": "fixture"}, "git": {"commit": "0123456789abcdef", "dirty": False},
        "machine": machine, "threads": 2, "started": "2024-01-01T00:00:00+00:00",
        "calibration": {"cpu": {"flops_per_sec": cpu_rate, "size": 2048, "samples_sec": [0.17], "threads": 2}}}))
    config_columns = [k for k in CellConfig.model_fields if k != "cuda_graphs"]
    cell_rows, epoch_rows = [], []
    for c in cells:
        cfg = CellConfig(**c["config"])
        cell_id = cfg.cell_id + c["suffix"]
        values = cfg.model_dump()
        row = {k: ("|".join(map(str, v)) if isinstance(v, (list, tuple)) else "" if v is None else v) for k, v in values.items()
               if k in config_columns}
        timed = sorted(c["sec"][1:])
        ran_on = c["ran_on"] or machine
        row.update(cell_id=cell_id, config_hash=cfg.config_hash(), status=c["status"], reason="",
                   sec_per_epoch=timed[len(timed) // 2] if timed else "",
                   cpu_model=ran_on["cpu_model"], gpu_name=ran_on["gpu_name"] or "")
        cell_rows.append(row)
        for epoch, sec in enumerate(c["sec"], start=1):
            epoch_rows.append({"cell_id": cell_id, "cell": cfg.cell, "layers": cfg.layers,
                               "direction": cfg.direction, "device": cfg.device, "seed": cfg.seed,
                               "epoch": epoch, "train_ppl": 20.0, "sec": sec, "tokens_per_sec": tokens / sec,
                               "warmup": epoch == 1, "val_ppl": "", "causal_ppl": ""})
    for name, rows in (("cells.csv", cell_rows), ("epochs.csv", epoch_rows)):
        with open(folder / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


WARM = 3.0  # a slow first epoch, which must never enter the comparison


def cells_of(levels, **config) -> list[dict]:
    """One cell per level, seeds 0, 1, ...: the runs of one matched cell, each a warm-up epoch and then
    its level times SHAPE."""
    return [cell([WARM] + [level * v for v in SHAPE], seed=seed, **config) for seed, level in enumerate(levels)]


def two_cells(lstm_levels, gru_levels, **extra):
    return cells_of(lstm_levels, cell="lstm", direction="bi", **extra) + \
        cells_of(gru_levels, cell="gru", layers=1, **extra)


def test_read_run_excludes_warmup_and_canonicalises_config(tmp_path):
    run = read_run(write_run(tmp_path / "a", [cell([WARM] + BASE, cell="lstm", direction="bi", threads=2)]))
    lstm = next(c for c in run.cells if c.config["cell"] == "lstm")
    assert lstm.samples(METRICS["sec_per_epoch"]) == tuple(BASE)
    assert lstm.sec[0] == WARM and lstm.warmup[0]
    assert lstm.config == CellConfig(hidden=8, epochs=9, cell="lstm", direction="bi", threads=2).model_dump(mode="json")
    assert run.machine == MACHINE


def test_cells_match_by_configuration_seeds_are_the_runs(tmp_path):
    base = read_run(write_run(tmp_path / "a", [cell([WARM] + BASE[:4], seed=0), cell([WARM] + BASE[4:], seed=1),
                                               cell([WARM] + BASE, hidden=16, suffix="-hidden16")]))
    # epochs and eval_every differ but do not change the cost of an epoch
    new = read_run(write_run(tmp_path / "b", [cell([WARM] + NOISE, seed=3, eval_every=0),
                                              cell([WARM] + NOISE, layers=3)]))
    m = match_cells(base, new, METRICS["sec_per_epoch"])
    assert len(m.pairs) == 1
    pair = m.pairs[0]
    assert pair.base_runs == (tuple(BASE[:4]), tuple(BASE[4:]))  # seeds 0 and 1: two runs
    assert pair.new_runs == (tuple(NOISE),)
    assert pair.base_ids == ("lstm-l2-uni-cpu-s0", "lstm-l2-uni-cpu-s1")
    assert m.only_base == ("lstm-l2-uni-cpu-hidden=16",)
    # hidden varies among the cells shown, so the labels name it
    assert pair.label == "lstm-l2-uni-cpu-hidden=8"
    assert m.only_new == ("lstm-l3-uni-cpu-hidden=8",)


def test_cells_that_differ_only_in_val_tokens_match(tmp_path):
    # Held-out tokens are read only by the evaluation, which an epoch's time leaves out.
    base = read_run(write_run(tmp_path / "a", [cell([WARM] + BASE, val_tokens=5000)]))
    new = read_run(write_run(tmp_path / "b", [cell([WARM] + NOISE, val_tokens=200)]))
    m = match_cells(base, new, METRICS["sec_per_epoch"])
    assert len(m.pairs) == 1 and not m.only_base and not m.only_new


def test_mismatched_cells_are_refused(tmp_path):
    base = read_run(write_run(tmp_path / "a", [cell([WARM] + BASE, hidden=8)]))
    new = read_run(write_run(tmp_path / "b", [cell([WARM] + BASE, hidden=16)]))
    with pytest.raises(HarnessError, match="no cell in common"):
        compare_measurements(base, new)


def test_ignored_key_lets_a_setting_be_compared(tmp_path):
    base = read_run(write_run(tmp_path / "a", cells_of(BASE, threads=2)))
    new = read_run(write_run(tmp_path / "b", cells_of(SLOWER, threads=1)))
    with pytest.raises(HarnessError, match="no cell in common"):
        compare_measurements(base, new)
    report = compare_measurements(base, new, ignore=["threads"])
    assert [r.comparison.verdict for r in report.results] == ["regression"]
    with pytest.raises(HarnessError, match="not a configuration key"):
        compare_measurements(base, new, ignore=["thread"])


def test_unfinished_cells_are_not_compared(tmp_path):
    base = read_run(write_run(tmp_path / "a", two_cells(BASE, BASE)))
    new = read_run(write_run(tmp_path / "b", cells_of(NOISE, cell="lstm", direction="bi")
                             + cells_of(SLOWER, cell="gru", layers=1, status="diverged")))
    report = compare_measurements(base, new)
    assert [r.cell.label for r in report.results] == ["lstm-l2-bi-cpu"]
    assert report.matching.not_ok[0].startswith("gru-l1-uni-cpu-s0 (diverged)")
    assert report.exit_code == 0


def test_unfinished_cells_are_summarised_in_one_line_skipped_ones_as_a_count(tmp_path, capsys):
    base = write_run(tmp_path / "a", two_cells(BASE, BASE)
                     + [cell([WARM] + BASE, status="skipped", device="cuda", seed=s) for s in range(40)])
    new = write_run(tmp_path / "b", two_cells(NOISE, BASE)
                    + [cell([WARM] + BASE, status="skipped", device="cuda", seed=s) for s in range(40)]
                    + [cell([WARM], status="diverged", cell="rnn", layers=1, seed=s) for s in range(5)])
    assert cli(["compare", str(base), str(new)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("not finished")]
    assert lines == ["not finished (not compared): 40 skipped in baseline; 40 skipped in new; 5 diverged in new "
                     "(rnn-l1-uni-cpu-s0, rnn-l1-uni-cpu-s1, rnn-l1-uni-cpu-s2, ...)"]


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_regression_exits_1(tmp_path, capsys):
    a = write_run(tmp_path / "a", two_cells(BASE, BASE))
    b = write_run(tmp_path / "b", two_cells(SLOWER, NOISE))
    assert cli(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("lstm", "gru"))}
    assert lines["lstm-l2-bi-cpu"].rstrip().endswith("regression")
    assert lines["gru-l1-uni-cpu"].rstrip().endswith("same")
    assert "8/8" in lines["lstm-l2-bi-cpu"]  # eight runs (seeds) a side
    assert f"{BASE[0] * SHAPE[1]:.4g} s" not in out  # the medians are of runs, not of epochs
    assert out.splitlines()[-1].startswith("REGRESSION: 1 regressed, 0 improved, 1 same")


def test_cli_too_few_runs_everywhere_is_undecided_and_exits_2(tmp_path, capsys):
    a = write_run(tmp_path / "a", [cell([WARM] + BASE, cell="lstm")])
    b = write_run(tmp_path / "b", [cell([WARM] + SLOWER, cell="lstm")])
    assert cli(["compare", str(a), str(b)]) == 2
    out = capsys.readouterr().out
    assert "too few runs" in out
    assert out.splitlines()[-1].startswith("UNDECIDED: 0 regressed, 0 improved, 0 same, 1 with too few runs")
    assert "needs 5 runs per side at alpha 0.01" in out
    # one cell decided, another not: the decided one gives the exit code
    a = write_run(tmp_path / "c", cells_of(BASE, cell="gru") + [cell([WARM] + BASE, cell="lstm")])
    b = write_run(tmp_path / "d", cells_of(NOISE, cell="gru") + [cell([WARM] + SLOWER, cell="lstm")])
    assert cli(["compare", str(a), str(b)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK: 0 regressed, 0 improved, 1 same, 1 with too")


def test_cli_noise_and_improvement_exit_0(tmp_path, capsys):
    a = write_run(tmp_path / "a", two_cells(BASE, BASE))
    b = write_run(tmp_path / "b", two_cells(NOISE, FASTER))
    assert cli(["compare", str(a), str(b)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK: 0 regressed, 1 improved, 1 same")


def test_cli_says_when_the_machine_itself_ran_at_another_speed(tmp_path, capsys):
    a = write_run(tmp_path / "a", two_cells(BASE, BASE), cpu_rate=150e9)
    b = write_run(tmp_path / "b", two_cells(NOISE, NOISE), cpu_rate=110e9)
    assert cli(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "!! machine speed at each run's start (cpu, calibrated float32 matrix product): 150 -> 110 GFLOP/s " \
           "(0.733x)" in out
    assert "the machine itself was faster or slower by more than the threshold" in out
    c = write_run(tmp_path / "c", two_cells(NOISE, NOISE), cpu_rate=145e9)
    assert cli(["compare", str(a), str(c)]) == 0
    out = capsys.readouterr().out
    assert "machine speed at each run's start (cpu, calibrated float32 matrix product): 150 -> 145" in out
    assert "!!" not in out


def test_cli_threshold_changes_the_verdict(tmp_path):
    a = write_run(tmp_path / "a", two_cells(BASE, BASE))
    b = write_run(tmp_path / "b", two_cells([v * 1.05 for v in BASE], BASE))
    assert cli(["compare", str(a), str(b)]) == 0
    assert cli(["compare", str(a), str(b), "--threshold", "median:2%"]) == 1
    assert cli(["compare", str(a), str(b), "--threshold", "2%", "--metric", "tokens_per_sec"]) == 1


def test_cli_bad_input_exits_2(tmp_path, capsys):
    a = write_run(tmp_path / "a", two_cells(BASE, BASE))
    other = write_run(tmp_path / "other", [cell([WARM] + BASE, hidden=64)])
    assert cli(["compare", str(a), str(other)]) == 2
    assert "no cell in common" in capsys.readouterr().err
    assert cli(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert cli(["compare", str(a), str(a), "--threshold", "ten"]) == 2
    broken = write_run(tmp_path / "broken", two_cells(BASE, BASE))
    (broken / "epochs.csv").unlink()
    assert cli(["compare", str(a), str(broken)]) == 2
    err = capsys.readouterr().err
    assert "epochs.csv: missing" in err and "Traceback" not in err
    (broken / "epochs.csv").write_text("cell_id,epoch\nx,1\n")
    assert cli(["compare", str(a), str(broken)]) == 2
    assert "missing column(s) sec" in capsys.readouterr().err
    (broken / "run.json").write_text("{not json")
    assert cli(["compare", str(a), str(broken)]) == 2
    assert "run.json: unreadable" in capsys.readouterr().err


def _replace_in_epochs(run_dir, old: str, new: str) -> None:
    path = run_dir / "epochs.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("old, new, message", [
    (",2,20.0,", ",two,20.0,", "epoch 'two' is not a whole number"),
    (",2,20.0,", ",2.5,20.0,", "epoch '2.5' is not a whole number"),
    (",3,20.0,", ",2,20.0,", "epoch 2 appears more than once"),
    (",2,20.0,1.0,", ",2,20.0,fast,", "epoch 2 sec: 'fast' is not a number"),
    (",2,20.0,1.0,", ",2,20.0,-1.0,", "epoch 2 sec: '-1.0' is not a positive finite number"),
    ("True", "maybe", "epoch 1 warmup: 'maybe' is not true or false"),
    ("\n", "\nx,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16\n", "unreadable CSV"),
])
def test_cli_malformed_epochs_csv_is_bad_input(tmp_path, capsys, old, new, message):
    a = write_run(tmp_path / "a", [cell([WARM] + BASE)])
    b = write_run(tmp_path / "b", [cell([WARM] + [1.0] + BASE[1:])])
    _replace_in_epochs(b, old, new)
    assert cli(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert message in err and "epochs.csv" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_malformed_files_are_bad_input(tmp_path, capsys):
    a = write_run(tmp_path / "a", [cell([WARM] + BASE)])
    b = write_run(tmp_path / "b", [cell([WARM] + BASE)])
    (b / "epochs.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x80\x81")
    assert cli(["compare", str(a), str(b)]) == 2
    assert "epochs.csv: unreadable CSV" in capsys.readouterr().err
    (b / "epochs.csv").write_text("")
    assert cli(["compare", str(a), str(b)]) == 2
    assert "epochs.csv: missing column(s) cell_id" in capsys.readouterr().err
    c = write_run(tmp_path / "c", [cell([WARM] + BASE)])
    run = json.loads((c / "run.json").read_text())
    (c / "run.json").write_text(json.dumps(dict(run, machine="bench-1")))
    assert cli(["compare", str(a), str(c)]) == 2
    err = capsys.readouterr().err
    assert "machine = 'bench-1': expected an object" in err and err.count("\n") == 1


def test_cli_refuses_different_machines_unless_allowed(tmp_path, capsys):
    a = write_run(tmp_path / "a", two_cells(BASE, BASE))
    b = write_run(tmp_path / "b", two_cells(NOISE, NOISE), machine=dict(MACHINE, torch="2.14.0"))
    assert cli(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "different machines or versions" in err and "torch: '2.13.0' -> '2.14.0'" in err
    assert "--allow-different-machine" in err
    assert cli(["compare", str(a), str(b), "--allow-different-machine"]) == 0
    out = capsys.readouterr().out
    assert "DIFFERENT MACHINES OR VERSIONS" in out and "torch: '2.13.0' -> '2.14.0'" in out


NODE_A = {"cpu_model": "Test CPU 9000", "gpu_name": None}
NODE_B = {"cpu_model": "Other CPU 100", "gpu_name": "NVIDIA H100"}


def test_cells_timed_on_other_machines_are_refused_even_when_run_json_agrees(tmp_path, capsys):
    # A Ray run: run.json names the driver, cells.csv where each cell ran.
    a = write_run(tmp_path / "a", cells_of(BASE, ran_on=NODE_A) + cells_of(BASE, layers=1))
    b = write_run(tmp_path / "b", cells_of(NOISE, ran_on=NODE_B) + cells_of(NOISE, layers=1))
    assert provenance_differences(read_run(a).machine, read_run(b).machine) == []
    with pytest.raises(HarnessError, match="1 matched cell.s. .* timed on different machines "
                                           r"\(lstm-l2-uni-cpu: cpu_model 'Test CPU 9000' -> 'Other CPU 100'; "
                                           r"gpu_name None -> 'NVIDIA H100'\)"):
        compare_measurements(read_run(a), read_run(b))
    assert cli(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "--allow-different-machine" in err and err.count("\n") == 1

    assert cli(["compare", str(a), str(b), "--allow-different-machine"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("lstm")}
    assert rows["lstm-l2-uni-cpu"][-1] == "DIFFERENT" and rows["lstm-l1-uni-cpu"][-1] == "same"
    assert "!!   lstm-l2-uni-cpu: cpu_model 'Test CPU 9000' -> 'Other CPU 100'" in out
    assert "1 of them timed on different machines" in out.splitlines()[-1]


def test_seeds_pooled_from_several_machines_are_flagged(tmp_path):
    a = write_run(tmp_path / "a", [cell([WARM] + BASE[:4], seed=0), cell([WARM] + BASE[4:], seed=1)])
    b = write_run(tmp_path / "b", [cell([WARM] + NOISE[:4], seed=0), cell([WARM] + NOISE[4:], seed=1, ran_on=NODE_B)])
    (pair,) = match_cells(read_run(a), read_run(b), METRICS["sec_per_epoch"]).pairs
    assert pair.machines == "new cells on 2 machines (Other CPU 100, NVIDIA H100 | Test CPU 9000)"
    report = compare_measurements(read_run(a), read_run(b), allow_different_machine=True)
    assert [r.cell.label for r in report.mixed_machines] == ["lstm-l2-uni-cpu"]
    # the same machine everywhere: nothing flagged
    assert match_cells(read_run(a), read_run(a), METRICS["sec_per_epoch"]).pairs[0].machines == ""


# ------------------------------------------------------------------------------------------ baselines


def test_baseline_round_trip(tmp_path):
    run_dir = write_run(tmp_path / "run", two_cells(BASE, NOISE, threads=2))
    root = tmp_path / "baselines"
    path = save_baseline(run_dir, "main", root=root)
    assert path == root / machine_id(MACHINE) / "main.json"
    assert list_baselines(root) == {machine_id(MACHINE): ["main"]}
    loaded = load_baseline("baseline:main", root=root, machine=machine_id(MACHINE))
    original = read_run(run_dir)
    assert loaded.machine == MACHINE
    assert loaded.calibration == original.calibration == {"cpu": 100e9}
    assert [(c.cell_id, c.config, c.status, c.warmup) for c in loaded.cells] == \
           [(c.cell_id, c.config, c.status, c.warmup) for c in original.cells]
    for saved, raw in zip(loaded.cells, original.cells):
        assert saved.sec == raw.sec and saved.tokens_per_sec == raw.tokens_per_sec  # every bit kept
    # a baseline compares like the run it came from: identical sides
    report = compare_measurements(loaded, original)
    assert [r.comparison.verdict for r in report.results] == ["same", "same"]
    assert [r.comparison.ratio for r in report.results] == [1.0, 1.0]
    assert [r.comparison.base_median == r.comparison.new_median for r in report.results] == [True, True]
    assert [r.comparison.p_value for r in report.results] == [1.0, 1.0]
    assert [c.machine for c in loaded.cells] == [{"cpu_model": "Test CPU 9000", "gpu_name": None}] * len(BASE) * 2
    with pytest.raises(HarnessError, match="exists; pass --force"):
        save_baseline(run_dir, "main", root=root)
    save_baseline(run_dir, "main", root=root, force=True)


def _damaged(document: dict, damage) -> dict:
    damage(document)
    return document


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: d.update(source="x"), "source = 'x': expected an object"),
    (lambda d: d["source"].update(git=[1]), "source.git = [1]: expected an object"),
    (lambda d: d.update(machine="abc"), "machine = 'abc': expected an object"),
    (lambda d: d["cells"][0].update(config="x"), "config = 'x': expected an object"),
    (lambda d: d["cells"][0].update(machine="x"), "machine = 'x': expected an object"),
    (lambda d: d.update(cells={"a": 1}), "a cell = 'a': expected an object"),
    (lambda d: d["cells"][0].update(sec=[-1.0] * len(d["cells"][0]["sec"])), "sec: -1.0 is not a positive finite"),
    (lambda d: d["cells"][0].update(sec=["nan"] * len(d["cells"][0]["sec"])), "sec: 'nan' is not a positive finite"),
    (lambda d: d["cells"][0].update(sec=[10 ** 400] * len(d["cells"][0]["sec"])), "is not a number"),
    (lambda d: d["cells"][0].update(warmup=["maybe"] * len(d["cells"][0]["sec"])), "warmup: 'maybe' is not true or"),
])
def test_a_damaged_baseline_file_is_one_line_exit_2(tmp_path, capsys, damage, fragment):
    path = save_baseline(write_run(tmp_path / "run", two_cells(BASE, BASE)), "main", root=tmp_path / "baselines")
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(_damaged(json.loads(path.read_text()), damage)))
    assert cli(["compare", str(path), str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {damaged}") and err.count("\n") == 1 and fragment in err, err


def test_a_baseline_files_warmup_flags_are_read_as_written(tmp_path):
    path = save_baseline(write_run(tmp_path / "run", two_cells(BASE, BASE)), "main", root=tmp_path / "baselines")
    document = json.loads(path.read_text())
    for cell in document["cells"]:  # "false" as text is false, not a non-empty string
        cell["warmup"] = ["true" if warm else "false" for warm in cell["warmup"]]
    path.write_text(json.dumps(document))
    assert [c.warmup for c in read_baseline_file(path).cells] == [c.warmup for c in read_run(tmp_path / "run").cells]


def test_missing_baseline_lists_what_exists(tmp_path):
    root = tmp_path / "baselines"
    save_baseline(write_run(tmp_path / "run", two_cells(BASE, BASE)), "main", root=root)
    with pytest.raises(HarnessError) as info:
        load_baseline("baseline:nightly", root=root, machine=machine_id(MACHINE))
    assert "saved for it: main" in str(info.value)
    with pytest.raises(HarnessError) as info:
        load_baseline("baseline:main", root=root, machine="another-machine")
    assert "exists for other machines: " + machine_id(MACHINE) in str(info.value)
    with pytest.raises(HarnessError, match="baseline name"):
        load_baseline("baseline:../etc", root=root)


def test_cli_baseline_save_and_compare(tmp_path, capsys):
    here = describe()  # baseline:NAME is looked up for the machine running the comparison
    root = tmp_path / "baselines"
    run_dir = write_run(tmp_path / "run", two_cells(BASE, BASE), machine=here)
    slower = write_run(tmp_path / "slower", two_cells(SLOWER, BASE), machine=here)
    assert cli(["baseline", "save", str(run_dir), "--name", "main", "--root", str(root)]) == 0
    assert (root / machine_id(here) / "main.json").is_file()
    assert cli(["baseline", "save", str(run_dir), "--name", "main", "--root", str(root)]) == 2
    assert cli(["baseline", "save", str(run_dir), "--name", "bad/name", "--root", str(root)]) == 2
    capsys.readouterr()
    assert cli(["compare", "baseline:main", str(slower), "--baselines", str(root)]) == 1
    assert cli(["compare", "baseline:main", str(run_dir), "--baselines", str(root)]) == 0
    assert cli(["compare", "baseline:other", str(run_dir), "--baselines", str(root)]) == 2
    assert "saved for it: main" in capsys.readouterr().err
    # the saved file itself is accepted too
    assert cli(["compare", str(root / machine_id(here) / "main.json"), str(slower)]) == 1


def test_an_empty_path_is_named_as_such(capsys):
    assert cli(["compare", "", "baseline:main"]) == 2
    assert capsys.readouterr().err == "error: '': an empty path names no run folder or baseline file\n"
