"""`harness history` and `harness bisect`: change points and the bisection on literal data, the timeline's
storage and resumption with a stand-in judge, and both commands end to end on a small repository with a
deliberate slowdown, judged by real interleaved ab checks."""

from __future__ import annotations

import json
import math
import shutil
import textwrap

import pytest

from harness.analysis.speed_history import NOT_SLOWER, SKIP, SLOWER, bisect, change_points, standard_error
from harness.cli import main as cli
from harness.errors import HarnessError
from harness.grid.history import CheckSettings, run_history
from harness.report.history_page import write_history_report

from conftest import REPO, TINY, git


# --- change points ------------------------------------------------------------------------------------


def test_a_step_is_found_at_the_commit_where_it_happened():
    ratios = [1.00, 1.01, 0.99, 1.00, 1.20, 1.21, 1.19, 1.20]
    steps = change_points(ratios, [0.01] * 8, threshold=0.05)
    assert [s.index for s in steps] == [4]
    assert steps[0].slower and steps[0].change == pytest.approx(0.20, abs=0.01)


def test_noise_within_the_points_errors_is_no_step():
    ratios = [1.00, 1.03, 0.98, 1.02, 0.99, 1.01, 0.97, 1.02]
    assert change_points(ratios, [0.03] * 8, threshold=0.05) == []


def test_a_real_step_below_the_threshold_is_not_named():
    ratios = [1.00] * 4 + [1.03] * 4
    assert change_points(ratios, [0.001] * 8, threshold=0.05) == []
    assert [s.index for s in change_points(ratios, [0.001] * 8, threshold=0.02)] == [4]


def test_two_steps_up_and_back_down_and_unmeasured_commits_skipped():
    ratios = [1.0, 1.0, math.nan, 1.0, 1.3, 1.3, 1.3, 1.0, 1.0, 1.0]
    steps = change_points(ratios, [0.01] * 10, threshold=0.05)
    assert [(s.index, s.slower) for s in steps] == [(4, True), (7, False)]


def test_standard_error_from_a_normal_interval():
    # A 99% interval of +-2.576 standard errors on the log scale.
    assert standard_error(math.exp(-2.576 * 0.1), math.exp(2.576 * 0.1), 0.01) == pytest.approx(0.1, rel=1e-3)
    assert math.isnan(standard_error(math.nan, 1.2, 0.01))


# --- bisect --------------------------------------------------------------------------------------------


def judge_from(first_slow: int, skipped=()):
    calls = []

    def judge(commit):
        calls.append(commit)
        return SKIP if commit in skipped else SLOWER if commit >= first_slow else NOT_SLOWER
    return judge, calls


@pytest.mark.parametrize("first_slow", [0, 1, 7, 15])
def test_bisect_finds_the_first_slower_commit_in_log2_checks(first_slow):
    commits = list(range(16))
    judge, calls = judge_from(first_slow)
    result = bisect(commits, judge)
    assert result.first_slower == first_slow and result.candidates == [first_slow]
    assert len(calls) <= 1 + math.ceil(math.log2(16)) and calls[0] == 15  # the bad end first


def test_bisect_steps_around_skipped_commits():
    judge, calls = judge_from(6, skipped={4})
    result = bisect(list(range(10)), judge)
    assert result.first_slower == 6 and 4 in calls and 3 in calls  # 4 skipped: its neighbour 3 checked instead
    judge, _ = judge_from(6, skipped={4, 5})
    assert bisect(list(range(10)), judge).candidates == [4, 5, 6]  # 3 not slower, 6 slower, 4 and 5 unknown


def test_bisect_lists_the_candidates_that_skipped_commits_hide():
    judge, _ = judge_from(6, skipped={5})
    result = bisect(list(range(10)), judge)
    assert result.first_slower is None and result.candidates == [5, 6]


def test_bisect_with_a_bad_end_that_is_not_slower_finds_nothing():
    judge, calls = judge_from(99)
    result = bisect(list(range(10)), judge)
    assert not result.bad_is_slower and result.first_slower is None and calls == [9]


# --- the timeline's storage, with a stand-in judge -----------------------------------------------------


