"""`harness run SUITE`: train a suite's grid into a results folder, then render its report."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from tabulate import tabulate

from harness.cli import prog_name
from harness.errors import HarnessError
from harness.results.atomic import writable_folder
from harness.cell.cost import cell_flops, estimate_seconds
from harness.report.numbers import format_duration
from harness.grid.runner import (RETRAINABLE, HarnessDrained, RunOptions, default_out_dir, iter_cells_table,
                                 latest_run_dir, run_suite)
from harness.spec.suite import expand, filter_cells, load_suite


def register(subparsers) -> None:
    parser = subparsers.add_parser("run", help="train a suite's grid, store results, render the report",
                                   description="Train every cell of a suite (resumable) and render the report.",
                                   epilog="Ctrl-C stops at once: the cells in flight keep their last checkpoint (at most "
                                          "a minute old) and go on from it when resumed. SIGUSR1 (kill -USR1 PID) "
                                          "lets the cells in flight finish and starts no other. Either way "
                                          "--resume continues.")
    add_selection_arguments(parser)
    parser.add_argument("--out", help="results folder (default: results/<suite>-<timestamp>); "
                                      "running again into it resumes")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="DIR",
                        help="continue a run folder (default: the suite's run under results/ that started "
                             "last, by each folder's run.json)")
    parser.add_argument("--retrain", action="append", default=[], metavar="STATUS[,STATUS]",
                        help="when resuming, also train again the stored cells that ended with this status: "
                             "timeout (e.g. a machine busy with other work), diverged (failed cells always are)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and estimated times, train nothing")
    parser.add_argument("--no-report", action="store_true",
                        help="do not render the report at the end (it goes beside the results folder: "
                             "report/NAME/ for results/NAME, else OUT-report/)")
    parser.add_argument("--tensorboard", metavar="DIR",
                        help="also log each cell's perplexities and seconds per epoch, live, as TensorBoard "
                             "scalars under DIR/<results folder name>/<cell_id> (needs the tensorboard extra)")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local: one cell at a time on this machine; ray: cells as Ray tasks")
    parser.add_argument("--address", help="Ray cluster address (with --executor ray); default: a local instance")
    parser.add_argument("--share-nodes", action="store_true",
                        help="with --executor ray: a CPU cell takes run.threads CPUs, not its whole node "
                             "(more cells at once; timings are then not clean)")
    parser.add_argument("--cells-per-gpu", type=int, default=1, metavar="N",
                        help="with --executor ray: N CUDA cells share one GPU, each in its own process, so that small "
                             "cells keep it busy (timings are then not clean, as with --share-nodes)")
    parser.add_argument("--system-malloc", action="store_true", default=None,
                        help="leave glibc's malloc at its defaults in the workers (by default they keep the memory an "
                             "epoch frees, about a fifth of an epoch faster; recorded in run.json and each cell)")
    parser.set_defaults(func=main)


def add_selection_arguments(parser) -> None:
    parser.add_argument("suite", help="suite file, e.g. suites/full.yaml")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                        help="keep cells whose KEY has one of the values (repeatable)")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="SECTION.KEY=VALUE",
                        help="override a default, e.g. train.epochs=20 (repeatable)")


def select_cells(args):
    suite = load_suite(args.suite, args.sets)
    return suite, filter_cells(expand(suite), args.only)


def print_cells(cells, stream=None, flop_rates: dict[str, float] | None = None) -> None:
    stream = stream or sys.stdout  # looked up now: a default bound at import would miss a redirected stdout
    rows = iter_cells_table(cells)
    print(tabulate(rows, headers="keys", tablefmt="simple"), file=stream)
    print(estimate_text(cells), file=stream)
    print(arithmetic_text(cells, flop_rates), file=stream)


def estimate_text(cells) -> str:
    """The estimated time of ``cells`` one at a time, per device (CUDA cells are skipped without a GPU,
    and their estimate is a guess: no CUDA run has been timed for the cost model)."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for cell in cells:
        device = cell.config.device
        totals[device] = totals.get(device, 0.0) + estimate_seconds(cell.config)
        counts[device] = counts.get(device, 0) + 1
    parts = [f"{format_duration(totals[d])} for the {counts[d]} {d.upper()} cell{'s' if counts[d] != 1 else ''}"
             for d in sorted(totals)]
    return (f"{len(cells)} cells, estimated {' and '.join(parts) or 'nothing'}, one cell at a time "
            "(a rough a-priori estimate, fitted on a quiet 2-core CPU)")


def _flop_text(flops: float) -> str:
    """FLOPs in the unit that reads best: TFLOP (whole numbers from 100 on), else GFLOP or MFLOP."""
    if flops >= 100e12:
        return f"{flops / 1e12:,.0f} TFLOP"
    for scale, unit in ((1e12, "TFLOP"), (1e9, "GFLOP")):
        if flops >= 0.1 * scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops / 1e6:.3g} MFLOP"


