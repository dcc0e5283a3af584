"""`harness ab`: interleaved A/B speed check of two revisions (or settings) of the training code.

Each side's code comes from its own temporary ``git worktree`` of a revision (or the working tree) and
runs in this Python environment. For every run (cell and seed) of the suite the driver starts a fresh
worker per side (``harness.ab_worker`` of that side's code) and lets the two train one epoch at a time in
turn, A B B A A B ..., so that the two epochs of a round see the same seconds of the machine: on a shared
machine whose speed moves by a third between few-minute windows, interleaving cancels what comparing two
suite runs (``harness compare``) cannot. Pairs of adjacent epochs, warm-up excluded, give each run its
log-ratio; the runs are the replicates of the decision (``harness.analysis.ab_decision``), since a process
keeps a speed of its own that all its epochs share.

Each side's results go to a normal results folder (``OUT/base``, ``OUT/new``), written with the runner's
own functions, so ``show``, ``report`` and ``compare`` read them; the verdict's text is
``harness.report.ab_text``'s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.analysis import stats
from harness.analysis.ab_decision import Outcome, PairResult, decide_outcome, timed_pairs
from harness.analysis.speed_compare import Threshold, match_key
from harness.errors import HarnessError
from harness.host.malloc import KEEP_FREED_MEMORY, malloc_settings, worker_environment  # noqa: F401 - KEEP_FREED_MEMORY re-exported
from harness.report.ab_text import progress_line
from harness.results.run_folder import RunDir
from harness.spec.suite import GridCell, expand, filter_cells, load_suite, with_settings

WORKER_MODULE = "harness.ab_worker"
WORKER_PATH = "harness/ab_worker.py"
PROTOCOL = 2  # what this driver speaks; it also drives workers of protocol 1
PROTOCOLS = (1, 2)
PREFIX = "@@ab "
DEFAULT_ROUNDS = 6
DEFAULT_THRESHOLD = "5%"  # docs/regression.md: what the quiet study measured
HELLO_TIMEOUT = 300.0  # seconds for a worker to import torch and the harness on a loaded machine
# The workers' malloc keeps the memory an epoch frees (harness.host.malloc): both sides alike; --system-malloc
# leaves malloc alone.


# ------------------------------------------------------------------------------------------ revisions


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessError(f"git {' '.join(args)} in {repo}: {exc}") from None


def find_repo(start: Path) -> Path:
    """The top folder of the git repository holding ``start``."""
    out = _git(start, "rev-parse", "--show-toplevel")
    if out.returncode != 0:
        raise HarnessError(f"{start}: not inside a git repository, so --base/--new cannot name revisions")
    return Path(out.stdout.strip())


def resolve_revision(repo: Path, rev: str, option: str) -> str:
    """The commit ``rev`` names in ``repo``, checked to be a revision of this project that has the
    worker ``harness ab`` drives (HarnessError otherwise)."""
    out = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if out.returncode != 0 or not out.stdout.strip():
        raise HarnessError(f"{option} {rev!r}: no such revision in {repo}")
    commit = out.stdout.strip()
    if _git(repo, "cat-file", "-e", f"{commit}:harness/__init__.py").returncode != 0:
        raise HarnessError(f"{option} {rev!r} ({commit[:10]}): not a revision of this project "
                           f"(no harness/__init__.py there)")
    if _git(repo, "cat-file", "-e", f"{commit}:{WORKER_PATH}").returncode != 0:
        raise HarnessError(f"{option} {rev!r} ({commit[:10]}): has no {WORKER_PATH}, the worker that harness ab "
                           "runs on each side; it can only measure revisions that have it")
    return commit


@contextlib.contextmanager
def worktree(repo: Path, commit: str, option: str):
    """A temporary detached ``git worktree`` of ``commit``, removed afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="harness-ab-"))
    path = parent / commit[:10]
    out = _git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)
    if out.returncode != 0:
        shutil.rmtree(parent, ignore_errors=True)
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise HarnessError(f"{option}: git worktree add {commit[:10]} failed: {last}")
    try:
        yield path
    finally:
        _git(repo, "worktree", "remove", "--force", str(path))
        shutil.rmtree(parent, ignore_errors=True)
        _git(repo, "worktree", "prune")


