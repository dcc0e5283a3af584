"""Saved baselines: a run's raw per-epoch times, cell configurations and provenance in one small JSON file
under ``results/baselines/<machine-id>/<name>.json``, meant to be committed and compared against later
(``python -m harness compare baseline:NAME RUN_DIR``)."""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
from pathlib import Path

from harness.host.malloc import run_malloc
from harness.results.speed_measurements import (CellTimes, Measurements, canonical_config, positive_finite, read_run,
                                                true_or_false)
from harness.errors import HarnessError, quote
from harness.host.machine import machine_id
from harness.results.run_folder import read_json_object
from harness.results.calibration import device_rates
from harness.results.atomic import write_text_atomic

FORMAT = "rnn-harness-baseline/1"
DEFAULT_ROOT = "results/baselines"
PREFIX = "baseline:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_baseline_spec(spec: str) -> bool:
    return str(spec).startswith(PREFIX)


def check_name(name: str) -> str:
    if not _NAME.match(name or "") or len(name) > 100:
        raise HarnessError(f"baseline name {name!r}: use letters, digits, '.', '_' and '-' "
                           f"(starting with a letter or digit)")
    return name


def baseline_document(measurements: Measurements, name: str) -> dict:
    return {
        "format": FORMAT,
        "name": name,
        "machine_id": machine_id(measurements.machine),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"run_dir": measurements.source, "suite": measurements.suite, "git": measurements.git},
        "machine": measurements.machine,
        "calibration": measurements.calibration,
        "malloc": measurements.malloc,
        "cells": [
            {"cell_id": c.cell_id, "status": c.status, "config": c.config,
             # Full precision (JSON keeps every bit of a float): a run compared with its own baseline
             # must give identical sides.
             "sec": list(c.sec), "tokens_per_sec": list(c.tokens_per_sec),
             "warmup": list(c.warmup), **({"machine": c.machine} if c.machine else {})}
            for c in measurements.cells
        ],
    }


def dumps_compact(document: dict) -> str:
    """Indented header, one line per cell: small and readable in a diff."""
    placeholder = '"@cells@"'
    text = json.dumps({**document, "cells": [json.loads(placeholder)]}, indent=1)
    cells = ",\n".join("  " + json.dumps(cell, separators=(",", ":")) for cell in document["cells"])
    return text.replace("  " + placeholder, cells) + "\n"


def save_baseline(run_dir, name: str, root=DEFAULT_ROOT, force: bool = False) -> Path:
    """Write ``<root>/<machine-id>/<name>.json`` from a run folder; refuse to overwrite unless ``force``."""
    check_name(name)
    measurements = read_run(run_dir)
    if not measurements.machine:
        raise HarnessError(f"{Path(run_dir) / 'run.json'}: no 'machine' record, so the baseline's machine is unknown")
    if not any(c.status == "ok" and len(c.sec) > 1 for c in measurements.cells):
        raise HarnessError(f"{run_dir}: no finished cell with timed epochs to save")
    for note in measurements.notes:  # damaged rows were read from the records: say so
        print(f"warning: {note}", file=sys.stderr)
    document = baseline_document(measurements, name)
    path = Path(root) / document["machine_id"] / f"{name}.json"
    if path.exists() and not force:
        raise HarnessError(f"{path}: exists; pass --force to replace it")
    write_text_atomic(path, dumps_compact(document))
    return path


def read_baseline_file(path) -> Measurements:
    path = Path(path)
    document = read_json_object(path, missing="no such baseline file")
    if document.get("format") != FORMAT:
        raise HarnessError(f"{path}: not a baseline file (expected format {FORMAT!r})")
    def an_object(value, where: str) -> dict:
        if not isinstance(value, dict):
            raise HarnessError(f"{where} = {quote(value)}: expected an object")
        return value

    cells = []
    try:
        for cell in document["cells"]:
            where = f"{path}: cell {quote(an_object(cell, f'{path}: a cell')['cell_id'])}"
            # Read as run folders' epochs.csv is read: times positive and finite, flags true or false.
            sec = tuple(positive_finite(v, f"{where}: sec") for v in cell["sec"])
            tps = tuple(positive_finite(v, f"{where}: tokens_per_sec") for v in cell["tokens_per_sec"])
            warmup = tuple(true_or_false(v, f"{where}: warmup") for v in cell["warmup"])
            if not len(sec) == len(tps) == len(warmup):
                raise HarnessError(f"{where}: sec, tokens_per_sec and warmup differ in length")
            machine = an_object(cell.get("machine") or {}, f"{where}: machine")
            config = an_object(cell["config"], f"{where}: config")
            cells.append(CellTimes(str(cell["cell_id"]), canonical_config(config, where), str(cell["status"]),
                                   sec, tps, warmup, machine))
    except (KeyError, TypeError, ValueError) as exc:
        raise HarnessError(f"{path}: malformed baseline ({type(exc).__name__}: {exc})") from None
    source = an_object(document.get("source") or {}, f"{path}: source")
    git = an_object(source.get("git") or {}, f"{path}: source.git")
    machine = an_object(document.get("machine") or {}, f"{path}: machine")
    calibration = an_object(document.get("calibration") or {}, f"{path}: calibration")
    return Measurements(source=f"{PREFIX}{document.get('name', path.stem)} ({path})",
                        machine=machine, cells=tuple(cells), suite=source.get("suite"), git=git,
                        calibration=device_rates(calibration, bare=True), malloc=run_malloc(document))


def list_baselines(root=DEFAULT_ROOT) -> dict[str, list[str]]:
    """machine id -> baseline names saved for it."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {d.name: sorted(p.stem for p in d.glob("*.json")) for d in sorted(root.iterdir()) if d.is_dir()}


def load_baseline(spec: str, root=DEFAULT_ROOT, machine: str | None = None) -> Measurements:
    """Find ``baseline:NAME`` (or ``NAME``) saved for this machine (or the machine id ``machine``)."""
    name = check_name(spec[len(PREFIX):] if is_baseline_spec(spec) else spec)
    machine = machine or machine_id()
    path = Path(root) / machine / f"{name}.json"
    if path.is_file():
        return read_baseline_file(path)
    saved = list_baselines(root)
    here = ", ".join(saved.get(machine, [])) or "none"
    elsewhere = [m for m, names in saved.items() if m != machine and name in names]
    hint = f"; {name!r} exists for other machines: {', '.join(elsewhere)}" if elsewhere else ""
    raise HarnessError(f"{path}: no baseline {name!r} for this machine ({machine}); "
                       f"saved for it: {here}{hint}")


def open_measurements(spec: str, baselines_root=DEFAULT_ROOT) -> Measurements:
    """``baseline:NAME`` (this machine's saved baseline), a baseline JSON file, or a run folder. Here
    rather than in compare.py, which baselines build on: compare.py imports nothing of this module."""
    if not str(spec).strip():
        raise HarnessError("'': an empty path names no run folder or baseline file")
    if is_baseline_spec(spec):
        return load_baseline(spec, root=baselines_root)
    path = Path(spec)
    if path.is_file():
        return read_baseline_file(path)
    return read_run(path)