def arithmetic_text(cells, flop_rates: dict[str, float] | None = None) -> str:
    """The cells' matrix-product work per device, training and evaluation apart (harness.cell.cost.cell_flops);
    with a rate (FLOP/s) for a device, the time that work takes at that rate: a floor for this
    formulation of the model on a machine that sustains at most that rate."""
    work: dict[str, list[float]] = {}
    stops_early: set[str] = set()
    for cell in cells:
        training, evaluation = cell_flops(cell.config)
        totals = work.setdefault(cell.config.device, [0.0, 0.0])
        totals[0] += training
        totals[1] += evaluation
        if cell.config.patience:
            stops_early.add(cell.config.device)
    parts = []
    for device in sorted(work):
        training, evaluation = work[device]
        part = (f"{device.upper()}: {_flop_text(training + evaluation)} (training {_flop_text(training)}, "
                f"evaluation {_flop_text(evaluation)})")
        rate = (flop_rates or {}).get(device)
        if rate:
            gflops = rate / 1e9
            shown = f"{gflops:,.0f}" if gflops >= 1000 else f"{gflops:.4g}"
            part += f", {format_duration((training + evaluation) / rate)} at {shown} GFLOP/s"
        if device in stops_early:
            part += " (at most: cells with patience stop early)"
        parts.append(part)
    return "matrix-product work: " + ("; ".join(parts) or "none")


def make_executor(args):
    cells_per_gpu = getattr(args, "cells_per_gpu", 1)
    if cells_per_gpu < 1:
        raise HarnessError(f"--cells-per-gpu {cells_per_gpu}: must be 1 or more")
    if args.executor == "local":
        if args.address or args.share_nodes or cells_per_gpu != 1:
            flag = "--address" if args.address else "--share-nodes" if args.share_nodes else "--cells-per-gpu"
            raise HarnessError(f"{flag} needs --executor ray")
        return None
    try:
        from harness.grid.ray_executor import RayExecutor
    except ImportError as exc:
        raise HarnessError(f"--executor ray needs Ray: pip install -e '.[ray]' ({exc})") from None
    return RayExecutor(address=args.address, exclusive_nodes=not args.share_nodes, cells_per_gpu=cells_per_gpu)


def main(args) -> int:
    # First: a signal that arrives while the suite loads must not kill the run without its message.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Python leaves SIGINT ignored when it started so (a shell's background job): Ctrl-C or kill -INT must
    # stop a run however it was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    drain = threading.Event()
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, lambda signum, frame: _start_draining(drain))
    suite, cells = select_cells(args)
    retrain = retrain_statuses(args.retrain)
    if args.dry_run:
        print_cells(cells)
        return 0
    for flag, value in (("--out", args.out), ("--resume", args.resume)):
        if value is not None and not value.strip():  # not the default folder: an empty name is a slip
            raise HarnessError(f"{flag} '': an empty path names no folder")
    if args.resume and args.out and args.resume != "latest" and Path(args.resume) != Path(args.out):
        raise HarnessError("--resume DIR and --out DIR name different folders")
    if args.resume:
        out = Path(args.out) if args.out else (latest_run_dir(suite) if args.resume == "latest" else Path(args.resume))
        if not is_run_folder(out):
            raise HarnessError(f"--resume {out}: not a run folder (no run.json, no stored cells)")
    else:
        out = Path(args.out) if args.out else default_out_dir(suite)
    writable_folder(out, "--out" if args.out or not args.resume else "--resume")
    tensorboard = None
    if args.tensorboard is not None:
        from harness.grid.tensorboard import TensorBoardLog

        tensorboard = TensorBoardLog(Path(writable_folder(args.tensorboard, "--tensorboard")) / out.name)
    executor = make_executor(args)
    options = RunOptions(executor=executor, tensorboard=tensorboard, system_malloc=args.system_malloc,
                         drain=drain, retrain=retrain)
    try:
        code, run_dir = run_suite(suite, cells, out, argv=[*prog_name().split(), *sys.argv[1:]], options=options)
    except HarnessDrained as stopped:
        # Not an error: the run stopped where it was asked to (SIGUSR1); the exit code says it is not done.
        print(stopped, file=sys.stderr)
        return stopped.exit_code
    print(f"results: {run_dir}", file=sys.stderr)
    if not args.no_report:
        report_dir = _render_report(run_dir)
        if report_dir:
            print(f"report: {report_dir}", file=sys.stderr)
    return code


def is_run_folder(path: Path) -> bool:
    """Whether ``--resume`` may continue ``path``: what ``--out`` would go on with, a folder with run.json
    or one whose run.json was lost (stopped while it calibrated, deleted), its cells folder or lock left."""
    return any((path / name).exists() for name in ("run.json", "cells", ".lock"))


def retrain_statuses(values: list[str]) -> frozenset[str]:
    """--retrain's values, checked: a status the runner would not train again is a slip, not a no-op."""
    statuses = set()
    for value in values:
        for status in value.split(","):
            status = status.strip()
            if status not in RETRAINABLE:
                known = ", ".join(RETRAINABLE)
                why = " (failed cells are always trained again)" if status == "failed" else ""
                raise HarnessError(f"--retrain {value!r}: {status!r} is not one of {known}{why}")
            statuses.add(status)
    return frozenset(statuses)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _start_draining(drain: threading.Event) -> None:
    """SIGUSR1: finish the cells in flight, start no other (a long run stopped without losing work)."""
    if not drain.is_set():
        drain.set()
        # os.write, not print: the signal may interrupt a write to stderr (a progress line), and a second
        # buffered write from inside the handler would fail.
        os.write(2, b"\nSIGUSR1: finishing the cells in flight, then stopping (Ctrl-C stops now)\n")


def _render_report(run_dir):
    """The run's own exit code stands whatever happens here: a report that cannot be rendered is a
    warning, and `harness report RUN_DIR` can be run again later."""
    try:
        from harness.report.build import build_report

        return build_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - any report failure must not hide the run's result
        print(f"warning: report not rendered ({type(exc).__name__}: {exc}); "
              f"try: {prog_name()} report {run_dir}", file=sys.stderr)
        return None