@pytest.fixture
def plain_repo(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    git(root, "init", "--quiet")
    (root / "harness").mkdir()  # what ab asks of a revision it is given by name: the package and its worker
    (root / "harness" / "__init__.py").write_text("")
    (root / "harness" / "ab_worker.py").write_text("")
    for n in range(6):
        (root / ("train.py" if n % 2 == 0 else "notes.txt")).write_text(f"version {n}\n")
        git(root, "add", ".")
        git(root, "commit", "--quiet", "-m", f"commit {n}")
    return root


def stand_in(ratios: dict):
    """A judge giving each commit (by subject) the ratio of the literal table, with a tight interval."""
    def judge(commit):
        ratio = ratios[commit.subject]
        pooled = {"ratio": ratio, "low": ratio * 0.98, "high": ratio / 0.98, "verdict": "no change"}
        return {"status": "ok", "pooled": pooled, "exit_code": 1 if ratio > 1.05 else 0}
    return judge


def test_history_stores_each_point_resumes_and_renders_the_step(plain_repo, tmp_path):
    settings = CheckSettings(suite="suite.yaml", rounds=2, threshold="5%", alpha=0.01)
    ratios = {f"commit {n}": r for n, r in enumerate([1.0, 1.0, 1.01, 1.25, 1.24, 1.26])}
    out = tmp_path / "history"
    run = run_history(settings, "HEAD~5..HEAD", None, out, repo_dir=plain_repo, judge=stand_in(ratios))
    assert len(run.measured) == 5 and run.reused == []  # HEAD~5..HEAD: commits 1-5
    header = json.loads((out / "history.json").read_text())
    assert header["reference"]["subject"] == "commit 1" and header["settings"]["threshold"] == "5%"
    points = run.history.points()
    assert sorted(p["position"] for p in points.values()) == [0, 1, 2, 3, 4]
    # Resumed, and extended to the whole history: only the older commit is measured; positions follow the range.
    calls = []
    judge = stand_in(ratios)
    again = run_history(settings, "HEAD", git(plain_repo, "rev-parse", "HEAD~4"), out, repo_dir=plain_repo,
                        judge=lambda c: calls.append(c.subject) or judge(c))
    assert calls == ["commit 0"] and len(again.reused) == 5
    assert {p["subject"]: p["position"] for p in again.history.points().values()}["commit 1"] == 1
    # Another reference's points do not mix with these.
    with pytest.raises(HarnessError, match="holds a history with another reference"):
        run_history(settings, "HEAD~5..HEAD", "HEAD", out, repo_dir=plain_repo, judge=judge)
    # Only the commits that touched a path.
    only = run_history(settings, "HEAD~5..HEAD", None, tmp_path / "only", paths=("train.py",), repo_dir=plain_repo,
                       judge=stand_in(ratios))
    assert sorted(p["subject"] for p in only.history.points().values()) == ["commit 2", "commit 4"]
    page = write_history_report(again.history.header(), again.history.points(), tmp_path / "page")
    text = (page / "index.md").read_text()
    step = [p for p in again.history.points().values() if p["subject"] == "commit 3"][0]
    assert f"slower by 24.6% from {step['short'][:7]} (commit 3)" in text  # 1.2500 / 1.0033
    assert (page / "timeline.png").stat().st_size > 1000 and (page / "index.html").is_file()


def test_a_commit_that_cannot_be_measured_is_a_grey_point_not_a_stop(plain_repo, tmp_path):
    settings = CheckSettings(suite="suite.yaml", rounds=2, threshold="5%", alpha=0.01)
    ratios = {f"commit {n}": 1.0 for n in range(6)}
    good = stand_in(ratios)

    def judge(commit):
        return {"status": "failed", "reason": "has no harness/ab_worker.py"} if commit.subject == "commit 3" else good(commit)

    run = run_history(settings, "HEAD~5..HEAD", None, tmp_path / "h", repo_dir=plain_repo, judge=judge)
    failed = [p for p in run.history.points().values() if p["status"] == "failed"]
    assert [p["subject"] for p in failed] == ["commit 3"] and failed[0]["ratio"] is None
    text = (write_history_report(run.history.header(), run.history.points(), tmp_path / "page") / "index.md").read_text()
    assert "not measured: has no harness/ab_worker.py" in text and "No step larger than the threshold" in text


@pytest.mark.parametrize("args, message", [
    (["--revs", "no-such..HEAD"], "--revs 'no-such..HEAD': not a range of commits"),
    (["--revs", "HEAD..HEAD"], "--revs 'HEAD..HEAD': holds no commit"),
    (["--revs", "HEAD~2..HEAD", "--reference", "nope"], "--reference 'nope': no such revision"),
])
def test_history_bad_input_is_one_line(plain_repo, tmp_path, capsys, args, message):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(textwrap.dedent(TINY))
    code = cli(["history", str(suite), *args, "--repo", str(plain_repo), "--out", str(tmp_path / "o"),
                "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o" / "points").exists()


def test_bisect_bad_input_is_one_line(plain_repo, tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(textwrap.dedent(TINY))
    for args, message in ((["--good", "HEAD", "--bad", "HEAD~2"], "is not an ancestor of --bad"),
                          (["--good", "HEAD", "--bad", "HEAD"], "the same commit"),
                          (["--good", "nope", "--bad", "HEAD"], "--good 'nope': no such revision")):
        assert cli(["bisect", str(suite), *args, "--repo", str(plain_repo)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


# --- end to end: real ab checks on a repository with a deliberate slowdown ----------------------------


@pytest.fixture
def slowed_repo(tmp_path):
    """This project's harness package in four commits: as it is, an unrelated change, a training loop that
    sleeps 0.3 s per epoch (epochs of the tiny suite take milliseconds), another unrelated change."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet")
    shutil.copytree(REPO / "harness", root / "harness", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "the harness")
    (root / "NOTES").write_text("an unrelated change\n")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "notes")
    train = root / "harness" / "cell" / "train.py"
    text = train.read_text()
    marker = '        """One pass over (num_batches, batch, steps) tensors.'
    assert marker in text
    train.write_text(text.replace(marker, "        time.sleep(0.3)  # the slower training loop\n" + marker, 1))
    git(root, "commit", "--quiet", "-am", "slower")
    (root / "NOTES").write_text("another unrelated change\n")
    git(root, "commit", "--quiet", "-am", "more notes")
    return root


# Robust on any machine: the slowdown is tens of times the epoch, and a check of two equal commits must
# only keep its interval within a factor of two to say "no change".
CHECK = ["--rounds", "3", "--threshold", "100%", "--alpha", "0.05"]


def test_bisect_and_history_find_the_slower_commit_with_ab(slowed_repo, tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(textwrap.dedent(TINY) + "matrix: {seed: [0, 1, 2, 3], cell: [rnn]}\n")
    slower = git(slowed_repo, "rev-parse", "HEAD~1")
    code = cli(["bisect", str(suite), "--good", "HEAD~3", "--bad", "HEAD", "--repo", str(slowed_repo), *CHECK])
    out = capsys.readouterr().out
    assert code == 0 and f"first slower commit: {slower} slower" in out, out
    assert sum(line.startswith("  ") for line in out.splitlines()) <= 3  # the bad end, then log2(3) checks

    history, page = tmp_path / "history", tmp_path / "page"
    code = cli(["history", str(suite), "--revs", "HEAD~3..HEAD", "--reference", "HEAD~3", "--repo", str(slowed_repo),
                "--out", str(history), "--report", str(page), *CHECK])
    assert code == 1  # the newest commit is slower than the reference
    points = sorted((json.loads(p.read_text()) for p in (history / "points").glob("*.json")), key=lambda p: p["position"])
    assert [p["subject"] for p in points] == ["notes", "slower", "more notes"]
    assert points[0]["ratio"] < 2 < points[1]["ratio"] and points[2]["ratio"] > 2
    assert all(len(p["check"]["cells"][0]["pairs"]) == 4 * 3 for p in points)  # the raw pairs are kept
    assert f"from {slower[:7]} (slower)" in (page / "index.md").read_text()


def test_the_committed_timeline_is_its_points_rendered(tmp_path):
    # report/history/ is what results/history/ renders to: the page says the same as its stored points.
    from harness.grid.history import History

    history = History(REPO / "results" / "history")
    page = write_history_report(history.header(), history.points(), tmp_path / "page")
    assert (page / "index.md").read_text() == (REPO / "report" / "history" / "index.md").read_text()
    assert len(history.points()) >= 10 and all(p["status"] == "ok" for p in history.points().values())
