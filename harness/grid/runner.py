"""The grid runner: trains pending cells one process each, stores each result as it finishes, resumes.

Storage is crash-safe: a finished cell is one JSON file written atomically under ``cells/``; the CSV
tables are rebuilt from those files (atomically) after every cell. Killing the runner at any moment
therefore loses at most the cell in flight, and a resumed run trains exactly the missing cells.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from harness.spec.config import FIELDS, CellConfig
from harness.cell.cost import estimate_seconds
from harness.errors import HarnessError
# The run folder and its tables are the results module's; imported here for the runner's callers too.
from harness.results.run_folder import (EXTRA_COLUMNS, LOAD_COLUMNS, RESULT_COLUMNS, RunDir, append_tables,  # noqa: F401
                      machine_from_records, node_label, read_json_object, rebuild_tables, run_facts_from_records,
                      checkpoint_prior_sec, table_rows)
from harness.results.atomic import write_json_atomic
from harness.spec.suite import GridCell, Suite, cell_changes
from harness.worker import EPOCH_PREFIX
from harness.analysis.run_text import run_baselines
from harness.report.numbers import format_duration

PROBLEM_STATUSES = ("failed", "diverged", "timeout")
RETRAINABLE = ("timeout", "diverged")  # outcomes `run --retrain` may train again; "failed" always is
LOG_TAIL_LINES = 8


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --- one cell in its own process ---------------------------------------------------------------------


def failure_record(cell: GridCell, status: str, reason: str, epoch_log: list[dict],
                   error_tail: list[str] | None = None) -> dict:
    record = {key: None for key in RESULT_COLUMNS + EXTRA_COLUMNS}
    record.update(cell.config.model_dump(include=set(RESULT_COLUMNS) | {"precision", "threads", "corpus"}))
    timed = [r["sec"] for r in epoch_log if not r.get("warmup")]
    record.update(status=status, reason=reason, epochs_done=len(epoch_log), epoch_log=epoch_log, samples=[],
                  config_hash=cell.config.config_hash(), error_tail=error_tail or [],
                  train_ppl=epoch_log[-1]["train_ppl"] if epoch_log else None,
                  sec_per_epoch=statistics.median(timed) if timed else None)
    return record


def run_cell_process(cell: GridCell, log, on_epoch: Callable[[dict], None] | None = None,
                     timeout: float | None = None, stop: threading.Event | None = None,
                     malloc: str = "keep-freed", checkpoint: Path | None = None,
                     checkpoint_every: float | None = None) -> dict:
    """Train ``cell`` in a fresh Python process. Everything it prints goes to ``log`` (a text file);
    outcomes other than a result file become ``failed`` or ``timeout`` records keeping the epochs seen.
    ``malloc``: ``keep-freed`` starts it with ``harness.host.malloc.KEEP_FREED_MEMORY`` (values in this
    environment win), ``system`` without them. ``checkpoint``: the file the cell saves its state to (every
    ``checkpoint_every`` seconds, ``harness.cell.checkpoint``'s default if None) and goes on from; ``total_sec``
    then counts the earlier processes' training up to their last checkpoint, and so does ``timeout``."""
    timeout = timeout if timeout is not None else cell.config.timeout
    # The timeout covers the cell, not each process: earlier ones, up to their checkpoint, used some.
    prior_sec = checkpoint_prior_sec(checkpoint, cell.config.config_hash())
    limit = timeout
    timeout = max(1.0, timeout - prior_sec)
    epoch_log: list[dict] = []
    remove_stale_cell_dirs_once()
    with tempfile.TemporaryDirectory(prefix=f"{CELL_DIR_PREFIX}{os.getpid()}-") as tmp:
        config_path, result_path = Path(tmp, "config.json"), Path(tmp, "result.json")
        config_path.write_text(json.dumps(cell.config.model_dump(mode="json")))
        env = worker_environment(malloc)
        if cell.config.threads:
            env["OMP_NUM_THREADS"] = str(cell.config.threads)
        load_before = machine_load()
        start = time.monotonic()
        saving = [str(checkpoint)] + ([repr(checkpoint_every)] if checkpoint_every is not None else []) \
            if checkpoint else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.worker", str(config_path), str(result_path), *saving],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
        )
        tail: list[str] = []
        timed_out = threading.Event()

        def watchdog():
            while proc.poll() is None:
                if time.monotonic() - start > timeout or (stop is not None and stop.is_set()):
                    if not (stop is not None and stop.is_set()):
                        timed_out.set()
                    _kill_group(proc)
                    return
                time.sleep(0.2)

        threading.Thread(target=watchdog, daemon=True).start()
        try:
            for line in proc.stdout:
                if line.startswith(EPOCH_PREFIX):
                    row = json.loads(line[len(EPOCH_PREFIX):])
                    epoch_log.append(row)
                    if on_epoch:
                        on_epoch(row)
                    continue
                log.write(line)
                log.flush()
                tail = (tail + [line.rstrip()])[-LOG_TAIL_LINES:]
            returncode = proc.wait()
        except BaseException:  # interrupted: never leave the cell's process behind
            _kill_group(proc)
            proc.wait()
            raise
        total_sec = time.monotonic() - start
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        own_record = not timed_out.is_set() and returncode == 0 and result_path.exists()
        if timed_out.is_set():
            record = failure_record(cell, "timeout", f"exceeded run.timeout = {limit:g} s"
                                    + (f" (with {prior_sec:.0f} s before its checkpoint)" if prior_sec else ""),
                                    epoch_log)
        elif own_record:
            record = json.loads(result_path.read_text())
        else:
            if returncode < 0:
                cause = f"killed by signal {signal.Signals(-returncode).name}"
                if -returncode == signal.SIGKILL:
                    cause += " (out of memory?)"
            else:
                cause = f"exit code {returncode}"
            # The last line printed is the exception (or the harness's one-line error); the log has the rest.
            last = next((line.strip() for line in reversed(tail) if line.strip()), "")
            record = failure_record(cell, "failed", f"{cause}: {last}" if last else cause, epoch_log,
                                    error_tail=[line for line in tail if line.strip()])
    # The cell's own record says what its earlier processes took; a failure record has the summary's figure.
    record["total_sec"] = total_sec + record.pop("prior_sec", 0.0 if own_record else prior_sec)
    record.update(load_columns(load_before, machine_load()))
    return record


