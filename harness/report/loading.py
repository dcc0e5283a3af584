"""The report's view of a results folder: its run.json and tables as read by ``RunDir.read`` (repaired where
the records allow, with what was repaired named), FLOP utilization filled in for results that predate it,
and timings taken from quiet timing passes in place of the run's own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.analysis.timing_trust import flagged_cells, run_warnings
from harness.errors import HarnessError
from harness.report.numbers import fmt
from harness.results.calibration import device_rate, device_rates
from harness.results.run_folder import RunDir
from harness.spec.config import GRID_KEYS

TIMING_COLUMNS = ("sec_per_epoch", "sec_per_epoch_iqr", "tokens_per_sec", "flops_per_sec", "flops_utilization")


@dataclass
class RunData:
    folder: Path
    run: dict
    cells: pd.DataFrame
    epochs: pd.DataFrame
    samples: pd.DataFrame
    notes: list[str] = field(default_factory=list)  # what was missing or repaired while loading
    trained: pd.DataFrame | None = None  # the cells where they trained, when a timing pass replaced their timings
    losses: dict = field(default_factory=dict)  # cell id -> its per-position held-out losses (losses/), if stored


def load_run(run_dir) -> RunData:
    """Read a results folder. Raises HarnessError when it is missing, its run.json unreadable, or it holds
    no cells; damaged or missing records and table rows are repaired where the records allow and named
    in ``notes`` (``harness.results.run_folder.RunDir.read``)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise HarnessError(f"{folder}: {'not a folder' if folder.exists() else 'no such results folder'}")
    contents = RunDir(folder).read(from_records=True)
    run, damaged = contents.run, contents.damaged
    cells, epochs, samples = (contents.table(name) for name in ("cells.csv", "epochs.csv", "samples.csv"))
    notes = list(contents.notes)
    if run is None:
        run = {}
        notes.insert(0, "run.json is missing: provenance unknown.")
    if cells is None:
        if damaged:
            raise HarnessError(next(iter(damaged.values())))
        raise HarnessError(f"{folder}: not a results folder (no cells.csv and no cells/*.json)")
    if epochs is None:
        notes.append("epochs.csv is missing: no learning curves and no equal-time comparison.")
    if samples is None:
        notes.append("samples.csv is missing: no generated text.")
    if cells.empty:
        raise HarnessError(f"{folder}: cells.csv holds no cells")
    machine = run.get("machine") if isinstance(run.get("machine"), dict) else {}
    cells = fill_flops_utilization(cells, run.get("calibration"), machine.get("hostname"))
    missing = [c for c in ("cell_id", "status") + GRID_KEYS if c not in cells]
    if missing:
        raise HarnessError(f"{folder / 'cells.csv'}: missing columns {', '.join(missing)}")
    losses = {}
    if (folder / "losses").is_dir():
        run_dir = RunDir(folder)
        for cell_id in cells.loc[cells["status"] == "ok", "cell_id"].astype(str):
            try:
                stored = run_dir.read_losses(cell_id)
            except HarnessError as exc:
                notes.append(f"{exc}: the cell's held-out text error is left out")
                continue
            if stored:
                losses[cell_id] = stored
    return RunData(folder, run, cells, epochs if epochs is not None else pd.DataFrame(),
                   samples if samples is not None else pd.DataFrame(), notes, losses=losses)


def fill_flops_utilization(cells: pd.DataFrame, calibration, hostname: str | None = None) -> pd.DataFrame:
    """``cells`` with ``flops_utilization`` computed from ``flops_per_sec`` and run.json's calibration when the
    results predate that column. A column that is present is kept as recorded: its empty values are cells
    that ran on another host than the calibrated one (Ray). Only cells that ran on ``hostname`` (run.json's
    machine, when the cells record theirs) are computed."""
    if "flops_utilization" in cells or "flops_per_sec" not in cells or "device" not in cells \
            or not device_rates(calibration):
        return cells
    threads = cells["threads"] if "threads" in cells else pd.Series(None, index=cells.index, dtype=object)
    rates = [device_rate(calibration, str(device), None if pd.isna(count) else int(count))
             for device, count in zip(cells["device"], pd.to_numeric(threads, errors="coerce"))]
    computed = pd.to_numeric(cells["flops_per_sec"], errors="coerce") / pd.Series(rates, index=cells.index, dtype=float)
    if hostname and "hostname" in cells:
        computed = computed.where(cells["hostname"].astype(str) == str(hostname))
    return cells.assign(flops_utilization=computed)


