"""`harness history` and `harness bisect`: training speed over many commits, each commit judged by an
interleaved `harness ab` check against another commit, so that every point is a ratio measured in the same
minutes as its reference and the machine's drift over the hours of a timeline cancels.

history: every commit of a range against one reference commit, stored as ``OUT/history.json`` (the settings
of the timeline) and ``OUT/points/<commit>.json`` (each check's outcome, its raw epoch pairs included); a
commit already measured is not measured again, so an interrupted timeline resumes. The ab run folders of a
check go to a temporary folder: the point keeps what the decision used.
bisect: the first commit after ``good`` that ab finds slower than ``good`` by the threshold
(``harness.analysis.speed_history.bisect``), in about log2(n) checks.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.analysis.speed_history import NOT_SLOWER, SKIP, SLOWER, BisectResult, bisect, standard_error
from harness.errors import HarnessError
from harness.grid.ab import AbRequest, find_repo, resolve_revision, run_ab, this_project_root
from harness.results.atomic import write_json_atomic

FORMAT = 1


@dataclass(frozen=True)
class Commit:
    sha: str
    date: str  # committer date, ISO 8601
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:10]


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise HarnessError(f"git {' '.join(args)}: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'failed'}")
    return result.stdout


def commits_in(repo: Path, revs: str, paths: tuple[str, ...] = (), option: str = "--revs") -> list[Commit]:
    """The commits of a git range (``A..B``; oldest first, first parents only), optionally only those that
    touched ``paths``."""
    if revs.startswith("-"):
        raise HarnessError(f"{option} {revs!r}: not a range of commits (e.g. HEAD~10..HEAD)")
    check = subprocess.run(["git", "-C", str(repo), "rev-parse", "--revs-only", revs], capture_output=True, text=True)
    if check.returncode != 0 or not check.stdout.strip():
        raise HarnessError(f"{option} {revs!r}: not a range of commits in {repo} (e.g. HEAD~10..HEAD)")
    out = _git(repo, "log", "--reverse", "--first-parent", "--format=%H%x00%cI%x00%s", revs, "--", *paths)
    commits = [Commit(*line.split("\x00", 2)) for line in out.splitlines() if line]
    if not commits:
        raise HarnessError(f"{option} {revs!r}: holds no commit" + (f" touching {', '.join(paths)}" if paths else ""))
    return commits


def commit_info(repo: Path, rev: str, option: str) -> Commit:
    sha = resolve_revision(repo, rev, option)
    date, subject = _git(repo, "show", "-s", "--format=%cI%x00%s", sha).strip().split("\x00", 1)
    return Commit(sha, date, subject)


@dataclass
class CheckSettings:
    """How each commit is judged: the ab check's suite and parameters."""

    suite: str
    rounds: int
    threshold: str
    alpha: float
    only: tuple[str, ...] = ()
    rule: str = "estimate"
    system_malloc: bool = False

    def as_dict(self) -> dict:
        return {"suite": self.suite, "rounds": self.rounds, "threshold": self.threshold, "alpha": self.alpha,
                "only": list(self.only), "rule": self.rule, "system_malloc": self.system_malloc}


def check(settings: CheckSettings, repo: Path, base: str, new: str, stream=None) -> dict:
    """One interleaved ab check of ``new`` against ``base``: the outcome as a dict (``Outcome.as_dict``) with
    ``status`` ok, or ``status`` failed and the reason where the commit could not be built or run."""
    stream = stream or sys.stderr
    with tempfile.TemporaryDirectory(prefix="harness-history-") as tmp:
        request = AbRequest(suite=settings.suite, base_rev=base, new_rev=new, only=settings.only,
                            rounds=settings.rounds, threshold=settings.threshold, alpha=settings.alpha,
                            rule=settings.rule, out=Path(tmp) / "ab", repo=repo,
                            system_malloc=settings.system_malloc)
        try:
            outcome = run_ab(request, stream=stream)
        except HarnessError as exc:  # a revision without a worker, one that does not import, ...
            return {"status": "failed", "reason": str(exc)}
    result = outcome.as_dict()
    result.pop("out", None)
    for side in ("base", "new"):  # the temporary worktree and run folder: gone when the check ends
        result[side].pop("run_dir", None)
        result[side].pop("code", None)
    pooled = result["pooled"]
    if pooled.get("ratio") is None:
        return {"status": "failed", "reason": f"nothing could be compared ({'; '.join(outcome.not_compared) or outcome.word.lower()})",
                **result}
    return {"status": "ok", **result}


# --- history ------------------------------------------------------------------------------------------


