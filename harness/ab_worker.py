"""The long-lived process of one side of `harness ab`: ``python -m harness.ab_worker``.

It trains one cell with this revision's own ``run_cell``, one epoch at a time when the driver says so,
so that the driver can interleave the epochs of two revisions (A B B A ...) on the same seconds of the
machine. The protocol is JSON, one object a line (the driver's side is ``harness.grid.ab``):

* worker -> driver, each line prefixed ``@@ab ``:
  ``{"event": "hello", "protocol": 1, "harness": "<path of the harness package>"}`` once imported;
  ``{"event": "epoch", "row": {...}}`` after each epoch (the row ``run_cell`` reports);
  ``{"event": "done", "record": {...}}`` when the cell has finished (the record ``run_cell`` returns);
  ``{"event": "error", "message": "...", "exit_code": N}`` when it cannot go on.
* driver -> worker: ``{"cmd": "start", "config": {...}, "log": "PATH"}`` (a ``CellConfig``; the cell's log,
  where standard error goes from now on), then ``{"cmd": "epoch"}`` before each epoch, ``{"cmd": "finish"}``
  after the last one (the cell's final evaluation and samples), or ``{"cmd": "stop"}`` to end. After a
  cell's ``done`` the worker waits for the next ``start`` or ``stop`` (protocol 2; protocol 1 exited).
  The driver gives each process one run and then stops it: a process keeps a speed of its own, so the
  runs are only independent replicates when each has fresh processes.

Only protocol lines go to the real standard output; anything else the process prints (warnings, the
cell's own messages) goes to standard error, which the driver keeps as the cell's log.
"""

from __future__ import annotations

import json
import os
import sys

PROTOCOL = 2
PREFIX = "@@ab "


class _Stopped(Exception):
    pass


def main() -> int:
    # The protocol channel is a private copy of stdout; fd 1 then points at stderr, so that nothing
    # printed by the training code can corrupt the protocol.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        channel.write(PREFIX + json.dumps(obj, default=str, allow_nan=True) + "\n")
        channel.flush()

    def receive() -> dict:
        line = sys.stdin.readline()
        if not line:  # the driver has gone
            raise _Stopped
        msg = json.loads(line)
        if msg.get("cmd") == "stop":
            raise _Stopped
        return msg

    from harness.worker import die_with_parent

    die_with_parent()
    import harness
    from harness.spec.config import CellConfig
    from harness.errors import HarnessError
    from harness.cell.train import run_cell

    send({"event": "hello", "protocol": PROTOCOL, "harness": os.path.dirname(os.path.abspath(harness.__file__))})

    def on_epoch(row: dict) -> None:
        send({"event": "epoch", "row": row})
        # Wait for our turn: the next epoch, or after the last one the final evaluation and samples,
        # which must not run while the other side is timing its epoch.
        receive()

    try:
        while True:
            start = receive()
            if start.get("cmd") != "start":
                send({"event": "error", "message": "expected a start command", "exit_code": 2})
                return 2
            if start.get("log"):
                _log_to(start["log"])
            try:
                config = CellConfig(**start["config"])
            except Exception as exc:  # noqa: BLE001 - a configuration this revision cannot read
                message = str(exc).replace("\n", " ")
                send({"event": "error", "message": f"this revision refuses the cell's configuration: {message}",
                      "exit_code": 2})
                return 2
            if receive().get("cmd") != "epoch":
                send({"event": "error", "message": "expected an epoch command", "exit_code": 2})
                return 2
            record = run_cell(config, on_epoch=on_epoch)
            send({"event": "done", "record": record})
    except _Stopped:
        return 0
    except HarnessError as exc:
        send({"event": "error", "message": str(exc), "exit_code": exc.exit_code})
        return exc.exit_code


def _log_to(path: str) -> None:
    """Standard error (and the stdout the training code sees) into the cell's log from now on."""
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.dup2(2, 1)
    os.close(fd)


if __name__ == "__main__":
    raise SystemExit(main())
