"""`harness ab`: the paired decision on literal data, the handling of revisions on a temporary git
repository, and tiny real interleaved runs (asserting what they write, never how fast they were)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from harness.grid import ab
from harness.analysis import stats
from harness.analysis.ab_decision import Outcome
from harness.report import ab_text
from harness.grid.ab import resolve_revision, worktree
from harness.cli import main as cli
from harness.results.speed_measurements import read_run
from harness.errors import HarnessError

from conftest import REPO, TINY, git

# Paired epoch times (seconds) of the base side: the machine drifts by a factor of two over the rounds,
# as a busy machine does; what a pair shares cancels in its ratio. Six runs of four rounds.
DRIFT = [1.00, 1.31, 0.82, 1.55, 1.12, 0.91, 1.78, 1.24, 0.97, 1.43, 2.01, 1.08,
         1.21, 0.88, 1.67, 1.02, 0.93, 1.36, 1.15, 1.84, 0.86, 1.29, 1.05, 1.61]
# Small per-epoch noise (about 1-2%), distinct values.
JITTER = [1.012, 0.991, 1.004, 0.987, 1.019, 0.996, 1.008, 0.983, 1.015, 0.999, 1.006, 0.989,
          0.994, 1.011, 0.985, 1.007, 1.002, 0.992, 1.017, 0.988, 1.009, 0.997, 1.014, 0.986]
BASE = [0.5 * d for d in DRIFT]
ROUNDS = 4  # per run: two units of two rounds


def new_side(factor: float) -> list[float]:
    return [b * factor * j for b, j in zip(BASE, JITTER)]


def run_values(base: list[float], new: list[float]) -> list[float]:
    """The value of each run of ROUNDS rounds (what harness ab decides on)."""
    return [stats.run_value(base[i:i + ROUNDS], new[i:i + ROUNDS]) for i in range(0, len(base), ROUNDS)]


def decide_runs(base, new, **kwargs) -> stats.Decision:
    return stats.decide(run_values(base, new), **kwargs)


# ------------------------------------------------------------------------------------------ decision


def test_clear_regression_despite_the_drift():
    d = decide_runs(BASE, new_side(1.30))
    assert d.verdict == "regression"
    assert d.ratio == pytest.approx(1.30, rel=0.02)
    assert 1.1 < d.low < d.ratio < d.high < 1.4
    assert d.n == len(BASE) // ROUNDS  # one value per run


def test_noise_only_is_no_change():
    d = decide_runs(BASE, new_side(1.0))
    assert d.verdict == "no change"
    assert 1 / 1.1 < d.low < 1 < d.high < 1.1


def test_improvement_mirrors_a_regression():
    d = decide_runs(BASE, new_side(1 / 1.30))
    assert d.verdict == "improvement"
    assert d.ratio == pytest.approx(1 / 1.30, rel=0.02)
    assert d.high < 1


def test_too_few_runs():
    d = decide_runs(BASE[:2 * ROUNDS], new_side(2.0)[:2 * ROUNDS])
    assert d.verdict == "too few runs" and d.n == 2 and math.isnan(d.low)
    assert stats.exit_code([d.verdict]) == 2
    assert stats.decide([]).verdict == "too few runs"
    assert stats.run_value(BASE[:1], BASE[:1]) is None  # one round makes no unit


def test_the_cost_of_going_second_cancels_in_a_unit_of_two_rounds():
    # Rounds alternate new-first and base-first; whoever goes second is 6% slower.
    second = [1.06 if i % 2 == 0 else 1 / 1.06 for i in range(len(BASE))]  # base second in even rounds
    new = [b * s * j for b, s, j in zip(BASE, second, JITTER)]
    assert stats.abba_units([0.1, -0.1, 0.3, -0.1, 7.0]) == pytest.approx([0.0, 0.1])
    by_unit = stats.decide(stats.abba_units(stats.log_ratios(BASE, new)))
    by_pair = stats.decide(stats.log_ratios(BASE, new))
    assert by_unit.verdict == "no change" and by_unit.high - by_unit.low < (by_pair.high - by_pair.low) / 3


def test_a_process_with_a_speed_of_its_own_counts_once_not_once_per_unit():
    # The same code on both sides, but each run's new process keeps a speed of its own (as measured:
    # one process turned 11% faster and stayed so): within a run the units agree, between runs they do not.
    own = [0.93, 1.05, 0.95, 1.06, 0.94, 0.99]
    new = [b * own[i // ROUNDS] * j for i, (b, j) in enumerate(zip(BASE, JITTER))]
    units = stats.abba_units(stats.log_ratios(BASE, new))
    by_units = stats.decide(units, threshold=0.02)
    by_runs = decide_runs(BASE, new, threshold=0.02)
    assert by_units.n == 2 * by_runs.n == 12
    assert by_runs.low < 1 < by_runs.high and by_runs.verdict == "undecided"
    assert (by_runs.high - by_runs.low) > 1.3 * (by_units.high - by_units.low)  # units as replicates: too sure


def test_significant_but_smaller_than_the_threshold_is_no_change():
    d = decide_runs(BASE, new_side(1.03))
    assert d.low > 1  # real...
    assert d.verdict == "no change"  # ...but within 10%


def test_large_but_uncertain_is_undecided():
    wild = [0.9, 1.6, 1.1, 1.5, 0.95, 1.45]  # a 20% slowdown on average, pairs disagreeing widely
    d = stats.decide([math.log(r) for r in wild])
    assert d.ratio > 1.1 and d.low < 1
    assert d.verdict == "undecided"


def test_the_interval_rule_asks_the_whole_interval_beyond_the_threshold():
    ratios = [math.log(1.12 * j) for j in JITTER[:5]]  # 12% slower, interval roughly [1.09, 1.15]
    by_estimate = stats.decide(ratios, rule="estimate")
    by_interval = stats.decide(ratios, rule="interval")
    assert by_estimate.verdict == "regression"
    assert by_interval.low < 1.1 and by_interval.verdict == "undecided"
    assert stats.decide(ratios, threshold=0.05, rule="interval").verdict == "regression"


def test_identical_ratios_need_no_scipy_interval():
    d = stats.decide([math.log(1.5)] * 4)
    assert d.low == d.high == pytest.approx(1.5) and d.verdict == "regression"
    assert stats.decide([0.0] * 4).verdict == "no change"


def test_log_ratios_leave_out_pairs_without_a_ratio():
    assert stats.log_ratios([1.0, 0.0, 2.0, float("nan")], [2.0, 1.0, 2.0, 1.0]) == [math.log(2.0), 0.0]
    with pytest.raises(ValueError):
        stats.log_ratios([1.0], [1.0, 2.0])


def test_exit_codes_follow_compare():
    assert stats.exit_code(["no change", "regression", "too few runs"]) == 1
    assert stats.exit_code(["no change", "undecided", "too few runs"]) == 0
    assert stats.exit_code(["improvement"]) == 0
    assert stats.exit_code(["too few runs", "too few runs"]) == 2
    assert stats.exit_code([]) == 2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        stats.decide([0.0] * 5, alpha=1.5)
    with pytest.raises(ValueError):
        stats.decide([0.0] * 5, rule="median")


# ------------------------------------------------------------------------------------------ revisions


@pytest.fixture
def repo(tmp_path):
    """A git repository with three commits: not this project, this project without the ab worker, and this
    project (the working tree's harness package) with a training loop that sleeps 0.3 s per epoch."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet")
    (root / "notes.txt").write_text("not the harness\n")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "unrelated")
    shutil.copytree(REPO / "harness", root / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "harness" / "ab_worker.py").unlink()
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "no worker")
    shutil.copy(REPO / "harness" / "ab_worker.py", root / "harness" / "ab_worker.py")
    train = root / "harness" / "cell" / "train.py"
    text = train.read_text()
    marker = '        """One pass over (num_batches, batch, steps) tensors.'
    assert marker in text
    train.write_text(text.replace(marker, "        time.sleep(0.3)  # the slower training loop\n" + marker, 1))
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "slower")
    return root


