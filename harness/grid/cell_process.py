"""One grid cell in its own process: start ``harness.worker``, relay its epochs, enforce the timeout, and
turn every outcome (a result file, a crash, a timeout) into a record; and the local executor, which runs
cells this way one after another.

A cell's process runs in its own process group, so that stopping it (timeout, Ctrl-C) stops whatever it
started too; its temporary folder is named after the runner, so that folders left by a runner that was
killed can be recognised and removed later.
"""

from __future__ import annotations

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
from typing import TYPE_CHECKING, Callable, Iterator

from harness.results.losses import LOSSES_BESIDE_RESULT, read_losses
from harness.results.run_folder import RunDir, checkpoint_prior_sec
from harness.results.tables import EXTRA_COLUMNS, RESULT_COLUMNS
from harness.spec.suite import GridCell
from harness.worker import EPOCH_PREFIX

if TYPE_CHECKING:
    from harness.grid.progress import Progress

LOG_TAIL_LINES = 8


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
            losses_path = result_path.with_name(LOSSES_BESIDE_RESULT)
            if losses_path.exists():
                record["losses"] = read_losses(losses_path)
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

    def execute(self, cells: list[GridCell], run_dir: RunDir, progress: Progress,
                stop: threading.Event, drain: threading.Event) -> Iterator[tuple[GridCell, dict]]:
        for cell in cells:
            if drain.is_set():
                return
            progress.start_cell(cell)
            with open(run_dir.log_path(cell.cell_id), "w") as log:
                record = run_cell_process(cell, log, on_epoch=progress.epoch, stop=stop, malloc=self.malloc,
                                          checkpoint=run_dir.checkpoint_path(cell.cell_id))
            yield cell, record