@dataclass
class Side:
    name: str  # "base" or "new"
    rev: str | None  # as given; None: the working tree
    commit: str | None
    root: Path  # the folder holding this side's harness package
    sets: tuple[str, ...] = ()
    dirty: bool | None = None

    @property
    def label(self) -> str:
        code = f"{self.rev} ({self.commit[:10]})" if self.rev else "working tree"
        return code + "".join(f" --set {s}" for s in self.sets)

    def as_dict(self) -> dict:
        return {"rev": self.rev, "commit": self.commit, "dirty": self.dirty, "sets": list(self.sets),
                "code": str(self.root)}


def this_project_root() -> Path:
    return Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def prepare_sides(base_rev: str | None, new_rev: str | None, base_sets=(), new_sets=(), repo: Path | None = None):
    """Both sides, with a worktree each for a named revision (checked before anything is checked out)."""
    from harness.grid.runner import git_info

    root = this_project_root()
    if repo is None and (base_rev or new_rev):
        repo = find_repo(root)
    commits = {}
    for option, rev in (("--base", base_rev), ("--new", new_rev)):
        if rev:
            commits[option] = resolve_revision(Path(repo), rev, option)
    with contextlib.ExitStack() as stack:
        sides = []
        for name, option, rev, sets in (("base", "--base", base_rev, base_sets), ("new", "--new", new_rev, new_sets)):
            if rev:
                path = stack.enter_context(worktree(Path(repo), commits[option], option))
                sides.append(Side(name, rev, commits[option], path, tuple(sets), dirty=False))
            else:
                info = git_info(cwd=root)
                sides.append(Side(name, None, info.get("commit"), root, tuple(sets), dirty=info.get("dirty")))
        yield sides


# --------------------------------------------------------------------------------------------- worker


class WorkerGone(Exception):
    """The worker's output ended (it exited or crashed)."""