def test_revisions_are_checked_before_anything_is_checked_out(repo):
    with pytest.raises(HarnessError, match="no such revision"):
        resolve_revision(repo, "no-such-branch", "--base")
    with pytest.raises(HarnessError, match="not a revision of this project"):
        resolve_revision(repo, "HEAD~2", "--base")
    with pytest.raises(HarnessError, match="has no harness/ab_worker.py"):
        resolve_revision(repo, "HEAD~1", "--new")
    commit = resolve_revision(repo, "HEAD", "--new")
    assert commit == git(repo, "rev-parse", "HEAD")
    with worktree(repo, commit, "--new") as path:
        assert (path / "harness" / "ab_worker.py").is_file()
        assert "time.sleep(0.3)" in (path / "harness" / "cell" / "train.py").read_text()
        assert str(path) in git(repo, "worktree", "list")
    assert not path.exists()
    assert str(path) not in git(repo, "worktree", "list")


def test_the_side_going_first_alternates_within_every_configuration(tmp_path):
    from harness.spec.suite import expand, load_suite

    path = write_suite(tmp_path, "matrix: {seed: [0, 1, 2, 3, 4], cell: [rnn, gru, lstm]}\n")
    cells = expand(load_suite(str(path), []))
    firsts = ab.first_sides(cells)
    by_cell: dict[str, list[int]] = {}
    for cell, first in zip(cells, firsts):
        by_cell.setdefault(cell.config.cell, []).append(first)
    assert by_cell == {"rnn": [0, 1, 0, 1, 0], "gru": [1, 0, 1, 0, 1], "lstm": [0, 1, 0, 1, 0]}
    # A fixed alternation from one run to the next would give every configuration of an even-sized
    # round the same side first in all its seeds.
    assert ab.first_sides([c for c in cells if c.config.cell != "gru"])[:4] == [0, 1, 1, 0]


