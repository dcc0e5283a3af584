"""The decision of `harness ab`: did the new side train slower than the base side, from paired epochs.

Pure functions on numbers (numpy and scipy, no torch), so that the rule can be tested on literal data and
re-applied to stored measurements.

A **pair** is one timed epoch of each side, run one right after the other by two long-lived processes,
so that both see the same seconds of the machine. A pair gives the log-ratio ``log(new / base)``; the
machine's drift, which moves both epochs of a pair alike, cancels in it. Consecutive rounds alternate
which side goes first (B A, A B, B A, ...), and the **unit** is two such rounds (``abba_units``): the mean
of their two log-ratios, in which the cost of going second cancels as well.

For a set of units (one cell, or all cells pooled) the estimate is the geometric mean of the ratios,
``exp(mean log-ratio)``, with a ``1 - alpha`` t-interval of the mean log-ratio (scipy's one-sample t-test)
mapped back to a ratio. The verdict:

* ``regression``: the interval lies above 1 (the slowdown is real) **and** the estimate is above
  ``1 + threshold`` (it is large enough to matter). Rule ``"estimate"``, the default; rule ``"interval"``
  asks the whole interval to lie above ``1 + threshold`` instead (fewer false alarms, less power). Which
  one is the default is decided by the error rates measured in docs/regression.md.
* ``improvement``: the mirror image (interval below 1, estimate below ``1 / (1 + threshold)``).
* ``no change``: the whole interval lies within ``[1 / (1 + threshold), 1 + threshold]``: any change is
  confidently smaller than the threshold.
* ``undecided``: none of these (the interval reaches past the threshold): more rounds would tell.
* ``too few rounds``: fewer than ``MIN_UNITS`` units.

For the new side running faster, a lower time is better, so "regression" is always "new slower".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

MIN_UNITS = 3  # a t-interval from two values is too wide to decide anything; three is the fewest allowed
RULES = ("estimate", "interval")
DEFAULT_RULE = "estimate"
VERDICTS = ("regression", "improvement", "no change", "undecided", "too few rounds")


@dataclass(frozen=True)
class Decision:
    n: int  # units (or pairs, as given)
    ratio: float  # geometric mean of new / base
    low: float  # 1 - alpha interval of the ratio
    high: float
    p_value: float  # two-sided one-sample t-test of the mean log-ratio against 0
    sd: float  # standard deviation of the log-ratios (the noise of one pair)
    verdict: str
    threshold: float  # fraction, 0.10 for 10%
    alpha: float
    rule: str

    def as_dict(self) -> dict:
        return {k: _finite_or_none(getattr(self, k)) if isinstance(getattr(self, k), float) else getattr(self, k)
                for k in ("n", "ratio", "low", "high", "p_value", "sd", "verdict", "threshold", "alpha", "rule")}


def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


def log_ratios(base: Sequence[float], new: Sequence[float]) -> list[float]:
    """``log(new_i / base_i)`` of paired measurements; pairs with a non-positive or missing value are left
    out (they carry no ratio)."""
    if len(base) != len(new):
        raise ValueError(f"paired measurements differ in length ({len(base)} and {len(new)})")
    out = []
    for b, n in zip(base, new):
        b, n = float(b), float(n)
        if math.isfinite(b) and math.isfinite(n) and b > 0 and n > 0:
            out.append(math.log(n / b))
    return out


def abba_units(ratios: Sequence[float]) -> list[float]:
    """The mean log-ratio of each two consecutive rounds, which ran in opposite orders (one new first, the
    other base first: B A A B ...), so that whatever the order of a round adds to its ratio cancels inside the
    unit. Measured here: the side that runs second in a round, after the other side's epoch, is slower by
    up to a few percent (and far more for millisecond epochs), since the caches are the other process's.
    A last round without its partner is left out."""
    return [(ratios[i] + ratios[i + 1]) / 2 for i in range(0, len(ratios) - 1, 2)]


def decide(ratios: Iterable[float], threshold: float = 0.10, alpha: float = 0.01,
           rule: str = DEFAULT_RULE) -> Decision:
    """The verdict on paired log-ratios ``log(new / base)`` (see the module's docstring)."""
    from scipy import stats

    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: choose from {', '.join(RULES)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha!r}: must be between 0 and 1")
    if threshold < 0:
        raise ValueError(f"threshold {threshold!r}: must not be negative")
    d = np.asarray([float(r) for r in ratios], float)
    n = len(d)
    if n < MIN_UNITS:
        ratio = math.exp(float(d.mean())) if n else math.nan
        return Decision(n, ratio, math.nan, math.nan, math.nan, math.nan, "too few rounds", threshold, alpha, rule)
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0:  # every pair gave the same ratio: the interval is that ratio (scipy would give NaN)
        low = high = mean
        p = 1.0 if mean == 0 else 0.0
    else:
        test = stats.ttest_1samp(d, 0.0)
        low, high = test.confidence_interval(1 - alpha)
        p = float(test.pvalue)
    ratio, low, high = math.exp(mean), math.exp(float(low)), math.exp(float(high))
    slower, faster = 1 + threshold, 1 / (1 + threshold)
    if rule == "estimate":
        regressed, improved = low > 1 and ratio > slower, high < 1 and ratio < faster
    else:
        regressed, improved = low > slower, high < faster
    if regressed:
        verdict = "regression"
    elif improved:
        verdict = "improvement"
    elif low >= faster and high <= slower:
        verdict = "no change"
    else:
        verdict = "undecided"
    return Decision(n, ratio, low, high, p, sd, verdict, threshold, alpha, rule)


def decide_pairs(base: Sequence[float], new: Sequence[float], threshold: float = 0.10, alpha: float = 0.01,
                 rule: str = DEFAULT_RULE) -> Decision:
    """``decide`` on paired measurements (seconds per epoch of each side, round by round), each unit
    two consecutive rounds (``abba_units``)."""
    return decide(abba_units(log_ratios(base, new)), threshold, alpha, rule)


def exit_code(verdicts: Iterable[str]) -> int:
    """As `harness compare`: 1 when anything regressed, 2 when nothing could be decided (too few rounds
    everywhere, or nothing measured), 0 otherwise."""
    verdicts = list(verdicts)
    if "regression" in verdicts:
        return 1
    if not verdicts or all(v == "too few rounds" for v in verdicts):
        return 2
    return 0