class Worker:
    """One side's worker process for one run, spoken to in JSON lines."""

    def __init__(self, side: Side, log, system_malloc: bool = False):
        self.side = side
        self.protocol: int | None = None  # from its hello
        env = worker_env(side, system_malloc)
        # -P: the caller's folder is not put first on sys.path, so `harness` is this side's code even when
        # the driver runs from a checkout (Python 3.11+; before it, start in the side's folder instead).
        flags, cwd = (["-P"], None) if sys.version_info >= (3, 11) else ([], str(side.root))
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, *flags, "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=cwd,
                                     start_new_session=True)
        self.messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                try:
                    self.messages.put(json.loads(line[len(PREFIX):]))
                except ValueError:
                    pass
        self.messages.put(None)

    def send(self, **msg) -> None:
        try:
            self.proc.stdin.write(json.dumps(msg, default=str) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it has exited; the next expect() says so

    def expect(self, timeout: float) -> dict:
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if msg is None:
            self.messages.put(None)
            raise WorkerGone
        return msg

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    @property
    def seconds(self) -> float:
        """Seconds since this worker's process started."""
        return time.monotonic() - self.started


def worker_env(side: Side, system_malloc: bool = False) -> dict:
    """The environment of one side's worker: this one, with the side's code first on the path, the
    corpora's folders made absolute and, unless ``system_malloc``, ``KEEP_FREED_MEMORY``."""
    env = worker_environment(system_malloc)
    env["PYTHONPATH"] = os.pathsep.join([str(side.root)] + [p for p in [env.get("PYTHONPATH")] if p])
    for key in ("HARNESS_DATA_DIR", "HARNESS_CACHE_DIR"):  # the same corpora from any working folder
        if env.get(key):
            env[key] = os.path.abspath(env[key])
    return env


def _hello(worker: Worker) -> None:
    side = worker.side
    try:
        msg = worker.expect(HELLO_TIMEOUT)
    except (WorkerGone, TimeoutError):
        code = worker.proc.poll()
        raise HarnessError(f"{side.name} side ({side.label}): the worker {WORKER_MODULE} did not start "
                           f"(exit code {code}); see the cell's log") from None
    if msg.get("event") != "hello" or msg.get("protocol") not in PROTOCOLS:
        raise HarnessError(f"{side.name} side ({side.label}): the worker speaks protocol {msg.get('protocol')!r}, "
                           f"this driver {' or '.join(map(str, PROTOCOLS))}")
    worker.protocol = msg["protocol"]
    expected = (side.root / "harness").resolve()
    if Path(str(msg.get("harness"))).resolve() != expected:
        raise HarnessError(f"{side.name} side ({side.label}): the worker imported harness from {msg.get('harness')}, "
                           f"not from {expected}")


# The settings every revision with an ab worker knows: always sent, whatever their value.
FIRST_SETTINGS = ("corpus", "strip_boilerplate", "max_tokens", "val_tokens", "cell", "layers", "direction", "hidden",
                  "epochs", "batch_size", "num_steps", "lr", "clip", "sampling", "precision", "eval_every",
                  "prefixes", "sample_chars", "device", "seed", "threads", "timeout")


def worker_config(config) -> dict:
    """The cell's configuration as a worker receives it: the first settings, and any later one only where it
    differs from its default (the lesson's recipe, which no revision changes), so that a revision older than
    a setting still trains a cell that leaves it at its default (history and bisect measure such revisions)."""
    full = config.model_dump(mode="json")
    changed = config.model_dump(mode="json", exclude_defaults=True)
    return {k: v for k, v in full.items() if k in FIRST_SETTINGS or k in changed}


def run_pair(cells: tuple[GridCell, GridCell], sides: tuple[Side, Side], logs, first: int = 0,
             system_malloc: bool = False) -> PairResult:
    """Train one cell on both sides, epoch by epoch in turn (A B B A ...). Returns each side's record
    (the worker's own ``run_cell`` record, or a failure record keeping the epochs seen) and the timed
    rounds both sides completed.

    ``first`` (0: base, 1: new) goes first in the warm-up round and every even round after it (and is
    started first when its worker starts). The driver alternates it (``first_sides``): in A/A trials with
    a fixed order the new side came out 3% faster (docs/regression.md), apparently a cost of being started
    or going first that ABBA units alone do not cancel.

    Both workers are fresh processes, stopped at the end: a process keeps a speed of its own for minutes
    (in one A/A check whose two workers served every cell, one of them turned 11% faster halfway and
    stayed so), so each run must be an independent draw of it for the runs to be replicates."""
    from harness.grid.cell_process import failure_record

    starting = (first, 1 - first)
    workers: list[Worker | None] = [None, None]
    rows: list[list[dict]] = [[], []]
    records: list[dict | None] = [None, None]
    try:
        for i in starting:  # both start at once: start-up is not timed
            workers[i] = Worker(sides[i], logs[i], system_malloc)
        for i in starting:
            _hello(workers[i])
        for w, cell, log in zip(workers, cells, logs):
            w.send(cmd="start", config=worker_config(cell.config), log=getattr(log, "name", None))
        epochs = cells[0].config.epochs
        for k in range(epochs + 1):  # the extra round lets each side finish (final evaluation, samples)
            order = starting if k % 2 == 0 else starting[::-1]
            for i in order:
                if records[i] is not None:
                    continue
                w, cell = workers[i], cells[i]
                w.send(cmd="epoch" if k < epochs else "finish")
                try:
                    msg = w.expect(cell.config.timeout)
                except TimeoutError:
                    w.close()
                    records[i] = failure_record(cell, "timeout", f"exceeded run.timeout = {cell.config.timeout:g} s "
                                                "for one epoch", rows[i])
                    continue
                except WorkerGone:
                    code = w.proc.wait()
                    records[i] = failure_record(cell, "failed", f"worker exited with code {code} (see its log)",
                                                rows[i])
                    continue
                event = msg.get("event")
                if event == "epoch":
                    rows[i].append(msg["row"])
                elif event == "done":
                    records[i] = msg["record"]
                elif event == "error" and not rows[i]:
                    # Before any epoch: this side cannot train the suite's cells at all.
                    raise HarnessError(f"{sides[i].name} side ({sides[i].label}), cell {cell.cell_id}: "
                                       f"{msg.get('message')}")
                else:
                    records[i] = failure_record(cell, "failed", str(msg.get("message") or msg), rows[i])
        for i, w in enumerate(workers):
            if records[i] is None:
                records[i] = failure_record(cells[i], "failed", "the worker did not finish the cell", rows[i])
            records[i]["total_sec"] = w.seconds
    finally:
        stop_workers(workers)
    return PairResult((records[0], records[1]), timed_pairs(rows[0], rows[1]), first)


def stop_workers(workers: list) -> None:
    """Stop and reap the workers of ``workers`` (leaving ``None`` in their place)."""
    for i, w in enumerate(workers):
        if w is not None:
            w.send(cmd="stop")
            w.close()
            workers[i] = None


# ------------------------------------------------------------------------------------------ the check


def _run_info(suite, side: Side, cells: list[GridCell], argv: list[str], calibration: dict, other: Path,
              rounds: int, malloc: dict) -> dict:
    """run.json of one side, as ``run_suite`` writes it, plus what this A/B check was."""
    from harness.host.machine import describe
    from harness.grid.runner import now_iso

    return {
        "suite": {**suite.resolved(), "file": suite.path},
        "config_hash": suite.config_hash(),
        "started": now_iso(),
        "command": argv,
        "git": {"commit": side.commit, "dirty": side.dirty},
        "machine": describe(),
        "executor": "ab",
        "threads": sorted({c.config.threads for c in cells if c.config.threads}),
        "finished": None,
        "cells": [c.cell_id for c in cells],
        "calibration": calibration,
        "ab": {"side": side.name, **side.as_dict(), "other_side": str(other), "rounds": rounds, "malloc": malloc},
    }


@dataclass(frozen=True)
class AbRequest:
    """What to check: the command line of `harness ab`."""
    suite: str  # the suite file
    base_rev: str | None = None  # None: the working tree
    new_rev: str | None = None
    base_sets: tuple[str, ...] = ()  # SECTION.KEY=VALUE settings of one side only
    new_sets: tuple[str, ...] = ()
    only: tuple[str, ...] = ()  # KEY=VALUE[,VALUE] filters of the cells
    rounds: int = DEFAULT_ROUNDS
    threshold: str | Threshold = DEFAULT_THRESHOLD
    alpha: float = 0.01
    rule: str = stats.DEFAULT_RULE
    out: str | Path | None = None  # default results/ab-<suite>-<time>
    repo: str | Path | None = None  # git repository of the revisions; default: the one holding this harness
    system_malloc: bool = False


def run_ab(request: AbRequest, argv: list[str] | None = None, stream=None) -> Outcome:
    """Run the interleaved check and decide (see the module's docstring)."""
    from harness.grid.runner import calibrate_cells
    from harness.results.atomic import write_json_atomic

    stream = stream or sys.stderr
    suite_path, rounds, alpha = request.suite, request.rounds, request.alpha
    threshold = Threshold.parse(request.threshold)
    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha {alpha!r}: must be between 0 and 1")
    if rounds < 1:
        raise HarnessError(f"--rounds {rounds}: must be at least 1")
    epochs = [f"train.epochs={rounds + 1}"]  # one warm-up epoch, then the timed rounds
    # --only chooses by the suite's own values, before either side's settings: `--only hidden=64
    # --set-new model.hidden=128` compares 64 with 128 on the same cells.
    plain = load_suite(suite_path, epochs)
    chosen = filter_cells(expand(plain), list(request.only))
    side_sets = (request.base_sets, request.new_sets)
    suites = [load_suite(suite_path, list(sets) + epochs) for sets in side_sets]
    grids = [with_settings(chosen, list(sets), plain, f"--set-{name} {' '.join(sets)}".rstrip())
             for name, sets in zip(("base", "new"), side_sets)]
    matched = list(zip(grids[0], grids[1]))
    name = suites[0].name
    out = (Path(request.out) if request.out
           else Path("results") / f"ab-{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    dirs = [RunDir(out / "base"), RunDir(out / "new")]
    for d in dirs:
        if d.run_json.exists():
            raise HarnessError(f"--out {out}: already holds an A/B check ({d.run_json}); choose another folder")
    argv = argv or ["python", "-m", "harness", "ab", suite_path]
    start, load_start = time.monotonic(), _load()
    malloc = malloc_settings(request.system_malloc)
    with prepare_sides(request.base_rev, request.new_rev, request.base_sets, request.new_sets,
                       Path(request.repo) if request.repo else None) as sides:
        for d in dirs:
            d.lock()
        # One calibration for both sides: they share the machine and the minutes.
        calibration = calibrate_cells(grids[0])
        infos = [_run_info(suites[i], sides[i], grids[i], argv, calibration, dirs[1 - i].path, rounds, malloc)
                 for i in (0, 1)]
        for d, info in zip(dirs, infos):
            write_json_atomic(d.run_json, info)
        print(f"A/B check of {suite_path}: base = {sides[0].label}; new = {sides[1].label}; "
              f"{len(matched)} runs (cells and seeds), {rounds} timed rounds each; results in {out}", file=stream, flush=True)
        results: list[tuple[GridCell, GridCell, PairResult]] = []
        firsts = first_sides(a for a, _ in matched)
        for n, ((a, b), first) in enumerate(zip(matched, firsts), 1):
            with open(dirs[0].log_path(a.cell_id), "w") as log_a, open(dirs[1].log_path(b.cell_id), "w") as log_b:
                result = run_pair((a, b), (sides[0], sides[1]), (log_a, log_b), first=first,
                                  system_malloc=request.system_malloc)
            for d, cell, record, info in zip(dirs, (a, b), result.records, infos):
                d.store(cell, record, calibration)
                d.rebuild_tables(info["cells"])
            results.append((a, b, result))
            print(progress_line(n, len(matched), a, result), file=stream, flush=True)
        for d, info in zip(dirs, infos):
            records = d.finished_records()
            info["corpus_sha256"] = sorted({r.get("corpus_sha256") for r in records.values() if r.get("corpus_sha256")})
            info["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            write_json_atomic(d.run_json, info)
    outcome = decide_outcome(name, tuple(sides), out, results, threshold, alpha, request.rule, rounds,
                             time.monotonic() - start)
    outcome.load = (load_start, _load())
    outcome.malloc = malloc
    return outcome


def first_sides(cells) -> list[int]:
    """Which side (0: base, 1: new) goes first with each cell: alternating over the runs (seeds) of each
    configuration, and starting with a different side from one configuration to the next, so that the
    cost of going first is split between the sides within every configuration and over the pool."""
    runs: Counter = Counter()  # runs of each configuration so far
    order: dict[tuple, int] = {}  # configurations in the order first met
    firsts = []
    for cell in cells:
        key = match_key(cell.config.model_dump(mode="json"))
        order.setdefault(key, len(order))
        firsts.append((order[key] + runs[key]) % 2)
        runs[key] += 1
    return firsts


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