@dataclass
class History:
    """A timeline's folder: ``history.json`` and one ``points/<commit>.json`` per measured commit."""

    folder: Path

    @property
    def header_path(self) -> Path:
        return self.folder / "history.json"

    def point_path(self, sha: str) -> Path:
        return self.folder / "points" / f"{sha}.json"

    def header(self) -> dict | None:
        try:
            return json.loads(self.header_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{self.header_path}: not a history file ({exc})") from None

    def points(self) -> dict[str, dict]:
        """Commit -> its stored point, for every point file that reads."""
        found = {}
        for path in sorted((self.folder / "points").glob("*.json")):
            try:
                point = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a point cut short is measured again
            found[path.stem] = point
        return found


def open_history(folder: Path, reference: Commit, settings: CheckSettings) -> History:
    """The history folder, created for ``reference`` and ``settings``; one made for another reference or
    other settings is refused (its points would not compare with new ones)."""
    history = History(folder)
    wanted = {"format": FORMAT, "reference": {"commit": reference.sha, "date": reference.date,
                                              "subject": reference.subject},
              "settings": settings.as_dict()}
    header = history.header()
    if header is not None:
        for key in ("reference", "settings"):
            if header.get(key) != wanted[key]:
                raise HarnessError(f"--out {folder}: holds a history with another {key} ({json.dumps(header.get(key))}); "
                                   "choose another folder")
        return history
    write_json_atomic(history.header_path, {**wanted, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    return history


def point_record(commit: Commit, position: int, result: dict, alpha: float) -> dict:
    """A commit's point: where it stands in the range, its ratio to the reference and the check behind it."""
    pooled = result.get("pooled") or {}
    ratio, low, high = pooled.get("ratio"), pooled.get("low"), pooled.get("high")
    error = standard_error(low, high, alpha) if low is not None and high is not None else float("nan")
    return {"commit": commit.sha, "short": commit.short, "date": commit.date, "subject": commit.subject,
            "position": position, "status": result.get("status"), "reason": result.get("reason", ""),
            "ratio": ratio, "low": low, "high": high, "log_se": error if error == error else None,
            "verdict": pooled.get("verdict"), "check": result}


@dataclass
class HistoryRun:
    history: History
    measured: list[str] = field(default_factory=list)  # commits checked by this call
    reused: list[str] = field(default_factory=list)  # commits whose points were already there


def run_history(settings: CheckSettings, revs: str, reference_rev: str | None, out: Path,
                paths: tuple[str, ...] = (), repo_dir: str | Path | None = None, stream=None,
                judge: Callable[[Commit], dict] | None = None) -> HistoryRun:
    """Measure every commit of ``revs`` not yet in ``out`` against the reference (default: the range's first
    commit) and store each point as it finishes. ``judge`` replaces the ab check (tests)."""
    stream = stream or sys.stderr
    repo = find_repo(Path(repo_dir)) if repo_dir else this_project_root()
    commits = commits_in(repo, revs, paths)
    reference = commit_info(repo, reference_rev, "--reference") if reference_rev else commits[0]
    history = open_history(Path(out), reference, settings)
    done = history.points()
    run = HistoryRun(history)
    judge = judge or (lambda commit: check(settings, repo, reference.sha, commit.sha, stream))
    for position, commit in enumerate(commits):
        if commit.sha in done:
            run.reused.append(commit.sha)
            continue
        print(f"history: {position + 1}/{len(commits)} {commit.short} {commit.subject[:60]} against "
              f"{reference.short}", file=stream, flush=True)
        record = point_record(commit, position, judge(commit), settings.alpha)
        write_json_atomic(history.point_path(commit.sha), record)
        run.measured.append(commit.sha)
    # Positions follow the range as asked this time: a longer range later renumbers the older points.
    for position, commit in enumerate(commits):
        path = history.point_path(commit.sha)
        point = json.loads(path.read_text())
        if point.get("position") != position:
            write_json_atomic(path, {**point, "position": position})
    return run


# --- bisect -------------------------------------------------------------------------------------------


def verdict_of(result: dict) -> str:
    """An ab check's answer to bisect's question: slower (a regression), not slower, or skip (it failed, or
    could not decide: a commit is never called good or bad on noise)."""
    if result.get("status") != "ok":
        return SKIP
    code = result.get("exit_code")
    return SLOWER if code == 1 else NOT_SLOWER if code == 0 else SKIP


def run_bisect(settings: CheckSettings, good_rev: str, bad_rev: str, repo_dir: str | Path | None = None,
               stream=None, judge: Callable[[Commit], dict] | None = None) -> tuple[BisectResult, dict[str, Commit], dict]:
    """Bisect the commits after ``good`` up to ``bad`` (first parents); returns the result, the commits by
    sha, and each checked commit's ab outcome."""
    stream = stream or sys.stderr
    repo = find_repo(Path(repo_dir)) if repo_dir else this_project_root()
    good = commit_info(repo, good_rev, "--good")
    bad = commit_info(repo, bad_rev, "--bad")
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", good.sha, bad.sha]).returncode != 0:
        raise HarnessError(f"--good {good_rev}: is not an ancestor of --bad {bad_rev}")
    if good.sha == bad.sha:
        raise HarnessError(f"--good {good_rev} and --bad {bad_rev}: the same commit")
    commits = commits_in(repo, f"{good.sha}..{bad.sha}", option="--good..--bad")
    by_sha = {c.sha: c for c in commits}
    outcomes: dict[str, dict] = {}
    judge = judge or (lambda commit: check(settings, repo, good.sha, commit.sha, stream))

    def judged(sha: str) -> str:
        commit = by_sha[sha]
        print(f"bisect: checking {commit.short} {commit.subject[:60]} against {good.short} "
              f"({len(outcomes) + 1} checked of about {max(1, len(commits)).bit_length() + 1})", file=stream, flush=True)
        outcomes[sha] = judge(commit)
        verdict = verdict_of(outcomes[sha])
        print(f"bisect: {commit.short} is {verdict}", file=stream, flush=True)
        return verdict

    return bisect([c.sha for c in commits], judged), by_sha, outcomes