def apply_timings(data: RunData, timing_dirs) -> tuple[RunData, list[str], tuple[list[str], dict[str, str]]]:
    """``data`` with each cell's timings taken from the timing runs (matched by cell id: the same cell
    type, depth, direction, device and seed), epoch times in ``epochs`` scaled to match; the conditions
    to state; and the timing runs' own flags (run-level, per cell). Cells without a timing keep none (their timings blank), so
    that timings of two conditions are never mixed silently."""
    if not timing_dirs:
        return data, [], ([], {})
    timings, sources, flags, flagged = [], [], [], {}
    for folder in timing_dirs:
        timing = load_run(folder)
        ok = timing.cells[timing.cells["status"] == "ok"]
        timings.append(ok)
        machine = (timing.run.get("machine") or {})
        epochs = pd.to_numeric(ok.get("epochs_done", pd.Series(dtype=float)), errors="coerce")
        sources.append(f"{timing.folder.name} ({len(ok)} cells, {fmt(epochs.median())} epochs each, on "
                       f"{machine.get('cpu_model', 'an unrecorded machine')}, {timing.run.get('started', '-')})")
        run_flags, cell_flags = timing_flags_of(timing)
        flags += [f"{timing.folder.name}: {w}" for w in run_flags]
        flagged.update(cell_flags)
    table = pd.concat(timings, ignore_index=True).drop_duplicates("cell_id", keep="last").set_index("cell_id")
    cells = data.cells.copy()
    before = pd.to_numeric(cells.get("sec_per_epoch"), errors="coerce")
    for column in TIMING_COLUMNS:
        if column in table:
            cells[column] = cells["cell_id"].map(pd.to_numeric(table[column], errors="coerce"))
    timed = cells["cell_id"].isin(table.index)
    for column in ("cpu_model", "hostname", "gpu_name", "node"):
        # Where a cell's timings come from the timing pass, so does the machine they were taken on.
        if column in table:
            cells[column] = cells["cell_id"].map(table[column]).where(timed, cells.get(column))
        elif column in cells:
            cells[column] = cells[column].where(~timed, None)
    missing = int((~cells["cell_id"].isin(table.index) & (cells["status"] == "ok")).sum())
    epochs = data.epochs.copy()
    if not epochs.empty and {"cell_id", "sec"} <= set(epochs.columns):
        factor = pd.Series((pd.to_numeric(cells["sec_per_epoch"], errors="coerce") / before).to_numpy(),
                           index=cells["cell_id"])
        epochs["sec"] = pd.to_numeric(epochs["sec"], errors="coerce") * epochs["cell_id"].map(factor)
    conditions = [f"Timings (seconds per epoch, and the epoch times behind equal-time comparisons, rescaled) "
                  f"come from a separate timing pass: {'; '.join(sources)}; the training run's own timings, taken "
                  "while other work shared the machine, are not used."]
    if missing:
        conditions.append(f"{missing} finished cells have no timing in the timing pass and no timings here.")
    return (RunData(data.folder, data.run, cells, epochs, data.samples, data.notes, trained=data.cells), conditions,
            (flags, flagged))


def timing_flags_of(data: RunData) -> tuple[list[str], dict[str, str]]:
    """Why the whole run's timings are unreliable (the machine's speed moved), and which cells' own timings
    are (epoch times spread, a busy machine during the cell)."""
    try:
        return list(run_warnings(data.run)), flagged_cells(data.run, data.cells)
    except (KeyError, TypeError, ValueError):
        return [], {}
