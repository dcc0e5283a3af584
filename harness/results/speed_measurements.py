"""The raw per-epoch times of a run folder or a saved speed baseline, as ``harness compare`` and ``harness
baseline`` read them: each cell's configuration, status, seconds and tokens per second of every epoch (warm-up
flagged), and where it ran. Values read from files are checked: a time is a positive finite number, a flag is
true or false, an epoch appears once; anything else is a one-line HarnessError naming the file and cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError, quote
from harness.host.malloc import run_malloc
from harness.results.calibration import device_rates
from harness.results.run_folder import RunDir
from harness.spec.config import FIELDS, CellConfig, build_config

# What each cell's own record (cells.csv) must agree on: the cells of a Ray run ran on several nodes,
# whatever machine run.json names (the driver's).
CELL_MACHINE_KEYS = ("cpu_model", "gpu_name")

@dataclass(frozen=True)
class CellTimes:
    """One cell's raw per-epoch measurements, warm-up epochs included and flagged."""

    cell_id: str
    config: dict  # every CellConfig key, canonical JSON values
    status: str
    sec: tuple[float, ...]
    tokens_per_sec: tuple[float, ...]
    warmup: tuple[bool, ...]
    # Where the cell ran (``CELL_MACHINE_KEYS`` from cells.csv); empty when not recorded per cell, and then
    # the run's machine (run.json) is taken as the cell's.
    machine: dict = field(default_factory=dict)

    def samples(self, metric) -> tuple[float, ...]:
        """The timed epochs (warm-up left out) of ``metric`` (its ``column``: sec or tokens_per_sec)."""
        values = self.sec if metric.column == "sec" else self.tokens_per_sec
        return tuple(v for v, warm in zip(values, self.warmup) if not warm)


@dataclass(frozen=True)
class Measurements:
    """What one side of a comparison holds: a run folder or a saved baseline."""

    source: str
    machine: dict
    cells: tuple[CellTimes, ...]
    suite: str | None = None
    git: dict = field(default_factory=dict)
    # device -> float32 matrix-product rate (FLOP/s) calibrated at the run's start (run.json calibration):
    # how fast the machine itself was then.
    calibration: dict = field(default_factory=dict)
    # What was missing or damaged in the files read, and what was read instead (one line each).
    notes: tuple[str, ...] = ()
    # The workers' malloc setting (harness.host.malloc): it changes an epoch's time, so only runs of the same
    # setting are compared. Runs that record none left malloc alone.
    malloc: str = "system"


def canonical_config(values: dict, where: str) -> dict:
    """Validate a cell's configuration and return every key with canonical JSON values, so that a
    configuration read from CSV text equals the same configuration read from JSON."""
    known = {k: v for k, v in values.items() if k in FIELDS}
    return build_config(known, where).model_dump(mode="json")


def _config_from_csv_row(row: dict, where: str) -> dict:
    values = {}
    for key in FIELDS:
        if key not in row:
            continue
        text = row[key]
        default = CellConfig.model_fields[key].default
        if isinstance(default, tuple):  # written joined with '|' (harness.results.tables)
            values[key] = [p for p in text.split("|") if p] if text else []
        elif text == "":
            values[key] = None if default is None else text
        else:
            values[key] = text
    return canonical_config(values, where)


def positive_finite(text, where: str) -> float:
    """A time or rate read from a file: a positive finite number, or a one-line HarnessError."""
    try:
        value = float(text)
    except (ValueError, TypeError, OverflowError):
        raise HarnessError(f"{where}: {quote(text)} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise HarnessError(f"{where}: {quote(text)} is not a positive finite number")
    return value


def true_or_false(text, where: str) -> bool:
    """A flag read from a file (true/false, 1/0, yes/no, a JSON boolean), or a one-line HarnessError."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise HarnessError(f"{where}: {quote(text)} is not true or false")


def _epoch_number(text: str, where: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise HarnessError(f"{where}: epoch {text!r} is not a whole number") from None
    if value < 1:
        raise HarnessError(f"{where}: epoch {text!r} is not a positive number")
    return value


def _epoch_rows(rows: list[dict], where: str) -> list[dict]:
    """A cell's epochs.csv rows in epoch order, each epoch once."""
    numbered = sorted(((_epoch_number(r["epoch"], where), r) for r in rows), key=lambda pair: pair[0])
    numbers = [n for n, _ in numbered]
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise HarnessError(f"{where}: epoch {repeated[0]} appears more than once")
    return [r for _, r in numbered]


def _mapping(run: dict, key: str, run_json: Path) -> dict:
    value = run.get(key) or {}
    if not isinstance(value, dict):
        raise HarnessError(f"{run_json}: {key} = {value!r}: expected an object")
    return value


def read_run(run_dir) -> Measurements:
    """Read the raw per-epoch times, cell configurations and machine of a run folder
    (``run.json``, ``cells.csv``, ``epochs.csv``; see docs/results-format.md). Rows that are cut short,
    differ from their cell's record or are missing are read from the records (cells/*.json), and
    ``notes`` says so."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HarnessError(f"{run_dir}: no such run folder")
    run_json = run_dir / "run.json"
    contents = RunDir(run_dir).read(("cells.csv", "epochs.csv"), text=True, run_json=True, missing_ok=False,
                                    required={"cells.csv": ["cell_id", "status"],
                                              "epochs.csv": ["cell_id", "epoch", "sec", "tokens_per_sec", "warmup"]})
    run, cells, epochs, notes = contents.run, contents.table("cells.csv"), contents.table("epochs.csv"), contents.notes

    rows_by_cell: dict[str, list[dict]] = {}
    for row in epochs.to_dict("records"):
        rows_by_cell.setdefault(row["cell_id"], []).append(row)
    result = []
    seen = set()
    for row in cells.to_dict("records"):
        cell_id = row["cell_id"]
        if cell_id in seen:
            raise HarnessError(f"{run_dir / 'cells.csv'}: cell {cell_id} appears twice")
        seen.add(cell_id)
        where = f"{run_dir / 'cells.csv'}: cell {cell_id}"
        config = _config_from_csv_row(row, where)
        ewhere = f"{run_dir / 'epochs.csv'}: cell {cell_id}"
        epoch_rows = _epoch_rows(rows_by_cell.get(cell_id, []), ewhere)
        result.append(CellTimes(
            cell_id=cell_id,
            config=config,
            status=row["status"],
            sec=tuple(positive_finite(r["sec"], f"{ewhere} epoch {r['epoch']} sec") for r in epoch_rows),
            tokens_per_sec=tuple(positive_finite(r["tokens_per_sec"], f"{ewhere} epoch {r['epoch']} tokens_per_sec")
                                 for r in epoch_rows),
            warmup=tuple(true_or_false(r["warmup"], f"{ewhere} epoch {r['epoch']} warmup") for r in epoch_rows),
            machine={k: row[k] or None for k in CELL_MACHINE_KEYS if k in row},
        ))
    suite = run.get("suite")
    return Measurements(
        source=str(run_dir),
        machine=_mapping(run, "machine", run_json),
        cells=tuple(result),
        suite=suite.get("name") if isinstance(suite, dict) else suite,
        git=_mapping(run, "git", run_json),
        calibration=device_rates(_mapping(run, "calibration", run_json), bare=True),
        notes=tuple(notes),
        malloc=run_malloc(run),
    )