def worker_environment(malloc: str) -> dict:
    """This process's environment for a cell's process, with its malloc setting (``harness.host.malloc``)."""
    from harness.host import malloc as malloc_module

    return malloc_module.worker_environment(malloc != malloc_module.KEPT)


def machine_load() -> dict:
    """The 1-minute load average and the CPU time counters now (for the steal share over a cell)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    try:
        import psutil

        times = psutil.cpu_times()
        steal, total = getattr(times, "steal", None), sum(times)
    except Exception:  # noqa: BLE001 - counters are a nicety; a cell's result never depends on them
        steal, total = None, None
    return {"load": load, "steal": steal, "total": total}


def load_columns(before: dict, after: dict) -> dict:
    """How busy the machine was around a cell: ``load_start`` and ``load_end``, the 1-minute load average
    when its process started and ended (the cell's own threads included), and ``cpu_steal``, the share
    of CPU time the hypervisor gave to other guests meanwhile (Linux; None where unknown)."""
    steal = None
    if None not in (before["steal"], after["steal"], before["total"], after["total"]):
        elapsed = after["total"] - before["total"]
        steal = (after["steal"] - before["steal"]) / elapsed if elapsed > 0 else None
    return {"load_start": before["load"], "load_end": after["load"], "cpu_steal": steal}


CELL_DIR_PREFIX = "harness-cell-"
_stale_dirs_removed = False


def remove_stale_cell_dirs_once() -> None:
    global _stale_dirs_removed
    if not _stale_dirs_removed:
        _stale_dirs_removed = True
        remove_stale_cell_dirs()


def remove_stale_cell_dirs(root=None, min_age_sec: float = 3600.0) -> list[Path]:
    """Remove the temporary folders of cells whose runner died without removing them (SIGKILL). A folder
    is named after its runner's pid (harness-cell-PID-xxxx): stale when that process is gone. An older
    harness's folder (harness-cell-xxxx) names none: stale once untouched for ``min_age_sec`` and named by
    no running process (a cell's worker has its config.json there on its command line)."""
    import shutil

    root = Path(root or tempfile.gettempdir())
    removed = []
    for path in root.glob(f"{CELL_DIR_PREFIX}*"):
        pid, dash, _ = path.name[len(CELL_DIR_PREFIX):].partition("-")
        try:
            if not path.is_dir() or path.is_symlink():
                continue
            if dash and pid.isdigit():
                if _process_alive(int(pid)):
                    continue
            elif time.time() - path.stat().st_mtime < min_age_sec or _named_by_a_process(path):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _named_by_a_process(path: Path) -> bool:
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        if any(str(path) in arg for arg in proc.info["cmdline"] or ()):
            return True
    return False


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class LocalExecutor:
    """Runs cells one after another on this machine, so no two timed cells share its cores."""

    name = "local"
    malloc = "keep-freed"  # the run's malloc setting (harness.host.malloc), set by run_suite

    def execute(self, cells: list[GridCell], run_dir: "RunDir", progress: "Progress",
                stop: threading.Event, drain: threading.Event) -> Iterator[tuple[GridCell, dict]]:
        for cell in cells:
            if drain.is_set():
                return
            progress.start_cell(cell)
            with open(run_dir.log_path(cell.cell_id), "w") as log:
                record = run_cell_process(cell, log, on_epoch=progress.epoch, stop=stop, malloc=self.malloc,
                                          checkpoint=run_dir.checkpoint_path(cell.cell_id))
            yield cell, record


# --- progress ----------------------------------------------------------------------------------------


class Progress:
    """One bar over the grid (cells done, current cell and epoch, ETA) on a terminal; one plain line per
    finished cell otherwise.

    The ETA weighs each cell by its a-priori cost (``estimates``, seconds, for the cells still to train) and
    corrects the whole estimate by how long the work done so far really took, so that it settles as cells
    finish. Until enough is done, the a-priori figures weigh in (``prior_sec`` of pretend-accurate work)."""

    def __init__(self, total: int, done: int, stream=None, estimates: dict[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic, started_epochs: dict[str, int] | None = None):
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.total, self.done = total, done
        self.current: GridCell | None = None
        self.estimates = dict(estimates or {})
        self.remaining_est = sum(self.estimates.values())  # cells not finished yet, in flight included
        self.finished_est = 0.0
        self.fractions: dict[str, float] = {}  # cells in flight: share of their epochs done
        # Cells that go on from a checkpoint: the epoch it holds. Their estimates are of what remains, and
        # their share done counts from there (the earlier epochs, reported again, took no time now).
        self.started_epochs = dict(started_epochs or {})
        self.cell_started: dict[str, float] = {}  # cells in flight: when they started
        self.prior_sec = min(300.0, max(1.0, 0.02 * self.remaining_est))
        self.clock = clock
        self.started = clock()
        self.epoch_listeners: list[Callable[[GridCell, dict], None]] = []  # e.g. TensorBoard, per live epoch
        self._postfix = ""
        self.bar = tqdm(total=total, initial=done, unit="cell", file=self.stream, disable=not self.interactive,
                        dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} cells [{elapsed}{postfix}]")

    def _fraction(self, cell_id: str, now: float) -> float:
        """The share of a cell in flight that is done: by its epochs where they are reported, otherwise (a
        cell on a Ray worker, or before its first epoch) by the time it has run against its estimate, so that
        cells training side by side all count as progress."""
        frac = self.fractions[cell_id]
        estimate = self.estimates.get(cell_id, 0.0)
        if frac > 0 or estimate <= 0:
            return frac
        return min(0.9, max(0.0, now - self.cell_started.get(cell_id, now)) / estimate)

    def eta_seconds(self) -> float:
        now = self.clock()
        in_flight = sum(self.estimates.get(cid, 0.0) * self._fraction(cid, now) for cid in self.fractions)
        progress = self.finished_est + in_flight
        elapsed = max(0.0, now - self.started)
        factor = (elapsed + self.prior_sec) / (progress + self.prior_sec)
        return max(0.0, self.remaining_est - in_flight) * factor

    def eta_text(self) -> str:
        return "ETA " + format_duration(self.eta_seconds())

    def _refresh(self) -> None:
        self.bar.set_postfix_str(", ".join(x for x in (self._postfix, self.eta_text()) if x))

    def start_cell(self, cell: GridCell) -> None:
        self.current = cell
        self.fractions[cell.cell_id] = 0.0
        self.cell_started[cell.cell_id] = self.clock()
        self.bar.set_description(cell.cell_id)
        self._postfix = ""
        self._refresh()

    def epoch(self, row: dict) -> None:
        if self.current is not None:
            for listener in self.epoch_listeners:
                listener(self.current, row)
            epochs = max(1, self.current.config.epochs)
            before = min(self.started_epochs.get(self.current.cell_id, 0), epochs - 1)
            self.fractions[self.current.cell_id] = min(1.0, max(0, row["epoch"] - before) / (epochs - before))
            self._postfix = f"epoch {row['epoch']}/{epochs} ppl {row['train_ppl']:.3f}"
            self._refresh()

    def finish_cell(self, cell: GridCell, record: dict) -> None:
        self.done += 1
        estimate = self.estimates.get(cell.cell_id, 0.0)
        self.fractions.pop(cell.cell_id, None)
        self.cell_started.pop(cell.cell_id, None)
        self.remaining_est = max(0.0, self.remaining_est - estimate)
        # A cell skipped at once says nothing about the speed of training; its estimate just drops out.
        if record.get("status") != "skipped":
            self.finished_est += estimate
        self.bar.update(1)
        line = (f"[{self.done}/{self.total}] {cell.cell_id} {record['status']}"
                f" {record.get('total_sec') or 0:.1f}s")
        if record.get("train_ppl") is not None:
            line += f" train_ppl {record['train_ppl']:.3f}"
        if record.get("sec_per_epoch") is not None:
            line += f" sec/epoch {record['sec_per_epoch']:.3f}"
        if record.get("reason"):
            line += f" ({record['reason'][:200]})"
        if self.done < self.total and self.estimates:
            line += f" [{self.eta_text()}]"
        if self.interactive:
            self._refresh()
            self.bar.write(line)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()


# --- the run -----------------------------------------------------------------------------------------


def git_info(cwd=None) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def default_out_dir(suite: Suite, root="results") -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{suite.name}-{stamp}"


def latest_run_dir(suite: Suite, root="results") -> Path:
    """The run of ``suite`` under ``root`` that started last, by each folder's own run.json (suite name,
    start time): a folder's name may be anything (``--out``), or another suite's that shares a prefix."""
    candidates = []
    for path in Path(root).glob("*/run.json"):
        try:
            info = read_json_object(path)
            if info["suite"]["name"] != suite.name:
                continue
            # A run whose start was lost (rebuilt from records that did not carry it) counts from the rebuild.
            started = dt.datetime.fromisoformat(info["started"] or info["recovered"]["at"])
            if started.tzinfo is None:
                started = started.replace(tzinfo=dt.timezone.utc)
        except (HarnessError, ValueError, KeyError, TypeError):
            continue  # not a run folder of this harness, or damaged: never a folder to resume
        candidates.append((started, path.parent.name, path.parent))
    if not candidates:
        raise HarnessError(f"--resume: no earlier run of suite {suite.name!r} under {root}/")
    return max(candidates)[2]


def run_suite(suite: Suite, cells: list[GridCell], out_dir, argv: list[str], executor=None,
              calibrate: bool = True, stream=None, tensorboard=None,
              system_malloc: bool | None = None, drain: threading.Event | None = None,
              retrain: frozenset[str] = frozenset()) -> tuple[int, Path]:
    """Train every cell of ``cells`` not already stored in ``out_dir``. Returns (exit code, run folder).
    ``tensorboard``: a ``harness.grid.tensorboard.TensorBoardLog`` that gets each cell's epochs.
    ``system_malloc``: leave the workers' malloc alone (True) or have it keep freed memory (False,
    ``harness.host.malloc``); None: a new run keeps freed memory, a resumed one keeps its own setting.
    ``drain``: once set, the cells in flight finish and are stored, no other cell starts, and
    ``HarnessDrained`` says how to resume.
    ``retrain``: stored outcomes besides ``failed`` whose cells are trained again (``timeout``, ``diverged``)."""
    from harness.host.machine import describe

    executor = executor or LocalExecutor()
    run_dir = RunDir(out_dir)
    existing = run_dir.read_run_json() if run_dir.run_json.exists() else None
    if existing is not None and existing.get("config_hash") != suite.config_hash():
        changed = cell_changes(existing["suite"], suite)
        if changed:
            raise HarnessError(f"{run_dir.path}: refusing to resume: the suite's cells changed ({changed}); "
                               "use another --out")
        # The same cells: the edit (description, claims) applies to the run from now on.
        existing.update(suite={**suite.resolved(), "file": suite.path}, config_hash=suite.config_hash())
    # Stored records are adopted by cell id: one trained with another configuration (a folder whose
    # run.json is gone, another suite's folder) must not pass for this suite's cell.
    records, damaged = run_dir.read_records()
    for problem in damaged.values():
        # Cannot happen with atomic writes unless something else wrote there; such a cell is trained again.
        print(f"warning: {problem}; the cell is trained again", file=stream or sys.stderr)
    foreign = foreign_records(records, cells)
    if foreign:
        raise HarnessError(f"{run_dir.path}: {len(foreign)} stored cell(s) were trained with another configuration "
                           f"than this suite's, e.g. {foreign[0]}; use another --out")
    ours = {c.cell_id: records[c.cell_id] for c in cells if c.cell_id in records}
    if existing is None and ours:
        # run.json is gone but cells of this suite are stored: the run goes on as the one they belong to,
        # with its start, machine and calibration as its records carry them, and this part as a resume.
        existing = _recovered_run_json(suite, ours, run_dir.path, stream or sys.stderr)
    malloc = _run_malloc_setting(existing, system_malloc, run_dir.path)
    stored = records if existing is not None else {}
    # Failed cells are trained again (a missing corpus or a crash may have been fixed since); a diverged or
    # timed-out cell would only do the same again, unless asked for (a timeout caused by a busy machine).
    again = {"failed", *retrain}
    pending = [c for c in cells if stored.get(c.cell_id, {}).get("status", "failed") in again]
    local = executor.name == "local"
    will_skip = set(cells_without_device(pending)) if local else set()
    if local:
        preflight(pending, will_skip)
    run_dir.lock()
    order = [c.cell_id for c in cells]
    info = existing or {
        "suite": {**suite.resolved(), "file": suite.path},
        "config_hash": suite.config_hash(),
        "started": now_iso(),
    }
    provenance = {"command": argv, "git": git_info(), "machine": describe(), "executor": executor.name}
    if existing is None:
        info.update(provenance)
    else:
        # The first part of a run defines its provenance; each resume is recorded beside it, and a
        # change of code or machine between the parts is said out loud.
        info.setdefault("resumes", []).append({**provenance, "started": now_iso()})
        if (info.get("recovered") or {}).get("facts", True):  # nothing to compare with when they were lost
            _warn_if_changed(info, provenance)
    info.update(threads=sorted({c.config.threads for c in cells if c.config.threads}), finished=None,
                malloc=_malloc_label(malloc))
    info["cells"] = list(dict.fromkeys((info.get("cells") or []) + order))
    if calibrate:
        # The machine's speed at the start of each part and (below) at the end of the run: if it moved,
        # timings from different parts of the run are not comparable (harness.analysis.timing_trust flags it).
        if "calibration" not in info:
            info["calibration"] = calibrate_cells(cells)
        elif existing is not None:
            info["resumes"][-1]["calibration"] = calibrate_cells(cells)
    if "baselines" not in info:
        baselines = run_baselines((c.config.corpus, c.config.strip_boilerplate, c.config.max_tokens,
                                   c.config.val_tokens) for c in cells)[0]
        if baselines:
            info["baselines"] = baselines
    write_json_atomic(run_dir.run_json, info)

    done = run_dir.finished_records()
    retry = {c.cell_id for c in cells if done.get(c.cell_id, {}).get("status") in again}
    pending = [c for c in cells if c.cell_id not in done or c.cell_id in retry]
    checkpoints = run_dir.checkpoints()
    started_epochs = {cid: summary["epoch"] for cid, summary in checkpoints.items()
                      if isinstance(summary.get("epoch"), int)}
    estimates = remaining_estimates(pending, started_epochs, will_skip)
    progress = Progress(len(cells), len(cells) - len(pending), stream=stream, estimates=estimates,
                        started_epochs=started_epochs)
    going_on = sorted(set(started_epochs) & {c.cell_id for c in pending})
    if len(pending) < len(cells) or retry or going_on:
        print(f"resuming {run_dir.path}: {len(cells) - len(pending)} of {len(cells)} cells already stored"
              + (f"; training the {len(retry)} {retry_label(done[cid]['status'] for cid in retry)} ones again"
                 if retry else "")
              + (f"; {len(going_on)} going on from their checkpoints (epochs "
                 f"{', '.join(str(started_epochs[cid]) for cid in going_on)})" if going_on else ""),
              file=progress.stream)
    print(plan_text(suite, pending, estimates, will_skip, executor.name), file=progress.stream, flush=True)
    stop = threading.Event()
    executor.malloc = malloc
    statuses = [done[c.cell_id]["status"] for c in cells if c.cell_id in done and c.cell_id not in retry]
    if tensorboard is not None:
        progress.epoch_listeners.append(lambda cell, row: tensorboard.epoch(cell.cell_id, row))
    # FLOP utilisation against this part's calibration: a resume may be on a machine of another speed.
    part = info["resumes"][-1] if existing is not None else None  # this part, when it is not the first
    calibration = (part or info).get("calibration")  # None without calibration: not another part's
    drain = drain or threading.Event()
    if drain.is_set():  # asked during the set-up: start nothing
        progress.close()
        raise HarnessDrained(run_dir.path, len(pending))
    stored_here = 0
    try:
        for cell, record in executor.execute(pending, run_dir, progress, stop, drain):
            stored_here += 1
            run_dir.store(cell, record, calibration, run_facts=info, part=part)
            run_dir.add_to_tables(cell.cell_id, info["cells"], rebuild=cell.cell_id in done)
            if tensorboard is not None:
                tensorboard.finish(cell.cell_id, record)
            progress.finish_cell(cell, record)
            statuses.append(record["status"])
    except KeyboardInterrupt:
        stop.set()
        progress.close()
        raise HarnessInterrupted(run_dir.path, len(run_dir.checkpoints())) from None
    finally:
        progress.close()
        if tensorboard is not None:
            tensorboard.close()
    if drain.is_set() and stored_here < len(pending):
        raise HarnessDrained(run_dir.path, len(pending) - stored_here)
    run_dir.tidy_checkpoints()
    run_dir.rebuild_tables(info["cells"])
    records = run_dir.finished_records()
    info["corpus_sha256"] = sorted({r.get("corpus_sha256") for r in records.values() if r.get("corpus_sha256")})
    if calibrate and pending:
        info["calibration_end"] = calibrate_cells(cells)
    info["finished"] = now_iso()
    write_json_atomic(run_dir.run_json, info)
    code = 1 if any(s in PROBLEM_STATUSES for s in statuses) else 0
    return code, run_dir.path


def retry_label(statuses) -> str:
    """The outcomes of the cells a resume trains again, in words: e.g. 'failed or timed-out'."""
    statuses = set(statuses)
    return " or ".join({"timeout": "timed-out"}.get(s, s) for s in ("failed", *RETRAINABLE) if s in statuses)


def _malloc_label(malloc: str) -> str:
    """What the workers of a run of setting ``malloc`` get, as ``harness.host.malloc.malloc_label`` names it
    (values already in this environment win, so ``keep-freed`` may become other variables)."""
    from harness.host.malloc import KEPT, malloc_label, malloc_settings

    return malloc_label(malloc_settings(malloc != KEPT))


def _run_malloc_setting(existing: dict | None, system_malloc: bool | None, path: Path) -> str:
    """The malloc setting of this run's workers (``keep-freed`` or ``system``: what the environment gives):
    a resumed run keeps the one it was started with (its cells' timings stay comparable), so asking for the
    other one is an error."""
    from harness.host.malloc import KEPT, SYSTEM, run_malloc

    asked = None if system_malloc is None else (SYSTEM if system_malloc else KEPT)
    if existing is None:
        return asked or KEPT
    stored = KEPT if run_malloc(existing) == KEPT else SYSTEM
    if asked is not None and asked != stored:
        flag = "--system-malloc" if system_malloc else "without --system-malloc"
        raise HarnessError(f"{path}: refusing to resume {flag}: the run's workers were started with malloc "
                           f"{stored!r}, and its cells' timings must stay comparable; use another --out")
    return stored


def _recovered_run_json(suite: Suite, records: dict[str, dict], path: Path, stream) -> dict:
    """The run.json of a folder that lost it, rebuilt from what its (matching) cell records carry."""
    facts = run_facts_from_records(records)
    other_runs = facts.pop("other_runs", []) if facts else []
    recovered = {"at": now_iso(), "records": len(records), "facts": facts is not None}
    if other_runs:
        recovered["other_runs"] = other_runs
    info = {"suite": {**suite.resolved(), "file": suite.path}, "config_hash": suite.config_hash(),
            **(facts or {}), "recovered": recovered}
    if facts is None:
        info.update(started=None, machine=machine_from_records(records))  # start unknown; machine from the cells
        print(f"warning: {path}/run.json is missing and its {len(records)} stored cell(s) do not say when the run "
              "started; the run goes on with its start unknown", file=stream)
    else:
        print(f"warning: {path}/run.json is missing; the run's start ({facts['started']}), machine, calibration and "
              f"{len(facts['resumes'])} resumed part(s) are taken from its {len(records)} stored cell(s)"
              + (f"; cells of {len(other_runs)} other run(s) (started {', '.join(other_runs)}) are adopted into it"
                 if other_runs else ""), file=stream)
    return info


def foreign_records(records: dict[str, dict], cells: list[GridCell]) -> list[str]:
    """The stored records of ``cells`` whose recorded configuration is not the cell's, each as
    ``cell_id (key old -> new)``. A key the record predates counts as its default value then."""
    from harness.errors import quote
    from harness.spec.suite import FIELD_TO_SUITE_KEY

    defaults = CellConfig.model_construct().model_dump(mode="json")
    found = []
    for cell in cells:
        record = records.get(cell.cell_id)
        if record is None:
            continue
        config = record.get("config")
        if not isinstance(config, dict):
            found.append(f"{cell.cell_id} (no configuration recorded)")
            continue
        old = {**defaults, **{k: v for k, v in config.items() if k in FIELDS}}
        new = cell.config.model_dump(mode="json")
        key = next((k for k in FIELDS if old.get(k) != new.get(k)), None)
        if key is not None:
            found.append(f"{cell.cell_id} ({FIELD_TO_SUITE_KEY.get(key, key)} {quote(old.get(key), 40)} -> "
                         f"{quote(new.get(key), 40)})")
    return found


def cells_without_device(cells: list[GridCell]) -> list[str]:
    """The cells this machine will skip at once: CUDA cells without a CUDA device."""
    if not any(c.config.device == "cuda" for c in cells):
        return []
    import torch

    return [] if torch.cuda.is_available() else [c.cell_id for c in cells if c.config.device == "cuda"]


def preflight(cells: list[GridCell], will_skip: set[str]) -> None:
    """Stop before anything is written when every cell to train would fail the same way: each of their
    corpora cannot be found, read or split as configured. A corpus that only some cells use fails those
    cells alone, as before; a download is tried once here, not in every cell."""
    from harness.cell.batches import load_corpus

    runnable = [c for c in cells if c.cell_id not in will_skip]
    errors: dict[tuple, str | None] = {}
    for cell in runnable:
        cfg = cell.config
        key = (cfg.corpus, cfg.strip_boilerplate, cfg.max_tokens, cfg.val_tokens, cfg.select_tokens)
        if key not in errors:
            try:
                load_corpus(*key)
                errors[key] = None
            except HarnessError as exc:
                errors[key] = str(exc)
            except OSError as exc:
                errors[key] = f"corpus {cfg.corpus}: cannot read it ({exc.strerror or exc})"
    if runnable and errors and all(errors.values()):
        first = next(iter(errors.values()))
        raise HarnessError(f"{first} (all {len(runnable)} cells to train need it; nothing was trained)")
    from harness.cell.train import effective_impl

    fused = [c for c in runnable if effective_impl(c.config) == "fused"]
    if fused:
        # Built once here (then cached on disk) rather than in every cell; a machine that cannot build it
        # would fail each of those cells the same way.
        from harness.cell.fused_rnn import load_extension

        try:
            load_extension()
        except HarnessError as exc:
            need = f"{len(fused)} cells to train need it" if len(fused) > 1 else "1 cell to train needs it"
            raise HarnessError(f"{exc} ({need}; nothing was trained)") from None


def remaining_estimates(pending: list[GridCell], started_epochs: dict[str, int], will_skip: set[str]) -> dict[str, float]:
    """Each pending cell's estimated seconds (``harness.cell.cost``): none for one that will be skipped, and for
    one that goes on from a checkpoint after epoch k of n, the share (n - k) / n of its estimate."""
    estimates = {}
    for cell in pending:
        if cell.cell_id in will_skip:
            estimates[cell.cell_id] = 0.0
            continue
        epochs = max(1, cell.config.epochs)
        done = min(max(0, started_epochs.get(cell.cell_id, 0)), epochs)
        estimates[cell.cell_id] = estimate_seconds(cell.config) * (epochs - done) / epochs
    return estimates


def plan_text(suite: Suite, pending: list[GridCell], estimates: dict[str, float], will_skip: set[str],
              executor: str) -> str:
    """What is about to happen, before it does: the cells by their axes and the estimated time."""
    if not pending:
        return f"{suite.name}: nothing to train"
    axes: dict[str, list] = {}
    for cell in pending:
        for key, value in cell.axes.items():
            axes.setdefault(key, [])
            if value not in axes[key]:
                axes[key].append(value)
    shape = " x ".join(f"{key} {', '.join(map(str, values))}" for key, values in axes.items() if values)
    total = sum(estimates.values())
    when = "one at a time" if executor == "local" else "added up over the cells"
    lines = [f"{suite.name}: {len(pending)} cells to train ({shape})",
             f"estimated {format_duration(total)} ({when}; a rough a-priori estimate fitted on a 2-core CPU, "
             "corrected by the ETA as cells finish)"]
    if will_skip:
        lines.append(f"{len(will_skip)} CUDA cells will be skipped: CUDA is not available on this machine")
    return "\n".join(lines)


def _warn_if_changed(info: dict, now: dict) -> None:
    changes = []
    if (info.get("git") or {}).get("commit") != now["git"].get("commit"):
        changes.append(f"git commit {(info.get('git') or {}).get('commit')} -> {now['git'].get('commit')}")
    for key in ("cpu_model", "gpu_name", "torch", "python"):
        before, after = (info.get("machine") or {}).get(key), now["machine"].get(key)
        if before != after:
            changes.append(f"{key} {before} -> {after}")
    if changes:
        print(f"warning: resuming {info['suite']['name']} with a different setup ({'; '.join(changes)}); "
              "timings of the two parts are not comparable", file=sys.stderr)


class HarnessInterrupted(HarnessError):
    exit_code = 130

    def __init__(self, path, started: int = 0):
        # Checkpoints of this part and of earlier ones alike: unfinished cells, not necessarily in flight.
        kept = ("; 1 unfinished cell will go on from its checkpoint" if started == 1 else
                f"; {started} unfinished cells will go on from their checkpoints" if started else "")
        super().__init__(f"interrupted; finished cells are stored in {path}{kept}; continue with --resume {path}")


class HarnessDrained(HarnessError):
    """Stopped as asked after the cells in flight: an interruption that lost nothing."""

    exit_code = 130

    def __init__(self, path, left: int):
        super().__init__(f"stopped after the cells in flight; {left} cell{'s' if left != 1 else ''} not trained; "
                         f"finished cells are stored in {path}; continue with --resume {path}")


def calibrate_cells(cells: list[GridCell]) -> dict:
    """run.json's calibration for these cells: each device they use, at each CPU thread count they use."""
    import torch

    from harness.host.calibration import calibrate

    devices = sorted({c.config.device for c in cells if c.config.device == "cpu" or torch.cuda.is_available()})
    threads = max((c.config.threads or 0 for c in cells), default=0) or None
    counts = sorted({c.config.threads for c in cells if c.config.device == "cpu"}, key=lambda t: t or 0)
    return calibrate(devices, threads, thread_counts=counts)


def iter_cells_table(cells: Iterable[GridCell]) -> list[dict]:
    return [{"cell_id": c.cell_id, **c.axes, "epochs": c.config.epochs,
             "estimate_s": round(estimate_seconds(c.config), 1)} for c in cells]
