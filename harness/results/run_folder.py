"""The results format, in one place: what a run folder holds, how it is written and how it is read back.

A run folder (docs/results-format.md)::

    run.json          the suite, provenance, calibration (one JSON object)
    cells/<id>.json   one record per finished cell, written atomically: the source of truth
    cells.csv         one row per cell        } derived from the records (appended as cells finish,
    epochs.csv        one row per cell epoch  }  rebuilt at the end of a run)
    samples.csv       one row per sample      }
    logs/<id>.log     what each cell's process printed
    .checkpoints/     the state of cells in training (harness.cell.checkpoint), deleted as each is stored

Everything that reads a run folder (runner, ``show``, report, ``compare``, baselines) goes through this
module, so that a damaged file is handled the same way everywhere: a record or run.json that cannot be
read is named with what is wrong with it; a table row that is cut short, differs from its cell's record
or is missing is read from the record instead, and said so (``Tables.notes``).

No torch, pandas only inside the functions that build tables: read-only commands import this module.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import socket
import warnings
from pathlib import Path

from harness.spec.config import FIELDS, GRID_KEYS
from harness.errors import HarnessError, quote
from harness.results.calibration import flops_utilization
from harness.results.atomic import write_json_atomic, write_text_atomic

# --- the column schema ----------------------------------------------------------------------------------

RESULT_COLUMNS = (
    "cell", "layers", "direction", "device", "seed", "hidden", "epochs", "status", "reason",
    "train_ppl", "val_ppl", "causal_ppl", "sec_per_epoch", "tokens_per_sec", "peak_mem_bytes", "params",
    "flops_per_epoch", "flops_per_sec", "sample",
)
# Recorded beside the columns above: provenance and the spread behind the medians.
EXTRA_COLUMNS = (
    "cell_id", "config_hash", "precision", "threads", "epochs_done", "sec_per_epoch_iqr",
    "tokens_per_epoch", "rss_before_bytes", "peak_rss_bytes", "peak_mem_exact", "corpus", "corpus_sha256", "vocab_size",
    "hostname", "cpu_model", "gpu_name", "torch_version", "malloc", "stopped_early",
    "selected_epoch", "selected_select_ppl", "selected_val_ppl", "selected_causal_ppl",
)
# How busy the machine was around a cell (the runner measures them).
LOAD_COLUMNS = ("load_start", "load_end", "cpu_steal")
# One row of epochs.csv per epoch of a record's ``epoch_log``, after the cell id and its axes.
EPOCH_COLUMNS = ("epoch", "train_ppl", "sec", "tokens_per_sec", "warmup", "val_ppl", "causal_ppl", "select_ppl")
SAMPLE_COLUMNS = ("prefix", "text")
TABLES = ("cells.csv", "epochs.csv", "samples.csv")


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
                  "baselines": dict, "resumes": list}


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


def read_records(folder) -> tuple[dict[str, dict], dict[str, str]]:
    """The cell records of a run folder by cell id (the file's name), and the damaged ones: cell id ->
    one line naming the file and what is wrong with it."""
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
        else:
            records[path.stem] = record
    return records, damaged


# --- the run folder ------------------------------------------------------------------------------------


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self._lock_file = None

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    def log_path(self, cell_id: str) -> Path:
        return self.path / "logs" / f"{cell_id}.log"

    def cell_path(self, cell_id: str) -> Path:
        return self.path / "cells" / f"{cell_id}.json"

    def checkpoint_path(self, cell_id: str) -> Path:
        """Where a cell in training keeps its state (``harness.cell.checkpoint``) until its record is stored."""
        return self.path / CHECKPOINTS / f"{cell_id}.pt"

    def lock(self) -> None:
        """One writer at a time: a second run into the same folder refuses. The kernel drops the lock
        when the process dies, even by SIGKILL."""
        try:
            for folder in (self.path, self.path / "logs", self.path / "cells"):
                folder.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.path / ".lock", "a+")
        except OSError as exc:
            raise HarnessError(f"{self.path}: cannot write the results folder there "
                               f"({exc.strerror or exc}); choose another --out") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise HarnessError(f"{self.path}: another run is writing into this folder ({holder}); "
                               "wait for it or choose another --out") from None
        self._lock_file.truncate(0)
        self._lock_file.write(f"pid {os.getpid()}")
        self._lock_file.flush()

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
        """At the end of a run (no cell in flight): remove what interrupted saves left (partial files,
        summaries without their checkpoint), and the folder once empty."""
        folder = self.path / CHECKPOINTS
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            stray = path.name.endswith(".partial") or (path.suffix == ".json" and not path.with_suffix(".pt").exists())
            if stray:
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only once empty
            folder.rmdir()

    def checkpoints(self) -> dict[str, dict]:
        """The cells with a checkpoint (in training, or interrupted and to go on from it): their summaries
        (``read_checkpoint_summary``; {} where there is none)."""
        return {path.stem: read_checkpoint_summary(path) for path in sorted((self.path / CHECKPOINTS).glob("*.pt"))}

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


# --- writing the tables --------------------------------------------------------------------------------


def _csv_value(value):
    if isinstance(value, (list, tuple)):
        return "|".join(map(str, value))
    return value


def node_label(node: dict | None) -> str:
    """One string naming the machine a cell ran on: ``hostname|cpu_model|gpu_name`` (empty when unknown)."""
    if not node:
        return ""
    return "|".join("" if node.get(k) is None else str(node[k]) for k in ("hostname", "cpu_model", "gpu_name"))


def config_row(cell_id: str, config: dict) -> dict:
    """A cell's id and configuration as its row of cells.csv begins (lists joined with '|')."""
    return {"cell_id": cell_id, **{k: _csv_value(config.get(k)) for k in FIELDS}}


def table_rows(cell_id: str, rec: dict) -> tuple[dict, list[dict], list[dict]]:
    """One stored cell's row of cells.csv and its rows of epochs.csv and samples.csv."""
    config = rec.get("config", {})
    axes = rec.get("axes", {})
    row = config_row(cell_id, config)
    row.update({k: _csv_value(rec.get(k)) for k in RESULT_COLUMNS + EXTRA_COLUMNS if k != "cell_id"})
    row["flops_utilization"] = rec.get("flops_utilization")
    row["total_sec"] = rec.get("total_sec")
    row.update({k: rec.get(k) for k in LOAD_COLUMNS})
    if "node" in rec:
        row["node"] = node_label(rec["node"])
    if "executor" in rec:
        row["executor"] = rec["executor"]
    keys = {"cell_id": cell_id, **axes}
    epochs = [{**keys, **{k: epoch.get(k) for k in EPOCH_COLUMNS}} for epoch in rec.get("epoch_log", [])]
    samples = [{**keys, "prefix": s["prefix"], "text": s["text"]} for s in rec.get("samples", [])]
    return row, epochs, samples


def append_tables(path: Path, cell_id: str, rec: dict) -> bool:
    """Append one cell's rows to the tables. False, having written nothing, when a table is missing, does
    not end with a whole line (a crash mid-append) or has other columns than these rows (the first cell
    run on a Ray node, an empty table): then the caller rebuilds them."""
    import pandas as pd

    row, epochs, samples = table_rows(cell_id, rec)
    pieces = {}
    for name, rows in (("cells.csv", [row]), ("epochs.csv", epochs), ("samples.csv", samples)):
        if not rows:
            continue
        header, _, body = pd.DataFrame(rows).convert_dtypes().to_csv(index=False).partition("\n")
        try:
            with open(path / name, "rb") as f:
                first = f.readline().decode("utf-8").rstrip("\r\n")
                f.seek(-1, os.SEEK_END)
                whole = f.read(1) == b"\n"
        except (OSError, UnicodeDecodeError):
            return False
        if first != header or not whole:
            return False
        pieces[name] = body
    for name, body in pieces.items():
        with open(path / name, "a", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
    return True


def tables_text(records: dict[str, dict], order: list[str] | None = None) -> dict[str, str]:
    """cells.csv, epochs.csv and samples.csv as the runner writes them from ``records``."""
    import pandas as pd

    ids = [i for i in (order or []) if i in records] + sorted(set(records) - set(order or []))
    cell_rows, epoch_rows, sample_rows = [], [], []
    for cell_id in ids:
        row, epochs, samples = table_rows(cell_id, records[cell_id])
        cell_rows.append(row)
        epoch_rows += epochs
        sample_rows += samples
    frames = {
        "cells.csv": pd.DataFrame(cell_rows),
        "epochs.csv": pd.DataFrame(epoch_rows, columns=None if epoch_rows else ["cell_id", *EPOCH_COLUMNS]),
        "samples.csv": pd.DataFrame(sample_rows, columns=None if sample_rows else ["cell_id", *SAMPLE_COLUMNS]),
    }
    # Nullable dtypes keep integer columns integral when some cells have no value.
    return {name: frame.convert_dtypes().to_csv(index=False) for name, frame in frames.items()}


def rebuild_tables(path: Path, records: dict[str, dict], order: list[str] | None = None) -> None:
    """Write cells.csv, epochs.csv and samples.csv from the per-cell records (atomically each)."""
    for name, text in tables_text(records, order).items():
        write_text_atomic(Path(path) / name, text)


# --- reading the tables, checked against the records ---------------------------------------------------


def read_csv_table(path, required=(), *, text: bool = False, missing_ok: bool = False):
    """A results CSV file as a pandas DataFrame, or HarnessError naming the file (one line).

    ``required``: columns that must be present. ``text``: every value read as a string and nothing taken
    for missing (a sample's prefix may be "nan"; the caller converts and checks each value it uses).
    ``missing_ok``: an absent file gives None instead of an error. An empty file is an empty table."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return None
        raise HarnessError(f"{path}: missing (not a run folder?)")
    try:
        with warnings.catch_warnings():
            # A row longer than the header would otherwise be read with its first field as an index (or,
            # with index_col=False, cut short with a warning): either way every column shifts silently.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=str if text else None, keep_default_na=not text, index_col=False)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except Exception as exc:  # pandas raises several parser, decoding and OS errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(f"{path}: unreadable CSV: {first}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise HarnessError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def record_rows(cell_id: str, rec: dict) -> tuple[dict, list[dict], list[dict]]:
    """The rows a record stands for, to check a table against or to stand in for a damaged row. A record
    as the runner stores it gives the rows it wrote (``table_rows``); a flat record (its configuration
    beside its results, no ``config`` object) gives its own keys."""
    if isinstance(rec.get("config"), dict):
        return table_rows(cell_id, rec)
    flat = {"cell_id": cell_id, **{k: v for k, v in rec.items() if k not in ("epoch_log", "samples", "cell_id")}}
    flat = {k: node_label(v) if k == "node" and isinstance(v, dict) else _csv_value(v) for k, v in flat.items()}
    keys = {"cell_id": cell_id, **{k: flat.get(k) for k in GRID_KEYS}}
    epochs = [{**keys, **row} for row in rec.get("epoch_log") or []]
    samples = [{**keys, "prefix": s["prefix"], "text": s["text"]} for s in rec.get("samples") or []]
    return flat, epochs, samples


def _matches(text: str, value) -> bool:
    """Whether a CSV field holds ``value`` as the writer renders it (pandas: floats in full, None empty)."""
    if isinstance(value, dict):
        return True  # not a column's value: nothing to check
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return text in ("", "nan", "NaN", "<NA>")
    if isinstance(value, bool):
        return text.strip().lower() in (("true", "1", "1.0") if value else ("false", "0", "0.0"))
    if isinstance(value, (int, float)):
        try:
            number = float(text)
        except ValueError:
            return False
        return number == value or math.isclose(number, value, rel_tol=1e-9)
    if text == str(value):
        return True
    try:  # a table rewritten by pandas spells a number-like string as a number ("000123" as "123")
        return float(text) == float(value)
    except ValueError:
        return False


def _row_matches(header: list[str], fields: list[str], expected: dict) -> bool:
    return all(_matches(text, expected[name]) for name, text in zip(header, fields) if name in expected)


def _ids(cell_ids, listed: int = 3) -> str:
    cell_ids = list(dict.fromkeys(cell_ids))
    return ", ".join(cell_ids[:listed]) + (f" and {len(cell_ids) - listed} more" if len(cell_ids) > listed else "")


def _raw_rows(content: bytes) -> tuple[list[str], list[list[str]]] | None:
    """The header and the non-empty rows of a CSV file as the csv module splits them (pandas pads a short
    row with empty values without a word), or None when the file cannot be split."""
    try:
        rows = [r for r in csv.reader(io.StringIO(content.decode("utf-8"), newline="")) if r]
    except (UnicodeDecodeError, csv.Error):
        return None
    return (rows[0], rows[1:]) if rows else ([], [])


def _without_cut_last_line(path: Path, required, text: bool):
    """The table read without its last line when the file does not end with a whole line, and that
    line's first field (the cell id as far as it goes); (None, None) when that does not help."""
    import pandas as pd

    try:
        content = path.read_bytes()
    except OSError:
        return None, None
    end = content.rfind(b"\n")
    if content.endswith(b"\n") or end < 0:
        return None, None
    try:
        frame = pd.read_csv(io.BytesIO(content[: end + 1]), dtype=str if text else None, keep_default_na=not text,
                            index_col=False)
    except Exception:  # noqa: BLE001 - still unreadable: the caller reports the first error
        return None, None
    if any(c not in frame.columns for c in required):
        return None, None
    tail = content[end + 1:].decode("utf-8", "replace")
    return frame, tail.split(",", 1)[0]


def read_checked_table(folder, name: str, records: dict[str, dict], *, required=(), text: bool = False,
                       missing_ok: bool = False):
    """A table of a run folder (``read_csv_table``'s frame) checked against the cells' records, and notes
    saying what was repaired. Rows of a cell whose record says otherwise (a line cut short, a value
    changed) and rows missing for a recorded cell are taken from the record; a row cut short with no
    record to restore it is left out. Without records, only rows cut short can be found."""
    import pandas as pd

    path = Path(folder) / name
    tail = None
    try:
        frame = read_csv_table(path, required, text=text, missing_ok=missing_ok)
    except HarnessError:
        # A last line cut inside a quoted value makes the whole file unparsable: without that line, the
        # rest may still be read, and the records restore the line.
        frame, tail = _without_cut_last_line(path, required, text) if records else (None, None)
        if frame is None:
            raise
    if frame is None:
        return None, []
    content = path.read_bytes()
    if tail is not None:
        content = content[: content.rfind(b"\n") + 1]
    raw = _raw_rows(content)
    if raw is None or len(raw[1]) != len(frame):
        return frame, []  # pandas read it otherwise than the csv module: nothing to check row by row
    header, rows = raw
    if tail is not None:
        rows.append([tail])  # stands for the cut line: a row cut short of that cell
    which = TABLES.index(name) if name in TABLES else 0
    expected = {cid: record_rows(cid, rec)[which] for cid, rec in records.items()}
    column = header.index("cell_id") if "cell_id" in header else None
    short, unknown_short, drop = [], [], []
    positions: dict[str, list[int]] = {}
    for position, fields in enumerate(rows):
        cell_id = fields[column] if column is not None and column < len(fields) else ""
        cut = len(fields) < len(header)
        if cell_id in expected:
            positions.setdefault(cell_id, []).append(position)
            if cut:
                short.append(cell_id)
        elif cut:
            unknown_short.append(cell_id or f"line {position + 2}")
            drop.append(position)
    bad = []
    for cell_id, found in positions.items():
        want = expected[cell_id] if which else [expected[cell_id]]
        if len(found) != len(want) or cell_id in short or not all(
                _row_matches(header, rows[p], w) for p, w in zip(found, want)):
            bad.append(cell_id)
            drop += found
    # A cell with no epochs or samples has no rows in those tables: missing only from cells.csv.
    missing = [cid for cid in records if cid not in positions and (which == 0 or expected[cid])]
    notes = []
    if short:
        notes.append(f"{path}: {len(set(short))} cell(s) with a row cut short ({_ids(short)}): read from cells/*.json")
    changed = [cid for cid in bad if cid not in short]
    if changed:
        notes.append(f"{path}: {len(changed)} cell(s) whose rows differ from their record ({_ids(changed)}): "
                     "read from cells/*.json")
    if missing:
        notes.append(f"{path}: {len(missing)} cell(s) missing ({_ids(missing)}): read from cells/*.json only")
    if unknown_short:
        notes.append(f"{path}: {len(unknown_short)} row(s) cut short with no cell record to restore them "
                     f"({_ids(unknown_short)}): left out")
    repaired = bad + missing
    if not drop and not repaired:
        return frame, notes
    frame = frame.drop(index=frame.index[sorted(p for p in set(drop) if p < len(frame))])  # not the cut line
    if repaired:
        restored = _read_rows([r for cid in repaired for r in (expected[cid] if which else [expected[cid]])],
                              header, text)
        frame = pd.concat([frame, restored], ignore_index=True) if len(frame) else restored
    return frame.reset_index(drop=True), notes


def _read_rows(rows: list[dict], header: list[str], text: bool):
    """``rows`` as the table's reader would have read them from the file: written and read back as CSV,
    so that their values have the types and spellings of the rows around them."""
    import pandas as pd

    if not rows:
        return pd.DataFrame(columns=header)
    # The file's columns only: a column only the records have (the table was written before it existed)
    # is absent from every other row too, and readers take its default there.
    body = pd.DataFrame(rows, columns=list(header)).convert_dtypes().to_csv(index=False)
    return pd.read_csv(io.StringIO(body), dtype=str if text else None, keep_default_na=not text, index_col=False)


def frames_from_records(records: dict[str, dict], text=("samples.csv",)) -> tuple:
    """cells.csv, epochs.csv and samples.csv as DataFrames made from the records alone, as they would be
    read from the files (``text``: the tables read as text)."""
    headers = {"cells.csv": ["cell_id"], "epochs.csv": ["cell_id", *EPOCH_COLUMNS],
               "samples.csv": ["cell_id", *SAMPLE_COLUMNS]}
    frames = []
    for which, name in enumerate(TABLES):
        rows = []
        for cell_id, record in records.items():
            found = record_rows(cell_id, record)[which]
            rows += [found] if which == 0 else found
        frames.append(_read_rows(rows, [] if rows else headers[name], name in text))
    return tuple(frames)
