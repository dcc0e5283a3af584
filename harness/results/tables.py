"""The run folder's tables (cells.csv, epochs.csv, samples.csv): their columns, how they are derived from the
cell records (appended as cells finish, rebuilt at the end of a run), and how they are read back checked
against the records: a row that is cut short, differs from its cell's record or is missing is read from the
record instead, and said so. A table rebuilt above ``COMPRESS_ABOVE`` bytes is stored gzip-compressed
(``epochs.csv.gz``: the same CSV), so that a large study's folder stays small; cells append to the plain
file only, and a compressed table is rebuilt whole instead. pandas only inside the functions that build frames.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import warnings
from pathlib import Path

from harness.errors import HarnessError
from harness.results.atomic import write_bytes_atomic
from harness.spec.config import FIELDS, GRID_KEYS

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
# A table whose CSV is larger than this is stored compressed (a study of a few hundred cells' epochs.csv).
COMPRESS_ABOVE = 4 * 2**20
GZIP = ".gz"


def table_file(folder, name: str) -> Path:
    """Where table ``name`` of a run folder is: ``name``, else ``name.gz`` when only that exists (the plain
    file wins: cells append to it after a compressed rebuild left both)."""
    plain = Path(folder) / name
    packed = plain.with_name(name + GZIP)
    return packed if not plain.exists() and packed.is_file() else plain


def table_bytes(path: Path) -> bytes:
    """The CSV text of a table file, decompressed when it is a ``.gz`` one."""
    content = Path(path).read_bytes()
    return gzip.decompress(content) if Path(path).suffix == GZIP else content


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
    not end with a whole line (a crash mid-append), has other columns than these rows (the first cell
    run on a Ray node, an empty table) or would grow past ``COMPRESS_ABOVE`` (a run stopped before its end
    would leave it uncompressed): then the caller rebuilds them."""
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
        if first != header or not whole or (path / name).stat().st_size + len(body.encode("utf-8")) > COMPRESS_ABOVE:
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
    """Write cells.csv, epochs.csv and samples.csv from the per-cell records (atomically each); a table above
    ``COMPRESS_ABOVE`` bytes as ``name.gz``, the other spelling of each table removed once the new one is
    whole."""
    for name, text in tables_text(records, order).items():
        plain = Path(path) / name
        packed = plain.with_name(name + GZIP)
        data = text.encode("utf-8")
        if len(data) > COMPRESS_ABOVE:
            # mtime 0: the same table compresses to the same bytes.
            write_bytes_atomic(packed, gzip.compress(data, compresslevel=9, mtime=0))
            plain.unlink(missing_ok=True)
        else:
            write_bytes_atomic(plain, data)
            packed.unlink(missing_ok=True)


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
            # pandas reads a .gz table as the plain one (compression inferred from the name).
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
        content = table_bytes(path)
    except (OSError, EOFError, gzip.BadGzipFile):
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

    path = table_file(folder, name)
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
    content = table_bytes(path)
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
