"""The process that trains one grid cell:
``python -m harness.worker CONFIG.json RESULT.json [CHECKPOINT [EVERY_SEC]]``.

Each cell runs in a fresh process so that its peak memory is its own and a crash takes only that cell.
Per-epoch rows are printed as ``@@epoch {json}`` lines, so the runner keeps the epochs of a cell that
later fails or times out and can show live progress. With CHECKPOINT the cell saves its state there every
EVERY_SEC seconds and goes on from it (``harness.cell.checkpoint``).
"""

from __future__ import annotations

import json
import signal
import sys

EPOCH_PREFIX = "@@epoch "


def die_with_parent() -> None:
    """Linux: have the kernel kill this process when the runner dies (even by SIGKILL), so an
    interrupted grid never leaves a cell training on in the background."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    config_path, result_path, *saving = argv
    die_with_parent()
    if hasattr(signal, "SIGUSR1"):
        # SIGUSR1 asks the run to finish its cells in flight: one that reaches a cell (a pkill by name)
        # must not end it.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    from harness.cell.checkpoint import CHECKPOINT_SEC
    from harness.spec.config import CellConfig
    from harness.errors import HarnessError
    from harness.results.atomic import write_json_atomic
    from harness.results.losses import LOSSES_BESIDE_RESULT, write_losses
    from harness.cell.train import run_cell

    with open(config_path) as f:
        config = CellConfig(**json.load(f))

    def report(row: dict) -> None:
        print(EPOCH_PREFIX + json.dumps(row), flush=True)

    try:
        record = run_cell(config, on_epoch=report, checkpoint=saving[0] if saving else None,
                          checkpoint_every=float(saving[1]) if len(saving) > 1 else CHECKPOINT_SEC,
                          with_losses=True)
    except HarnessError as exc:
        print(f"error: {exc}", flush=True)
        return exc.exit_code
    losses = record.pop("losses", None)
    if losses:  # written first: a result file means the cell is complete
        from pathlib import Path

        write_losses(Path(result_path).with_name(LOSSES_BESIDE_RESULT), losses)
    write_json_atomic(result_path, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
