"""Can a run's timings be trusted? Flags from what the run recorded about its machine.

Pure functions over ``run.json`` (a dict) and ``cells.csv`` (a pandas DataFrame), without torch, for
``harness show`` and the report. A flag is one line saying what moved and by how much; a run with flags
should not decide timing claims (seconds per epoch, tokens/s, slowdowns).
"""

from __future__ import annotations


from harness.results.calibration import entry_rate

# The calibrated speed of the machine (a float32 matrix product) may wander by a few percent between two
# quiet measurements; the slowest more than this below the fastest: it has really changed (another job, thermal or frequency limits, a
# noisy neighbour on a VM), and epochs timed at different moments of the run are not comparable.
SPEED_TOLERANCE = 0.10
# Within one cell, epochs of the same work normally agree within a few percent (interquartile range over
# median); beyond this the cell's median is a measurement of the machine's load as much as of the cell.
SPREAD_LIMIT = 0.20
# Load average above the CPUs by this much: runnable threads were waiting for a core.
LOAD_MARGIN = 0.5
# Share of CPU time taken by the hypervisor for other guests.
STEAL_LIMIT = 0.05
# Between the reasons of one cell in ``flagged_cells``' values.
REASON_SEPARATOR = "; "


def _machine_key(machine) -> str:
    """A machine's kind as its calibration depends on it: processor and accelerator (identical hosts agree)."""
    machine = machine if isinstance(machine, dict) else {}
    return f"{machine.get('cpu_model') or '?'}|{machine.get('gpu_name') or ''}"


def calibrations(run_json: dict) -> list[tuple[str, dict, str]]:
    """The run's calibrations in time order: (label, calibration, machine kind), at the start, at the start
    of each resumed part, at the end (on the machine of the last part)."""
    found = []
    machine = _machine_key(run_json.get("machine"))
    if isinstance(run_json.get("calibration"), dict):
        found.append(("start", run_json["calibration"], machine))
    for i, part in enumerate(run_json.get("resumes") or [], start=1):
        if isinstance(part, dict):
            machine = _machine_key(part.get("machine")) if part.get("machine") else machine
            if isinstance(part.get("calibration"), dict):
                found.append((f"resume {i}", part["calibration"], machine))
    if isinstance(run_json.get("calibration_end"), dict):
        found.append(("end", run_json["calibration_end"], machine))
    return found


def _speed_warnings(run_json: dict) -> list[str]:
    """A machine whose speed moved between calibrations. Only calibrations of one kind of machine are
    compared: a part resumed on another kind is another machine (its cells record their CPU model, and
    timings are compared only within one), not a machine that slowed down."""
    warnings = []
    by_machine: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for label, calibration, machine in calibrations(run_json):
        for device, entry in calibration.items():
            rate = entry_rate(entry)
            if rate is not None:
                by_machine.setdefault((str(device), machine), []).append((label, rate))
    several = len({machine for _, machine in by_machine}) > 1
    for (device, machine), rates in by_machine.items():
        if len(rates) < 2:
            continue
        low, high = min(r for _, r in rates), max(r for _, r in rates)
        if 1 - low / high > SPEED_TOLERANCE:
            moments = ", ".join(f"{rate / 1e9:.4g} GFLOP/s at the {label}" for label, rate in rates)
            on = f" on {machine.split('|')[0]}" if several else ""
            warnings.append(f"machine speed moved during the run: {device}{on} calibrated at {moments} (the slowest "
                            f"{1 - low / high:.0%} below the fastest, more than {SPEED_TOLERANCE:.0%}); timings "
                            "from this run are unreliable")
    return warnings


def _column(cells, name):
    import pandas as pd

    if name not in cells.columns:
        return None
    return pd.to_numeric(cells[name], errors="coerce")


def _ok_cells(cells):
    if cells is None or len(cells) == 0:
        return None
    if "status" in cells.columns:
        cells = cells[cells["status"].astype(str) == "ok"]
    return cells if len(cells) else None


def _spread_warnings(cells) -> list[str]:
    sec, iqr = _column(cells, "sec_per_epoch"), _column(cells, "sec_per_epoch_iqr")
    if sec is None or iqr is None:
        return []
    spread = (iqr / sec).where(sec > 0).dropna()
    wide = spread[spread > SPREAD_LIMIT]
    if wide.empty:
        return []
    worst = wide.idxmax()
    name = cells.loc[worst, "cell_id"] if "cell_id" in cells.columns else str(worst)
    return [f"epoch times vary widely within {len(wide)} of {len(spread)} cells (interquartile range above "
            f"{SPREAD_LIMIT:.0%} of the median, up to {wide.max():.0%} in {name}); their timings are unreliable"]


