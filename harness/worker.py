"""The process that trains one grid cell: ``python -m harness.worker CONFIG.json RESULT.json``.

Each cell runs in a fresh process so that its peak memory is its own and a crash takes only that cell.
Per-epoch rows are printed as ``@@epoch {json}`` lines, so the runner keeps the epochs of a cell that
later fails or times out and can show live progress.
"""

from __future__ import annotations

import json
import sys

EPOCH_PREFIX = "@@epoch "


def main(argv: list[str]) -> int:
    config_path, result_path = argv
    from .config import CellConfig
    from .store import write_json_atomic
    from .train import run_cell

    with open(config_path) as f:
        config = CellConfig(**json.load(f))

    def report(row: dict) -> None:
        print(EPOCH_PREFIX + json.dumps(row), flush=True)

    record = run_cell(config, on_epoch=report)
    write_json_atomic(result_path, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
