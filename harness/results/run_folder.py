"""The results format, in one place: what a run folder holds, how it is written and how it is read back.

A run folder (docs/results-format.md)::

    run.json          the suite, provenance, calibration (one JSON object)
    cells/<name>.json one record per finished cell, written atomically: the source of truth
    cells.csv         one row per cell        } derived from the records (appended as cells finish,
    epochs.csv        one row per cell epoch  }  rebuilt at the end of a run)
    samples.csv       one row per sample      }  a large one as <table>.gz (harness.results.tables)
    logs/<name>.log   what each cell's process printed
    losses/<name>.npz per-position held-out losses of the cell's evaluations (harness.results.losses)
    .checkpoints/     the state of cells in training (harness.cell.checkpoint), deleted as each is stored

``<name>`` is the cell id, or for a long one a prefix of it and a hash (``cell_file_name``).

Everything that reads a run folder (runner, ``show``, report, ``compare``, baselines) goes through this
module, so that a damaged file is handled the same way everywhere: a record or run.json that cannot be
read is named with what is wrong with it; a table row that is cut short, differs from its cell's record
or is missing is read from the record instead, and said so (``Tables.notes``).

No torch, pandas only inside the functions that build tables: read-only commands import this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError, quote
from harness.results.calibration import flops_utilization
from harness.results.atomic import write_json_atomic
from harness.results.losses import PositionLosses, read_losses, write_losses
from harness.results.tables import TABLES, append_tables, frames_from_records, read_checked_table, rebuild_tables

# --- JSON files ----------------------------------------------------------------------------------------


def read_json_object(path, *, label: str | None = None, missing: str | None = None, what: str = "") -> dict:
    """The JSON object in ``path``, or HarnessError (one line) starting with ``label`` (the path by default):
    ``missing`` is the message for an absent file (else the system's), ``what`` completes "expected a JSON
    object" when the file holds another JSON value."""
    path = Path(path)
    label = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessError(f"{label}: {missing or 'cannot read: no such file'}") from None
    except OSError as exc:
        raise HarnessError(f"{label}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{label}: unreadable: not UTF-8 text") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{label}: unreadable: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise HarnessError(f"{label}: unreadable: nested too deeply") from None
    if not isinstance(value, dict):
        raise HarnessError(f"{label}: expected a JSON object{' ' + what if what else ''}")
    return value


def read_run_json(path, required: bool = False) -> dict | None:
    """A run folder's run.json (``path``: the folder), None when it has none and not ``required``."""
    run_json = Path(path) / "run.json"
    if not run_json.exists() and not required:
        return None
    info = read_json_object(run_json, missing="missing (not a run folder?)", what="(not a run description)")
    problem = check_run_json(info)
    if problem:
        raise HarnessError(f"{run_json}: {problem}")
    return info


# The parts of run.json that readers rely on, and the JSON type each must have when present.
RUN_JSON_TYPES = {"suite": dict, "cells": list, "git": dict, "machine": dict, "calibration": dict,
                  "baselines": dict, "text_baselines": list, "resumes": list}


def check_run_json(info: dict) -> str | None:
    """What makes ``info`` (a parsed run.json) unusable, or None: a key of the wrong JSON type, a suite
    without a name, a planned cell that is not a cell id."""
    for key, kind in RUN_JSON_TYPES.items():
        if info.get(key) is not None and not isinstance(info[key], kind):
            return f"{key} = {quote(info[key])}: expected {'an object' if kind is dict else 'a list'}"
    suite = info.get("suite")
    if suite is not None and not isinstance(suite.get("name"), str):
        return "the suite has no name (not a run description)"
    if not all(isinstance(c, str) for c in info.get("cells") or []):
        return "'cells' holds something other than cell ids"
    return None


def check_record(record) -> str | None:
    """What makes ``record`` unusable as a cell record, or None."""
    if not isinstance(record, dict):
        return "expected a JSON object"
    if not isinstance(record.get("status"), str):
        return "not a cell record (no 'status')"
    for key, kind in (("config", dict), ("axes", dict), ("epoch_log", list), ("samples", list)):
        if key in record and record[key] is not None and not isinstance(record[key], kind):
            return f"'{key}' is not a JSON {'object' if kind is dict else 'list'}"
    for key in ("reason", "cell_id", "sample"):
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"'{key}' is not text"
    if not all(isinstance(row, dict) for row in record.get("epoch_log") or []):
        return "an entry of 'epoch_log' is not a JSON object"
    if not all(isinstance(s, dict) and "prefix" in s and "text" in s for s in record.get("samples") or []):
        return "an entry of 'samples' lacks its prefix or text"
    return None


# A cell id up to this long names its files as it is; a longer one (a long matrix value, two long corpus
# file names) would pass the file system's limit on a name (255 bytes), so it is cut and a hash added.
CELL_NAME_MAX = 100
CELL_NAME_PREFIX = 80


def cell_file_name(cell_id: str) -> str:
    """The name (without suffix) of a cell's files in a run folder: its id when that is short, else the
    id's first ``CELL_NAME_PREFIX`` characters, "-" and 12 hex digits of the id's SHA-256. Readable and
    distinct, and what every existing run folder already uses for its short ids."""
    if len(cell_id.encode("utf-8")) <= CELL_NAME_MAX:
        return cell_id
    prefix = cell_id.encode("utf-8")[:CELL_NAME_PREFIX].decode("utf-8", errors="ignore")
    return f"{prefix}-{hashlib.sha256(cell_id.encode('utf-8')).hexdigest()[:12]}"


def read_records(folder) -> tuple[dict[str, dict], dict[str, str]]:
    """The cell records of a run folder by cell id, and the damaged ones: cell id -> one line naming the
    file and what is wrong with it. The id is the record's ``cell_id`` where the file is the one that id
    names (a long id's file name is shortened), else the file's name (a record without the field, or a
    damaged one)."""
    records, damaged = {}, {}
    for path in sorted((Path(folder) / "cells").glob("*.json")):
        try:
            record = read_json_object(path)
        except HarnessError as exc:
            damaged[path.stem] = str(exc)
            continue
        problem = check_record(record)
        if problem:
            damaged[path.stem] = f"{path}: {problem}"
            continue
        stored_id = record.get("cell_id")
        cell_id = stored_id if stored_id and cell_file_name(stored_id) == path.stem else path.stem
        records[cell_id] = record
    return records, damaged


# --- the run folder ------------------------------------------------------------------------------------


@dataclass
class RunContents:
    """A run folder as read once by ``RunDir.read``: what every command that reads a run starts from."""

    folder: Path
    run: dict | None  # run.json; None when the folder has none
    records: dict[str, dict]  # the readable cell records by cell id
    damaged: dict[str, str]  # cell id -> what is wrong with its record
    tables: dict[str, object] = field(default_factory=dict)  # name -> pandas frame, None when missing
    notes: list[str] = field(default_factory=list)  # what was missing, damaged or repaired, one line each

    def table(self, name: str):
        return self.tables.get(name)


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self._lock_file = None

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    def log_path(self, cell_id: str) -> Path:
        return self.path / "logs" / f"{cell_file_name(cell_id)}.log"

    def cell_path(self, cell_id: str) -> Path:
        return self.path / "cells" / f"{cell_file_name(cell_id)}.json"

    def losses_path(self, cell_id: str) -> Path:
        return self.path / "losses" / f"{cell_file_name(cell_id)}.npz"

    def read_losses(self, cell_id: str) -> dict[str, PositionLosses]:
        """The cell's per-position held-out losses by evaluation; {} for a cell stored without them."""
        try:
            return read_losses(self.losses_path(cell_id))
        except FileNotFoundError:
            return {}

    def checkpoint_path(self, cell_id: str) -> Path:
        """Where a cell in training keeps its state (``harness.cell.checkpoint``) until its record is stored."""
        return self.path / CHECKPOINTS / f"{cell_file_name(cell_id)}.pt"

    def lock(self) -> None:
        """One writer at a time: a second run into the same folder refuses. The kernel drops the lock
        when the process dies, even by SIGKILL.

        Two locks: one on a file named after the folder's absolute path in a lock folder outside it, so that a
        folder deleted under its writer (and made again by another run) is still refused; and the folder's
        own ``.lock``, which other machines sharing the folder see."""
        import hashlib
        import tempfile

        def take(handle) -> None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                for held in (handle, self._path_lock):
                    if held is not None:
                        held.close()  # closing drops the lock
                raise HarnessError(f"{self.path}: another run is writing into this folder ({holder}); "
                                   "wait for it or choose another --out") from None
            handle.truncate(0)
            handle.write(f"pid {os.getpid()}")
            handle.flush()

        try:
            locks = Path(tempfile.gettempdir()) / f"harness-locks-{os.getuid()}"
            locks.mkdir(mode=0o700, exist_ok=True)
            key = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:32]
            self._path_lock = open(locks / f"{key}.lock", "a+")
        except OSError:
            self._path_lock = None  # no lock folder on this machine: the folder's own lock still stands
        if self._path_lock is not None:
            take(self._path_lock)
        try:
            for folder in (self.path, self.path / "logs", self.path / "cells"):
                folder.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.path / ".lock", "a+")
        except OSError as exc:
            if self._path_lock is not None:
                self._path_lock.close()
            raise HarnessError(f"{self.path}: cannot write the results folder there "
                               f"({exc.strerror or exc}); choose another --out") from None
        take(self._lock_file)

    def read(self, tables=TABLES, *, text=("samples.csv",), required: dict | None = None, run_json: bool = False,
             described: bool = False, missing_ok: bool = True, from_records: bool = False) -> RunContents:
        """The one reader of a run folder: run.json (``run_json``: it must exist; ``described``: it must hold
        the suite), the cell records, and ``tables`` checked against the records (``read_checked_table``).
        ``text``: the tables read as text (True: all); ``required``: table name -> the columns it must have;
        ``from_records``: when cells.csv is missing, the tables are built from the records (a run stopped
        before its first table was written). A damaged record is named in ``notes``, with what is read
        instead."""
        info = self.read_run_json() if described else read_run_json(self.path, required=run_json)
        records, damaged = read_records(self.path)
        frames, notes = {}, []
        for name in tables:
            frames[name], table_notes = read_checked_table(
                self.path, name, records, required=(required or {}).get(name, ()),
                text=text is True or name in text, missing_ok=missing_ok)
            notes += table_notes
        if from_records and "cells.csv" in frames and frames["cells.csv"] is None and records:
            made = dict(zip(TABLES, frames_from_records(records, text=TABLES if text is True else text)))
            frames.update({name: made[name] for name in tables if frames[name] is None})
            notes = [n for n in notes if "cells.csv" not in n]
            notes.insert(0, f"{len(records)} cells were read from cells/*.json only (cells.csv is missing).")
        cells = frames.get("cells.csv")
        known = set(cells["cell_id"].astype(str)) if cells is not None and "cell_id" in cells else set()
        notes = [f"{problem}: " + ("its row of cells.csv is used as it is" if cell_id in known
                                   else "the cell is left out") for cell_id, problem in damaged.items()] + notes
        return RunContents(self.path, info, records, damaged, frames, notes)

    def read_run_json(self) -> dict | None:
        info = read_run_json(self.path)
        if info is not None and not isinstance(info.get("suite"), dict):
            raise HarnessError(f"{self.run_json}: not a run description (no 'suite' object)")
        return info

    def read_records(self) -> tuple[dict[str, dict], dict[str, str]]:
        return read_records(self.path)

    def finished_records(self) -> dict[str, dict]:
        """The readable cell records; a damaged one is left out (``read_records`` says why), so its cell
        counts as not run."""
        return read_records(self.path)[0]

    def store(self, cell, record: dict, calibration: dict | None, run_facts: dict | None = None,
              part: dict | None = None) -> None:
        """Write ``cell``'s (a ``GridCell``) record, with its id, axes and configuration. ``calibration``:
        the machine's speed now, for the FLOP utilisation; ``run_facts``: the run's own facts (start, machine,
        calibration of its first part: ``RUN_FACTS``) and ``part``: those of the part of the run that trained
        the cell, kept in every record so that a run folder whose run.json is lost can get them back
        (``run_facts_from_records``)."""
        record = dict(record)
        losses = record.pop("losses", None)
        # Before the record, which says the cell is done; a cell stored again without losses drops old ones.
        if losses:
            write_losses(self.losses_path(cell.cell_id), losses)
        else:
            self.losses_path(cell.cell_id).unlink(missing_ok=True)
        record["cell_id"] = cell.cell_id
        record["axes"] = cell.axes
        record["config"] = cell.config.model_dump(mode="json")
        if run_facts:
            record["run"] = {k: run_facts[k] for k in RUN_FACTS if k in run_facts}
            if part:
                record["run"]["part"] = {k: part[k] for k in RUN_FACTS if k in part}
        # The calibration was measured on this machine: it says nothing of a cell that ran on another node.
        ran_here = not record.get("node") or record["node"].get("hostname") == socket.gethostname()
        record["flops_utilization"] = flops_utilization(record, calibration) if ran_here else None
        write_json_atomic(self.cell_path(cell.cell_id), record)
        # Stored: the cell is done, but for a failed one, which a resumed run trains again from its
        # checkpoint (a crash or a killed process); a timed-out or diverged one, trained again only when
        # `run --retrain` asks, starts afresh.
        if record.get("status") != "failed":
            checkpoint = self.checkpoint_path(cell.cell_id)
            checkpoint.unlink(missing_ok=True)
            checkpoint_summary_path(checkpoint).unlink(missing_ok=True)

    def tidy_checkpoints(self) -> None:
        """At the end of a run (no cell in flight): remove what interrupted saves left (partial checkpoints,
        the temporary files of summaries written atomically by a cell process stopped mid-write, summaries
        without their checkpoint), and the folder once empty."""
        folder = self.path / CHECKPOINTS
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            stray = (path.name.endswith(".partial") or (path.name.startswith(".") and path.suffix == ".tmp")
                     or (path.suffix == ".json" and not path.with_suffix(".pt").exists()))
            if stray:
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only once empty
            folder.rmdir()

    def checkpoints(self) -> dict[str, dict]:
        """The cells with a checkpoint (in training, or interrupted and to go on from it): their summaries
        (``read_checkpoint_summary``; {} where there is none)."""
        ids = {}
        with contextlib.suppress(HarnessError):  # a damaged run.json: the files' names are the ids
            ids = {cell_file_name(c): c for c in (read_run_json(self.path) or {}).get("cells") or []}
        return {ids.get(path.stem, path.stem): read_checkpoint_summary(path)
                for path in sorted((self.path / CHECKPOINTS).glob("*.pt"))}

    def rebuild_tables(self, order: list[str] | None = None) -> None:
        rebuild_tables(self.path, self.finished_records(), order)

    def add_to_tables(self, cell_id: str, order: list[str] | None = None, rebuild: bool = False) -> None:
        """The tables after storing ``cell_id``: its rows appended (the cost of one cell, where a rebuild
        reads every record), or the tables rebuilt when ``rebuild`` (the cell had rows already: a failed
        cell trained again) or appending cannot keep them whole. The runner rebuilds once more at the end,
        which puts the rows in the grid's order."""
        record = read_json_object(self.cell_path(cell_id))
        if rebuild or not append_tables(self.path, cell_id, record):
            self.rebuild_tables(order)