def _load_warnings(run_json: dict, cells) -> list[str]:
    cpus = (run_json.get("machine") or {}).get("cpu_count")
    loads = [c for c in (_column(cells, "load_start"), _column(cells, "load_end")) if c is not None]
    warnings = []
    if loads and isinstance(cpus, (int, float)) and cpus > 0:
        import pandas as pd

        load = pd.concat(loads, axis=1).max(axis=1).dropna()
        measured = len(load)
        # Cells that ran on other nodes (Ray) are judged by the driver's CPU count only when no node is named.
        if "node" in cells.columns:
            load = load[cells.loc[load.index, "node"].isna() | (cells.loc[load.index, "node"].astype(str) == "")]
        busy = load[load > cpus + LOAD_MARGIN]
        if not busy.empty:
            # Say which cells the count is of: the others name a node whose CPU count is not known here.
            others = measured - len(load)
            warnings.append(f"the machine was busy during {len(busy)} of {len(load)} cells (1-minute load average "
                            f"up to {busy.max():.1f} on {cpus:g} CPUs): other work competed for the cores, so "
                            "their timings are unreliable" + (
                                "; the other cell names the node it ran on and is not judged here" if others == 1
                                else f"; the other {others} cells name the node they ran on and are not judged here"
                                if others else ""))
    steal = _column(cells, "cpu_steal")
    if steal is not None:
        stolen = steal.dropna()
        stolen = stolen[stolen > STEAL_LIMIT]
        if not stolen.empty:
            warnings.append(f"the hypervisor took CPU time from {len(stolen)} cells (steal up to {stolen.max():.0%}); "
                            "their timings are unreliable")
    return warnings


def timing_warnings(run_json: dict, cells) -> list[str]:
    """One-line warnings about the trustworthiness of a run's timings; empty when nothing is flagged.

    ``run_json``: the run's run.json as a dict (``calibration``, ``calibration_end``, ``resumes[].calibration``,
    ``machine.cpu_count`` are read when present). ``cells``: cells.csv as a pandas DataFrame (``status``,
    ``cell_id``, ``sec_per_epoch``, ``sec_per_epoch_iqr``, ``load_start``, ``load_end``, ``cpu_steal``,
    ``node`` are read when present; only ``ok`` cells count), or None. Missing fields flag nothing.
    Flags: the calibrated speed of a device moved by more than SPEED_TOLERANCE between calibrations;
    some cell's epoch-time spread exceeds SPREAD_LIMIT; the load average exceeded the CPU count by
    LOAD_MARGIN, or the CPU steal exceeded STEAL_LIMIT, during some cell."""
    warnings = _speed_warnings(run_json or {})
    ok = _ok_cells(cells)
    if ok is not None:
        warnings += _spread_warnings(ok)
        warnings += _load_warnings(run_json or {}, ok)
    return warnings


def run_warnings(run_json: dict) -> list[str]:
    """Flags on the whole run's timings (the machine's calibrated speed moved between calibrations): no
    timing of the run can be compared with another when they hold."""
    return _speed_warnings(run_json or {})


def flagged_cells(run_json: dict, cells) -> dict[str, str]:
    """Per cell whose own timings are unreliable, why: its epoch times spread beyond SPREAD_LIMIT, the load
    average exceeded the CPUs during it, or the hypervisor stole CPU time. Such a cell's timings are left
    out of timing comparisons; the rest of the run's timings stand."""
    ok = _ok_cells(cells)
    if ok is None or "cell_id" not in ok.columns:
        return {}
    import pandas as pd

    reasons: dict[str, list[str]] = {}

    def flag(mask, text):
        for cell_id in ok.loc[mask[mask].index, "cell_id"].astype(str):
            found = reasons.setdefault(cell_id, [])
            if text not in found:  # a cell listed twice (a row and its repair) is flagged once
                found.append(text)

    sec, iqr = _column(ok, "sec_per_epoch"), _column(ok, "sec_per_epoch_iqr")
    if sec is not None and iqr is not None:
        flag(((iqr / sec).where(sec > 0) > SPREAD_LIMIT).fillna(False),
             f"epoch-time spread above {SPREAD_LIMIT:.0%} of the median")
    cpus = ((run_json or {}).get("machine") or {}).get("cpu_count")
    loads = [c for c in (_column(ok, "load_start"), _column(ok, "load_end")) if c is not None]
    if loads and isinstance(cpus, (int, float)) and cpus > 0:
        load = pd.concat(loads, axis=1).max(axis=1)
        if "node" in ok.columns:
            load = load.where(ok["node"].isna() | (ok["node"].astype(str) == ""))
        flag((load > cpus + LOAD_MARGIN).fillna(False), f"load average above {cpus + LOAD_MARGIN:g}")
    steal = _column(ok, "cpu_steal")
    if steal is not None:
        flag((steal > STEAL_LIMIT).fillna(False), f"CPU steal above {STEAL_LIMIT:.0%}")
    return {cell_id: REASON_SEPARATOR.join(texts) for cell_id, texts in reasons.items()}


def distinct_reasons(reasons) -> list[str]:
    """Each single reason in ``reasons`` (values of ``flagged_cells``: one or more reasons joined) once, in
    the order first met. Cells flagged for overlapping reasons must not repeat one when their reasons are
    said together."""
    seen: dict[str, None] = {}
    for joined in reasons:
        for reason in str(joined).split(REASON_SEPARATOR):
            if reason:
                seen.setdefault(reason, None)
    return list(seen)
