"""The grid runner: trains pending cells one process each, stores each result as it finishes, resumes.

Storage is crash-safe: a finished cell is one JSON file written atomically under ``cells/``; the CSV
tables are rebuilt from those files (atomically) after every cell. Killing the runner at any moment
therefore loses at most the cell in flight, and a resumed run trains exactly the missing cells.

A cell's process is ``harness.grid.cell_process``'s; what the run shows while it trains is
``harness.grid.progress``'s.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, TextIO

from harness.spec.config import FIELDS, CellConfig
from harness.cell.cost import estimate_seconds
from harness.errors import HarnessError
from harness.results.run_folder import RunDir, machine_from_records, read_json_object, run_facts_from_records
from harness.results.atomic import write_json_atomic
from harness.spec.suite import GridCell, Suite, cell_changes
from harness.analysis.run_text import other_text_baselines, run_baselines
from harness.grid.cell_process import LocalExecutor
from harness.grid.progress import Progress, plan_text, remaining_estimates, resume_command

if TYPE_CHECKING:
    from harness.grid.tensorboard import TensorBoardLog

PROBLEM_STATUSES = ("failed", "diverged", "timeout")
RETRAINABLE = ("timeout", "diverged")  # outcomes `run --retrain` may train again; "failed" always is


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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


@dataclass(frozen=True)
class RunOptions:
    """How ``run_suite`` trains, besides what and where.

    ``executor``: runs the cells (a ``LocalExecutor`` if None). ``calibrate``: measure the machine's speed
    at the start of each part of the run and at its end (run.json's calibration). ``stream``: where the
    plan, the progress and the run folder's warnings go (stderr if None). ``tensorboard``: a
    ``harness.grid.tensorboard.TensorBoardLog`` that gets each cell's epochs. ``system_malloc``: leave the
    workers' malloc alone (True) or have it keep freed memory (False, ``harness.host.malloc``); None: a new
    run keeps freed memory, a resumed one keeps its own setting. ``drain``: once set, the cells in flight
    finish and are stored, no other cell starts, and ``HarnessDrained`` says how to resume. ``retrain``:
    stored outcomes besides ``failed`` whose cells are trained again (``timeout``, ``diverged``)."""

    executor: Any = None
    calibrate: bool = True
    stream: TextIO | None = None
    tensorboard: TensorBoardLog | None = None
    system_malloc: bool | None = None
    drain: threading.Event | None = None
    retrain: frozenset[str] = frozenset()

    @property
    def trained_again(self) -> frozenset[str]:
        # Failed cells are trained again (a missing corpus or a crash may have been fixed since); a diverged or
        # timed-out cell would only do the same again, unless asked for (a timeout caused by a busy machine).
        return frozenset({"failed", *self.retrain})


@dataclass
class OpenRun:
    """A run folder locked for the part of its run that starts now: run.json as written for it, and the
    cells this part trains."""

    run_dir: RunDir
    info: dict  # run.json
    resumed: bool  # an earlier part of the run exists (or its stored cells do)
    malloc: str  # the workers' malloc setting (harness.host.malloc)
    will_skip: set[str]  # cells this machine skips at once: CUDA cells without a CUDA device
    stored: dict[str, dict]  # the finished records before this part trains any
    retry: set[str]  # stored cells trained again: their outcome is one to train again
    pending: list[GridCell]  # the cells to train: not stored, or trained again

    @property
    def part(self) -> dict | None:
        """This part's entry in run.json's resumes; None for the run's first part."""
        return self.info["resumes"][-1] if self.resumed else None


def run_suite(suite: Suite, cells: list[GridCell], out_dir, argv: list[str], options: RunOptions | None = None,
              **option_values) -> tuple[int, Path]:
    """Train every cell of ``cells`` not already stored in ``out_dir``. Returns (exit code, run folder).
    ``options``: how (``RunOptions``); ``option_values`` set its fields by name, e.g. ``calibrate=False``."""
    options = replace(options or RunOptions(), **option_values)
    executor = options.executor or LocalExecutor()
    stream = options.stream or sys.stderr
    run = open_run(suite, cells, RunDir(out_dir), argv, executor.name, options, stream)
    progress = start_progress(suite, cells, run, executor.name, stream)
    statuses = [run.stored[c.cell_id]["status"] for c in cells
                if c.cell_id in run.stored and c.cell_id not in run.retry]  # the stored outcomes that stand
    executor.malloc = run.malloc
    statuses += train_and_store(run, progress, executor, options)
    finish_run(run, cells, calibrate=options.calibrate and bool(run.pending))
    code = 1 if any(s in PROBLEM_STATUSES for s in statuses) else 0
    return code, run.run_dir.path


def open_run(suite: Suite, cells: list[GridCell], run_dir: RunDir, argv: list[str], executor_name: str,
             options: RunOptions, stream) -> OpenRun:
    """Check ``run_dir`` against this suite and the cells to train, then lock it, write run.json for the part
    of the run that starts now (a new run's, or a resume's beside the earlier parts), and find the cells
    this part trains: those not stored, and those whose stored outcome is one to train again."""
    corpora = corpus_hashes(cells)
    existing, records = stored_run(suite, cells, run_dir, stream, corpora=corpora, retrain=options.retrain)
    malloc = _run_malloc_setting(existing, options.system_malloc, run_dir.path)
    run_records = records if existing is not None else {}
    to_check = [c for c in cells if run_records.get(c.cell_id, {}).get("status", "failed") in options.trained_again]
    local = executor_name == "local"
    will_skip = set(cells_without_device(to_check)) if local else set()
    if local:
        preflight(to_check, will_skip)
    run_dir.lock()
    info = start_part(suite, cells, existing, argv, executor_name, malloc, options.calibrate)
    info["corpora"] = {**(info.get("corpora") or {}), **corpora}
    write_json_atomic(run_dir.run_json, info)
    done = run_dir.finished_records()
    retry = {c.cell_id for c in cells if done.get(c.cell_id, {}).get("status") in options.trained_again}
    pending = [c for c in cells if c.cell_id not in done or c.cell_id in retry]
    return OpenRun(run_dir, info, existing is not None, malloc, will_skip, done, retry, pending)


def stored_run(suite: Suite, cells: list[GridCell], run_dir: RunDir, stream, corpora: dict[str, str] | None = None,
               retrain: frozenset[str] = frozenset()) -> tuple[dict | None, dict[str, dict]]:
    """What ``run_dir`` holds already: its run.json (None for a new run; rebuilt from this suite's stored
    cells when it was lost) and its stored records. HarnessError where going on would mix runs: the
    suite's cells changed, a stored cell was trained with another configuration, or on another text than
    the corpus files hold now (``corpora``, ``corpus_hashes``). ``retrain``: the outcomes trained again; with
    ``timeout``, a new run.timeout is no change (that is what training timed-out cells again is for)."""
    existing = run_dir.read_run_json() if run_dir.run_json.exists() else None
    loose = frozenset({"timeout"}) if "timeout" in retrain else frozenset()
    if existing is not None and existing.get("config_hash") != suite.config_hash():
        changed = "" if loose and not _cells_differ(existing["suite"], suite, loose) else cell_changes(existing["suite"], suite)
        if changed:
            hint = ("; a new run.timeout is taken with --retrain timeout"
                    if not loose and not _cells_differ(existing["suite"], suite, {"timeout"}) else "")
            raise HarnessError(f"{run_dir.path}: refusing to resume: the suite's cells changed ({changed}){hint}; "
                               "use another --out")
        # The same cells: the edit (description, claims) applies to the run from now on.
        existing.update(suite={**suite.resolved(), "file": suite.path}, config_hash=suite.config_hash())
    # Stored records are adopted by cell id: one trained with another configuration (a folder whose
    # run.json is gone, another suite's folder) must not pass for this suite's cell.
    records, damaged = run_dir.read_records()
    for problem in damaged.values():
        # Cannot happen with atomic writes unless something else wrote there; such a cell is trained again.
        print(f"warning: {problem}; the cell is trained again", file=stream)
    foreign = foreign_records(records, cells, ignore=loose)
    if foreign:
        raise HarnessError(f"{run_dir.path}: {len(foreign)} stored cell(s) were trained with another configuration "
                           f"than this suite's, e.g. {foreign[0]}; use another --out")
    _check_corpora(run_dir.path, existing, records, corpus_hashes(cells) if corpora is None else corpora)
    ours = {c.cell_id: records[c.cell_id] for c in cells if c.cell_id in records}
    if existing is None and ours:
        # run.json is gone but cells of this suite are stored: the run goes on as the one they belong to,
        # with its start, machine and calibration as its records carry them, and this part as a resume.
        existing = _recovered_run_json(suite, ours, run_dir.path, stream)
    return existing, records


def portable_command(argv: list[str]) -> list[str]:
    """The command line as recorded in run.json: an absolute path inside a git repository is written
    relative to that repository's root (``results/NAME``), so that a committed run names no machine's
    folders; anything else as given."""
    def portable(text: str) -> str:
        path = Path(text)
        root = next((folder for folder in (path, *path.parents) if (folder / ".git").exists()), None) \
            if path.is_absolute() else None
        return str(path.relative_to(root)) if root is not None and path != root else text

    out = []
    for arg in argv:
        flag, equals, value = arg.partition("=")
        out.append(f"{flag}={portable(value)}" if arg.startswith("--") and equals else portable(arg))
    return out


def start_part(suite: Suite, cells: list[GridCell], existing: dict | None, argv: list[str], executor_name: str,
               malloc: str, calibrate: bool) -> dict:
    """run.json as the part of the run that starts now has it: ``existing`` (an earlier part's) or a new
    run's, with this part's provenance, settings, cells, calibration and the corpora's baselines."""
    from harness.host.machine import describe

    info = existing or {
        "suite": {**suite.resolved(), "file": suite.path},
        "config_hash": suite.config_hash(),
        "started": now_iso(),
    }
    provenance = {"command": portable_command(argv), "git": git_info(), "machine": describe(), "executor": executor_name}
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
    info["cells"] = list(dict.fromkeys((info.get("cells") or []) + [c.cell_id for c in cells]))
    if calibrate:
        # The machine's speed at the start of each part and (finish_run) at the end of the run: if it moved,
        # timings from different parts of the run are not comparable (harness.analysis.timing_trust flags it).
        if "calibration" not in info:
            info["calibration"] = calibrate_cells(cells)
        elif existing is not None:
            info["resumes"][-1]["calibration"] = calibrate_cells(cells)
    splits = [(c.config.corpus, c.config.strip_boilerplate, c.config.max_tokens, c.config.val_tokens,
               c.config.train_text, c.config.select_tokens) for c in cells]
    if "baselines" not in info:
        baselines = run_baselines(splits)[0]
        if baselines:
            info["baselines"] = baselines
    # The cells trained on another text (the whole book) are placed against baselines counted on their own.
    others = other_text_baselines(splits, info.get("text_baselines"))
    if others:
        info["text_baselines"] = others
    return info


def start_progress(suite: Suite, cells: list[GridCell], run: OpenRun, executor_name: str, stream) -> Progress:
    """Print what a resume keeps and the plan of what is about to train; returns the progress display over
    the cells to train."""
    pending, retry = run.pending, run.retry
    started_epochs = {cid: summary["epoch"] for cid, summary in run.run_dir.checkpoints().items()
                      if isinstance(summary.get("epoch"), int)}
    estimates = remaining_estimates(pending, started_epochs, run.will_skip)
    going_on = sorted(set(started_epochs) & {c.cell_id for c in pending})
    if len(pending) < len(cells) or retry or going_on:
        print(f"resuming {run.run_dir.path}: {len(cells) - len(pending)} of {len(cells)} cells already stored"
              + (f"; training the {len(retry)} {retry_label(run.stored[cid]['status'] for cid in retry)} ones again"
                 if retry else "")
              + (f"; {len(going_on)} going on from their checkpoints (epochs "
                 f"{', '.join(str(started_epochs[cid]) for cid in going_on)})" if going_on else ""),
              file=stream)
    print(plan_text(suite, pending, estimates, run.will_skip, executor_name), file=stream, flush=True)
    # Only now: on a terminal the bar draws itself at once, and a line printed after it would be overwritten.
    return Progress(len(cells), len(cells) - len(pending), stream=stream, estimates=estimates,
                    started_epochs=started_epochs)


def train_and_store(run: OpenRun, progress: Progress, executor, options: RunOptions) -> list[str]:
    """Train the run's pending cells, storing each (record, tables, TensorBoard) as it finishes; returns
    their outcomes. HarnessInterrupted on Ctrl-C or SIGTERM, HarnessDrained when ``options.drain`` stopped
    the run before every cell was trained; the cells stored until then stay stored either way."""
    run_dir, info, pending, tensorboard = run.run_dir, run.info, run.pending, options.tensorboard
    stop = threading.Event()
    if tensorboard is not None:
        progress.epoch_listeners.append(lambda cell, row: tensorboard.epoch(cell.cell_id, row))
    # FLOP utilisation against this part's calibration: a resume may be on a machine of another speed.
    calibration = (run.part or info).get("calibration")  # None without calibration: not another part's
    drain = options.drain or threading.Event()
    if drain.is_set():  # asked during the set-up: start nothing
        progress.close()
        raise HarnessDrained(run_dir.path, len(pending), resume_command(info, run_dir.path))
    statuses = []
    try:
        for cell, record in executor.execute(pending, run_dir, progress, stop, drain):
            run_dir.store(cell, record, calibration, run_facts=info, part=run.part)
            run_dir.add_to_tables(cell.cell_id, info["cells"], rebuild=cell.cell_id in run.stored)
            if tensorboard is not None:
                tensorboard.finish(cell.cell_id, record)
            progress.finish_cell(cell, record)
            statuses.append(record["status"])
    except KeyboardInterrupt:
        stop.set()
        progress.close()
        raise HarnessInterrupted(run_dir.path, len(run_dir.checkpoints()), resume_command(info, run_dir.path)) from None
    finally:
        progress.close()
        if tensorboard is not None:
            tensorboard.close()
    if drain.is_set() and len(statuses) < len(pending):
        raise HarnessDrained(run_dir.path, len(pending) - len(statuses), resume_command(info, run_dir.path))
    return statuses


def finish_run(run: OpenRun, cells: list[GridCell], calibrate: bool) -> None:
    """Close the part of the run that trained: drop the finished cells' checkpoints, rebuild the tables, and
    complete run.json (the corpora's hashes, the machine's speed at the end, when it finished)."""
    run_dir, info = run.run_dir, run.info
    run_dir.tidy_checkpoints()
    run_dir.rebuild_tables(info["cells"])
    records = run_dir.finished_records()
    info["corpus_sha256"] = sorted({r.get("corpus_sha256") for r in records.values() if r.get("corpus_sha256")})
    if calibrate:
        info["calibration_end"] = calibrate_cells(cells)
    info["finished"] = now_iso()
    write_json_atomic(run_dir.run_json, info)


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


def corpus_hashes(cells: list[GridCell]) -> dict[str, str]:
    """The SHA-256 of each corpus file the cells use, by the corpus as the suite names it. A corpus not on
    this machine yet (to download) is left out: its cells record the hash of what they fetch."""
    import hashlib

    from harness.cell.corpus import resolve_corpus

    hashes = {}
    for name in sorted({c.config.corpus for c in cells}):
        try:
            hashes[name] = hashlib.sha256(resolve_corpus(name, offline=True).read_bytes()).hexdigest()
        except (HarnessError, OSError):
            continue  # missing or unreadable: preflight or the cell says so
    return hashes


def _check_corpora(path: Path, existing: dict | None, records: dict[str, dict], corpora: dict[str, str]) -> None:
    """A run folder holds one text per corpus: HarnessError when a corpus file changed since the run recorded
    it (run.json's ``corpora``) or since a stored cell was trained on it (its ``corpus_sha256``), whatever
    cells this part selects; otherwise the run's claims would compare cells of different texts."""
    from harness.cell.corpus import resolve_corpus

    before = [(name, digest) for name, digest in ((existing or {}).get("corpora") or {}).items()]
    before += [((r.get("config") or {}).get("corpus"), r.get("corpus_sha256")) for r in records.values()]
    for name, digest in before:
        if name in corpora and digest and digest != corpora[name]:
            raise HarnessError(f"{path}: refusing to go on: corpus file {resolve_corpus(name, offline=True)} changed "
                               f"since the run's cells were trained on it (SHA-256 {digest[:12]}... -> "
                               f"{corpora[name][:12]}...); a run folder holds one text; use another --out")


def _cells_differ(stored: dict, suite: Suite, ignore) -> bool:
    """Whether ``suite`` expands to other cells than the recorded suite (run.json's ``suite``), leaving the
    configuration keys in ``ignore`` out of the comparison."""
    from harness.spec.suite import expand, recorded_suite

    def hashes(of: Suite) -> dict[str, str]:
        return {c.cell_id: c.config.model_copy(update=dict.fromkeys(ignore)).config_hash() for c in expand(of)}

    try:
        return hashes(recorded_suite(stored, f"{suite.path} (as recorded)")) != hashes(suite)
    except (HarnessError, AttributeError, TypeError, ValueError):
        return True


def foreign_records(records: dict[str, dict], cells: list[GridCell], ignore=frozenset()) -> list[str]:
    """The stored records of ``cells`` whose recorded configuration is not the cell's, each as
    ``cell_id (key old -> new)``; the keys in ``ignore`` may differ. A key the record predates counts as its
    default value then."""
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
        key = next((k for k in FIELDS if k not in ignore and old.get(k) != new.get(k)), None)
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
    from harness.cell.plugin import is_plugin, load_factory

    for spec in dict.fromkeys(c.config.cell for c in runnable if is_plugin(c.config.cell)):
        load_factory(spec)  # a module or factory that is not there fails every cell of it: say so once, now
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

    def __init__(self, path, started: int = 0, command: str | None = None):
        # Checkpoints of this part and of earlier ones alike: unfinished cells, not necessarily in flight.
        kept = ("; 1 unfinished cell will go on from its checkpoint" if started == 1 else
                f"; {started} unfinished cells will go on from their checkpoints" if started else "")
        super().__init__(f"interrupted; finished cells are stored in {path}{kept}; continue with --resume {path}"
                         + (f": {command}" if command else ""))


class HarnessDrained(HarnessError):
    """Stopped as asked after the cells in flight: an interruption that lost nothing."""

    exit_code = 130

    def __init__(self, path, left: int, command: str | None = None):
        super().__init__(f"as asked, stopped after the cells in flight; {left} cell{'s' if left != 1 else ''} not "
                         f"trained; finished cells are stored in {path}; continue with: "
                         + (command or f"--resume {path}"))


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
