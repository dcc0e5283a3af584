"""The one reader of run.json's ``calibration``: how fast the machine multiplied float32 matrices.

run.json holds ``{device: {flops_per_sec, size, samples_sec, threads[, by_threads][, reason]}}``
(``harness.host.calibration`` measures it). ``by_threads`` holds the CPU rate at each thread count the
cells used, so that a 1-thread cell is measured against what one thread can do, not what all can; saved
speed baselines hold the bare rate per device. Everything that reads a rate reads it here.
"""

from __future__ import annotations

import math


def positive_rate(value) -> float | None:
    """``value`` as a rate in FLOP/s when it is a positive finite number (a boolean is not one), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def entry_rate(entry, *, bare: bool = False) -> float | None:
    """The rate of one device's calibration entry; ``bare``: a plain number is a rate too (saved baselines)."""
    if isinstance(entry, dict):
        return positive_rate(entry.get("flops_per_sec"))
    return positive_rate(entry) if bare else None


def device_rate(calibration, device, threads=None) -> float | None:
    """The calibrated rate of ``device``, at ``threads`` CPU threads where ``by_threads`` has that count."""
    if not isinstance(calibration, dict):
        return None
    entry = calibration.get(device)
    if not isinstance(entry, dict):
        return None
    by_threads = entry.get("by_threads")
    if threads is not None and isinstance(by_threads, dict):
        key = str(int(threads)) if isinstance(threads, float) and threads.is_integer() else str(threads)
        at_threads = entry_rate(by_threads.get(key))
        if at_threads is not None:
            return at_threads
    return entry_rate(entry)


def device_rates(calibration, *, bare: bool = False) -> dict[str, float]:
    """device -> calibrated rate (devices without a usable rate left out)."""
    if not isinstance(calibration, dict):
        return {}
    rates = {str(device): entry_rate(entry, bare=bare) for device, entry in calibration.items()}
    return {device: rate for device, rate in rates.items() if rate is not None}


def flops_utilization(record: dict, calibration) -> float | None:
    """A cell's achieved training FLOP/s over the calibrated rate of its device and thread count, or None
    when either is unknown."""
    rate = device_rate(calibration, record.get("device"), record.get("threads"))
    achieved = record.get("flops_per_sec")
    if rate is None or not isinstance(achieved, (int, float)) or not math.isfinite(achieved):
        return None
    return achieved / rate