def write_suite(tmp_path, body: str = "matrix: {seed: [0, 1], cell: [rnn, lstm]}\n"):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY) + textwrap.dedent(body))
    return path


@pytest.mark.parametrize("option, rev, message", [
    ("--base", "no-such-branch", "--base 'no-such-branch': no such revision in"),
    ("--new", "HEAD~2", "not a revision of this project"),
    ("--new", "HEAD~1", "has no harness/ab_worker.py, the worker that harness ab runs on each side"),
])
def test_cli_bad_revision_exits_2_in_one_line(tmp_path, repo, capsys, option, rev, message):
    out = tmp_path / "out"
    assert cli(["ab", str(write_suite(tmp_path)), option, rev, "--repo", str(repo), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not out.exists()


def test_help_imports_no_torch_or_scipy():
    probe = ("import sys\nfrom harness.cli import main\ntry:\n    main(['ab', '--help'])\nexcept SystemExit:\n    pass\n"
             "print('LOADED', [m for m in ('torch', 'scipy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "--set-new" in out.stdout and out.stdout.splitlines()[-1] == "LOADED []"


def test_cli_settings_may_not_change_the_grid(tmp_path, capsys):
    assert cli(["ab", str(write_suite(tmp_path)), "--set-new", "model.cell=gru", "--out", str(tmp_path / "o")]) == 2
    assert "may change settings but not the grid" in capsys.readouterr().err


def test_only_chooses_cells_by_the_suites_values_before_either_sides_settings(tmp_path, capsys):
    out = tmp_path / "out"
    suite = write_suite(tmp_path, "matrix: {cell: [rnn], hidden: [8, 12]}\n")
    code = cli(["ab", str(suite), "--only", "hidden=8", "--set-new", "model.hidden=12", "--rounds", "2",
                "--out", str(out), "--json", str(tmp_path / "ab.json")])
    captured = capsys.readouterr()
    for side, hidden in (("base", 8), ("new", 12)):  # the same one cell, hidden 8 against 12
        assert [c.config["hidden"] for c in read_run(out / side).cells] == [hidden]
    # One run: nothing decided, and the output says what would be.
    assert code == 2 and json.loads((tmp_path / "ab.json").read_text())["exit_code"] == 2
    assert ("too few runs: 1 per cell, 1 in all, at least 3 needed for an interval; a run is a cell and seed: "
            "give the suite more seeds (e.g. matrix: {seed: [0, 1, 2]})") in captured.out.splitlines()


def test_too_few_rounds_for_a_unit_says_so(tmp_path):
    side = ab.Side("base", None, None, tmp_path)
    outcome = Outcome("s", (side, side), tmp_path, ab.Threshold.parse("5%"), 0.01, "estimate", 1, [],
                      stats.decide([]), 1.0, [])
    assert outcome.exit_code == 2
    assert outcome.too_few_runs == ("too few runs: 0 in all; a run's value needs at least 2 rounds (a unit of two): "
                                    "use --rounds 2 or more")
    assert "Too few runs: 0 in all" in ab_text.format_markdown(outcome)
    outcome.rounds, outcome.pooled = 6, stats.decide([0.0, 0.01, -0.01])
    assert outcome.too_few_runs == ""


def test_the_new_revision_trains_with_its_own_code(tmp_path, repo, capsys):
    out = tmp_path / "out"
    suite = write_suite(tmp_path, "matrix: {cell: [rnn]}\n")
    code = cli(["ab", str(suite), "--new", "HEAD", "--repo", str(repo), "--rounds", "2", "--out", str(out),
                "--json", str(tmp_path / "ab.json")])
    result = json.loads((tmp_path / "ab.json").read_text())
    assert code == result["exit_code"]
    assert result["new"]["commit"] == git(repo, "rev-parse", "HEAD") and result["base"]["rev"] is None
    new_epochs = pd.read_csv(out / "new" / "epochs.csv")
    assert len(new_epochs) == 3 and (new_epochs["sec"] >= 0.3).all()  # the revision's sleep was timed
    info = json.loads((out / "new" / "run.json").read_text())
    assert info["git"]["commit"] == result["new"]["commit"] and info["ab"]["side"] == "new"
    assert not (tmp_path / "harness-ab").exists() and "harness-ab-" not in git(repo, "worktree", "list")


def test_a_worker_of_another_protocol_is_refused_in_one_line(tmp_path, repo, capsys):
    worker = repo / "harness" / "ab_worker.py"
    worker.write_text(worker.read_text().replace("PROTOCOL = 2\n", "PROTOCOL = 99\n", 1))
    git(repo, "commit", "--quiet", "-am", "another protocol")
    code = cli(["ab", str(write_suite(tmp_path, "matrix: {cell: [rnn]}\n")), "--base", "HEAD", "--repo", str(repo),
                "--rounds", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # after the line that announces the check
    assert code == 2 and last.startswith("error: base side (HEAD (") and "speaks protocol 99, this driver 1 or 2" in last
    assert "harness-ab-" not in git(repo, "worktree", "list")


# ------------------------------------------------------------------------------------------ end to end


def test_tiny_ab_writes_two_run_folders_and_its_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    suite = write_suite(tmp_path)
    code = cli(["ab", str(suite), "--rounds", "4", "--set-new", "model.hidden=12", "--out", str(out),
                "--json", str(tmp_path / "ab.json"), "--markdown", str(tmp_path / "ab.md")])
    captured = capsys.readouterr()
    result = json.loads((tmp_path / "ab.json").read_text())
    assert code == result["exit_code"] and code in (0, 1)  # an A/B of settings: any verdict, never bad input
    assert [c["cell"] for c in result["cells"]] == ["rnn-l1-uni-cpu", "lstm-l1-uni-cpu"]
    for c in result["cells"]:
        assert c["runs"] == [f"{c['cell']}-s0", f"{c['cell']}-s1"] and c["statuses"] == ["ok/ok", "ok/ok"]
        # Which side went first alternates over the seeds of a cell, from a different side in each cell.
        assert c["first"] == (["base", "new"] if c["cell"].startswith("rnn") else ["new", "base"])
        # 4 timed rounds x 2 seeds, in units of 2; the runs are the replicates: 2 a cell are too few
        assert len(c["pairs"]) == 8 and len(c["units"]) == 4 and [len(u) for u in c["run_units"]] == [2, 2]
        assert c["n"] == 2 and c["verdict"] == "too few runs" and c["unit_sd"] >= 0
    pooled = result["pooled"]
    assert pooled["n"] == 4 and pooled["low"] <= pooled["ratio"] <= pooled["high"] and pooled["verdict"] in stats.VERDICTS
    assert result["new"]["sets"] == ["model.hidden=12"]
    assert set(result["malloc"]) == set(ab.KEEP_FREED_MEMORY)  # what the workers' malloc was told
    assert len(result["load_average"]) == 2 and result["base"]["commit"] == result["new"]["commit"]
    assert captured.out.splitlines()[-1].startswith(result["verdict"].upper() + ": pooled new/base")
    markdown = (tmp_path / "ab.md").read_text()
    assert markdown.startswith("### ") and "| `rnn-l1-uni-cpu` | 2 |" in markdown and "**all cells**" in markdown
    for side, hidden in (("base", 8), ("new", 12)):
        run = read_run(out / side)  # what `harness compare` reads
        assert [c.status for c in run.cells] == ["ok"] * 4
        assert {c.config["hidden"] for c in run.cells} == {hidden}
        assert all(len(c.sec) == 5 and c.warmup == (True,) + (False,) * 4 for c in run.cells)
        assert run.calibration["cpu"] > 0
        epochs = pd.read_csv(out / side / "epochs.csv")
        pairs = [p[0 if side == "base" else 1] for c in result["cells"] for p in c["pairs"]]
        assert sorted(epochs.loc[~epochs["warmup"], "sec"]) == pytest.approx(sorted(pairs))
    assert cli(["show", str(out / "new")]) == 0
    assert cli(["compare", str(out / "base"), str(out / "new"), "--ignore", "hidden",
                "--json", str(tmp_path / "compare.json"), "--markdown", str(tmp_path / "compare.md")]) == 2
    compared = json.loads((tmp_path / "compare.json").read_text())
    assert [c["verdict"] for c in compared["cells"]] == ["too few runs"] * 2 and compared["exit_code"] == 2
    assert (tmp_path / "compare.md").read_text().startswith("### ")


def counting_workers(monkeypatch) -> list:
    """Every worker process the driver starts, as (side name, Worker)."""
    started = []

    class Counted(ab.Worker):
        def __init__(self, side, log, *args):
            super().__init__(side, log, *args)
            started.append((side.name, self))

    monkeypatch.setattr(ab, "Worker", Counted)
    return started


def test_every_run_gets_a_fresh_process_per_side_and_keeps_its_log(tmp_path, monkeypatch):
    started = counting_workers(monkeypatch)
    out = tmp_path / "out"
    code = cli(["ab", str(write_suite(tmp_path)), "--rounds", "2", "--out", str(out), "--json", str(tmp_path / "ab.json")])
    assert code in (0, 1, 2)  # two seeds a cell: the cells are too few runs, the pool of four may decide
    assert sorted(name for name, _ in started) == ["base"] * 4 + ["new"] * 4  # four runs, a pair each
    assert len({w.proc.pid for _, w in started}) == 8
    assert all(w.proc.poll() is not None for _, w in started)  # stopped at the end
    for side in ("base", "new"):
        cells = pd.read_csv(out / side / "cells.csv")
        assert list(cells["status"]) == ["ok"] * 4 and (cells["total_sec"] > 0).all()
        assert sorted(p.stem for p in (out / side / "logs").glob("*.log")) == sorted(cells["cell_id"])


def test_a_revision_whose_worker_speaks_protocol_1_is_still_driven(tmp_path, repo, monkeypatch):
    worker = repo / "harness" / "ab_worker.py"
    text = worker.read_text().replace("PROTOCOL = 2\n", "PROTOCOL = 1\n", 1)
    done = '            send({"event": "done", "record": record})\n'
    assert done in text
    worker.write_text(text.replace(done, done + "            return 0  # protocol 1: one cell a process\n", 1))
    git(repo, "commit", "--quiet", "-am", "a worker of protocol 1")
    started = counting_workers(monkeypatch)
    code = cli(["ab", str(write_suite(tmp_path, "matrix: {seed: [0, 1, 2]}\n")), "--base", "HEAD", "--repo", str(repo),
                "--rounds", "2", "--out", str(tmp_path / "out"), "--json", str(tmp_path / "ab.json")])
    assert code in (0, 1)
    assert sorted(name for name, _ in started) == ["base"] * 3 + ["new"] * 3
    assert json.loads((tmp_path / "ab.json").read_text())["cells"][0]["statuses"] == ["ok/ok"] * 3


def test_the_command_repeats_the_drivers_defaults():
    from harness.commands import ab as command

    assert (command.DEFAULT_ROUNDS, command.DEFAULT_THRESHOLD) == (ab.DEFAULT_ROUNDS, ab.DEFAULT_THRESHOLD)


def test_workers_keep_freed_memory_unless_told_otherwise(monkeypatch, tmp_path):
    side = ab.Side("base", None, None, tmp_path)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's own value wins
    env = ab.worker_env(side)
    assert env["MALLOC_TRIM_THRESHOLD_"] == ab.KEEP_FREED_MEMORY["MALLOC_TRIM_THRESHOLD_"]
    assert env["MALLOC_MMAP_THRESHOLD_"] == "65536"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    assert "MALLOC_TRIM_THRESHOLD_" not in ab.worker_env(side, system_malloc=True)
    assert ab.malloc_settings(True) == {"MALLOC_MMAP_THRESHOLD_": "65536"}


def test_a_busy_machine_is_warned_of_but_not_a_check_at_its_own_load(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    side = ab.Side("base", None, None, tmp_path)
    outcome = Outcome("s", (side, side), tmp_path, ab.Threshold.parse("5%"), 0.01, "estimate", 6, [],
                      stats.decide([0.0] * 3), 1.0, [])
    outcome.load = (2.03, 2.2)  # measured on the quiet machine: the check's own two threads
    assert outcome.busy == ""
    outcome.load = (3.4, 2.9)
    assert "load average 3.4 -> 2.9 on 2 CPUs" in outcome.busy
    assert "(threshold 5%, alpha 0.01, rule estimate)" in ab_text.summary(outcome)  # a ratio of means, not medians


def test_a_worker_receives_only_what_differs_from_the_recipe(tmp_path):
    # A revision older than a setting refuses a configuration naming it (its CellConfig forbids extra keys);
    # left at its default, the setting is not sent, and the configuration reads back the same.
    from harness.spec.config import CellConfig
    from harness.spec.suite import expand, load_suite

    suite = write_suite(tmp_path, "matrix: {cell: [lstm]}\n")
    config = expand(load_suite(str(suite)))[0].config
    sent = ab.worker_config(config)
    assert "optimizer" not in sent and "dropout" not in sent and "forget_bias" not in sent
    assert sent["hidden"] == 8 and sent["cell"] == "lstm" and sent["layers"] == 1  # always sent
    changed = ab.worker_config(config.model_copy(update={"optimizer": "adam", "dropout": 0.1}))
    assert changed["optimizer"] == "adam" and changed["dropout"] == 0.1
    assert CellConfig(**sent) == config
