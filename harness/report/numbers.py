"""How numbers are written, everywhere the harness prints or renders one: tables, reports, progress lines.
Missing and non-finite values print as '-' (or 'unknown' for a duration), never as 'nan'."""

from __future__ import annotations

import math
import numbers


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def sig(value: float, digits: int) -> str:
    """Significant digits without scientific notation for large numbers (2,850 rather than 2.85e+03)."""
    if abs(float(f"{value:.{digits}g}")) >= 10**digits:  # 999.9999 rounds up to four digits
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt(value, digits: int = 4) -> str:
    """A number for a table: significant digits, thousands separators for integers, '-' for missing."""
    if value is None or (isinstance(value, str) and value == ""):
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v, digits)}" for k, v in value.items()) or "-"
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's booleans are not numbers.Integral
        return str(bool(value)).lower()
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return sig(value, digits)
    return str(value)


def fixed(value, places: int = 3) -> str:
    """A number with ``places`` decimals (ratios, seconds), '-' when missing or not finite."""
    return f"{value:.{places}f}" if _finite(value) else "-"


def general(value, digits: int = 4) -> str:
    """A number in ``digits`` significant digits (Python's ``g``), '-' when missing or not finite."""
    return f"{value:.{digits}g}" if _finite(value) else "-"


def percent(share, places: int = 0) -> str:
    """A share as a percentage (0.052 -> '5%'), '-' when missing or not finite."""
    return f"{share * 100:.{places}f}%" if _finite(share) else "-"


def gib(value) -> str:
    """Bytes in GiB with one decimal, 'unknown' when not a number."""
    try:
        return f"{float(value) / 1024**3:.1f} GiB"
    except (TypeError, ValueError):
        return "unknown"


def fmt_duration(seconds: float | None) -> str:
    """A duration to the second, for reports: '1 h 2 min 3 s', '4 min 5 s', '6 s'."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min {secs} s"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def format_duration(seconds: float) -> str:
    """A duration to its leading unit, for progress lines and estimates: '0.3 s', '42 s', '5.0 min', '2 h 05 min'."""
    if 0 < seconds < 0.95:  # under a second: not "0 s", which reads as nothing at all
        return f"{seconds:.1g} s"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
