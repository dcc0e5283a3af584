"""`harness show RUN_DIR`: the status of each cell of a run: finished, started (a checkpoint saved) or pending."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from harness.cli import prog_name
from harness.errors import HarnessError
from harness.results.run_folder import RunDir
from harness.analysis.timing_trust import timing_warnings
from harness.grid.progress import resume_command


def register(subparsers) -> None:
    parser = subparsers.add_parser("show", help="status table of a run folder")
    parser.add_argument("run_dir", help="a results folder written by `run`")
    parser.set_defaults(func=main)


def main(args) -> int:
    run_dir = RunDir(Path(args.run_dir))
    contents = run_dir.read(("cells.csv",), described=True)
    info, records, damaged = contents.run, contents.records, contents.damaged
    if info is None and not (records or damaged):
        raise HarnessError(f"{args.run_dir}: not a run folder (no run.json)")
    lost = info is None
    # run.json lost (deleted, never written): the stored cells still say what was trained; the planned
    # cells and the provenance are unknown until a resume rebuilds it (as `report` reads such a folder).
    info = info or {}
    checkpoints = run_dir.checkpoints()
    rows = []
    listed = list(info.get("cells", []))
    for cell_id in listed + sorted((set(records) | set(damaged)) - set(listed)):
        rec = records.get(cell_id)
        if cell_id in damaged:
            # Not "pending": the record is there, but unreadable (the runner trains the cell again).
            rows.append({"cell_id": cell_id, "status": "damaged", "reason": damaged[cell_id][-60:]})
            continue
        if rec is None and cell_id in checkpoints:
            # In training now, or interrupted: a resumed run goes on after the checkpoint's epoch.
            saved = checkpoints[cell_id]
            rows.append({"cell_id": cell_id, "status": "started", "epochs": saved.get("epoch"),
                         "train_ppl": saved.get("train_ppl"),
                         "reason": f"checkpoint saved {saved.get('saved') or '(time unknown)'}"})
            continue
        if rec is None:
            rows.append({"cell_id": cell_id, "status": "pending"})
            continue
        rows.append({"cell_id": cell_id, "status": rec["status"], "epochs": rec.get("epochs_done"),
                     "train_ppl": rec.get("train_ppl"), "causal_ppl": rec.get("causal_ppl"),
                     "sec_per_epoch": rec.get("sec_per_epoch"), "total_sec": rec.get("total_sec"),
                     "reason": (rec.get("reason") or "")[:60]})
    if lost:
        print(f"{run_dir.path}: suite unknown, run.json missing (the stored cells only: the cells still to train "
              "are unknown; a resume with the run's suite rebuilds it)")
    else:
        print(f"{run_dir.path}: suite {info['suite']['name']}, started {info.get('started') or 'unknown (run.json rebuilt)'}, "
              f"finished {info.get('finished') or '(not finished)'}")
    print(tabulate(rows, headers="keys", tablefmt="simple", floatfmt=".4g"))
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if counts.get("timeout") and not lost:
        # A timeout on a machine busy with other work says nothing of the cell: say how to train it again.
        # The run's own command line (its --set and --only flags), so that the command works as printed.
        print("timed-out cells are kept by a resume; to train them again: "
              + resume_command(info, run_dir.path, retrain=("timeout",), prog=prog_name()))
    for problem in damaged.values():
        print(f"!! {problem}")
    for note in contents.notes[len(damaged):]:  # the damaged records are named above
        print(f"!! {note}")
    for warning in timing_warnings(info, contents.table("cells.csv")):
        print(f"!! {warning}")
    return 0