CHECKPOINTS = ".checkpoints"  # the run folder's cells in training, not results: never committed


def checkpoint_summary_path(checkpoint: Path) -> Path:
    """The JSON summary beside a cell's checkpoint (``harness.cell.checkpoint``): its ``epoch``, last
    ``train_ppl``, when it was ``saved``, the training time so far (``elapsed_sec``), its ``config_hash``."""
    return Path(checkpoint).with_suffix(".json")


def read_checkpoint_summary(checkpoint: Path) -> dict:
    """The summary of ``checkpoint``, or {} where it is missing or unreadable."""
    try:
        summary = json.loads(checkpoint_summary_path(checkpoint).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def checkpoint_prior_sec(checkpoint: Path | None, config_hash: str) -> float:
    """The training time a cell's earlier processes spent, as its checkpoint's summary says (0 without a
    checkpoint of this configuration): what its ``run.timeout`` has already used."""
    if checkpoint is None or not Path(checkpoint).exists():
        return 0.0
    summary = read_checkpoint_summary(checkpoint)
    elapsed = summary.get("elapsed_sec")
    if summary.get("config_hash") != config_hash or not isinstance(elapsed, (int, float)):
        return 0.0
    return max(0.0, float(elapsed))

# The facts of a run that its cell records carry too (``RunDir.store``).
RUN_FACTS = ("started", "command", "git", "machine", "executor", "calibration", "malloc")


def run_facts_from_records(records: dict[str, dict]) -> dict | None:
    """The run's facts (``RUN_FACTS``) as its stored cell records carry them, with ``resumes``: the later
    parts that trained some of them, in time order, and ``other_runs``: the start of any other run whose
    records the folder holds (the facts are those of the earliest). None when no record carries them
    (records stored before they did)."""
    carried = [r["run"] for r in records.values()
               if isinstance(r.get("run"), dict) and isinstance(r["run"].get("started"), str)]
    if not carried:
        return None
    first = min(carried, key=lambda facts: facts["started"])  # ISO times in UTC sort as text
    facts = {k: first[k] for k in RUN_FACTS if k in first}
    parts = {}
    for run in carried:
        part = run.get("part")
        if (run["started"] == first["started"] and isinstance(part, dict) and isinstance(part.get("started"), str)
                and part["started"] != first["started"]):
            parts[part["started"]] = part
    facts["resumes"] = [parts[started] for started in sorted(parts)]
    facts["other_runs"] = sorted({run["started"] for run in carried} - {first["started"]})
    return facts


def machine_from_records(records: dict[str, dict]) -> dict:
    """What the cell records themselves say of the machine they ran on (the first of them, by cell id)."""
    for _, record in sorted(records.items()):
        if record.get("hostname") or record.get("cpu_model"):
            return {"hostname": record.get("hostname"), "cpu_model": record.get("cpu_model"),
                    "gpu_name": record.get("gpu_name"), "torch": record.get("torch_version")}
    return {}
