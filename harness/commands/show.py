"""`harness show RUN_DIR`: the status of each cell of a run, finished or pending."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from ..errors import HarnessError
from ..runner import RunDir
from ..timing import timing_warnings


def register(subparsers) -> None:
    parser = subparsers.add_parser("show", help="status table of a run folder")
    parser.add_argument("run_dir", help="a results folder written by `run`")
    parser.set_defaults(func=main)


def main(args) -> int:
    run_dir = RunDir(Path(args.run_dir))
    info = run_dir.read_run_json()
    if info is None:
        raise HarnessError(f"{args.run_dir}: not a run folder (no run.json)")
    records = run_dir.finished_records()
    rows = []
    for cell_id in list(info.get("cells", [])) + sorted(set(records) - set(info.get("cells", []))):
        rec = records.get(cell_id)
        if rec is None:
            rows.append({"cell_id": cell_id, "status": "pending"})
            continue
        rows.append({"cell_id": cell_id, "status": rec["status"], "epochs": rec.get("epochs_done"),
                     "train_ppl": rec.get("train_ppl"), "causal_ppl": rec.get("causal_ppl"),
                     "sec_per_epoch": rec.get("sec_per_epoch"), "total_sec": rec.get("total_sec"),
                     "reason": (rec.get("reason") or "")[:60]})
    print(f"{run_dir.path}: suite {info['suite']['name']}, started {info.get('started')}, "
          f"finished {info.get('finished') or '(not finished)'}")
    print(tabulate(rows, headers="keys", tablefmt="simple", floatfmt=".4g"))
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    for warning in timing_warnings(info, _cells_table(run_dir.path / "cells.csv")):
        print(f"!! {warning}")
    return 0


def _cells_table(path: Path):
    """cells.csv as a DataFrame, or None when there is none yet (a run that has not stored a cell)."""
    import pandas as pd

    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
