"""Decisions over many commits (``harness history``, ``harness bisect``): where a timeline of speed ratios
stepped, and which commit of a range first made training slower. Pure functions of the measured points and
of a judge; running the checks is ``harness.grid.history``'s job.

Change points: each commit's point is the log of its speed ratio against one reference commit (measured
interleaved by ``harness ab``, so the machine's drift cancels within each point). The timeline is split
into segments of constant mean by PELT (Killick, Fearnhead & Eckley 2012, ``ruptures``) on the least-squares
cost, with the penalty of the Schwarz criterion for a new segment, ``2 sigma^2 ln(n)``, where ``sigma`` is the
typical standard error of one point (the median over the points; an ab check's interval gives it). A step is
named only where the two segments' means differ by more than the threshold: a real change smaller than the
threshold is not a slowdown the harness is asked to find, and one the noise could make is not split off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

# Where an ab check gives no interval (too few runs), a point's standard error is unknown: such points
# take part in the timeline but not in the estimate of the noise.
MIN_POINTS = 3  # fewer points cannot show a step between two segments of at least one point each


@dataclass(frozen=True)
class Step:
    """A change point: speed stepped at ``index`` (the first point of the new segment)."""

    index: int
    before: float  # geometric-mean ratio of the segment before (to the reference)
    after: float  # and of the segment from ``index`` on

    @property
    def change(self) -> float:
        """after / before - 1: +0.08 is 8% slower from this commit on."""
        return self.after / self.before - 1

    @property
    def slower(self) -> bool:
        return self.after > self.before


def standard_error(low: float, high: float, alpha: float) -> float:
    """The standard error of a log-ratio whose 1 - alpha interval is [low, high] (ratios), by the normal
    quantile: enough to set the scale of the noise, not to decide anything."""
    from scipy.special import ndtri

    if not (low > 0 and high > 0 and math.isfinite(low) and math.isfinite(high) and high > low):
        return math.nan
    return (math.log(high) - math.log(low)) / (2 * float(ndtri(1 - alpha / 2)))


def change_points(ratios: Sequence[float], errors: Sequence[float], threshold: float) -> list[Step]:
    """The steps of a timeline of speed ratios (one per commit, in commit order) with their standard errors
    on the log scale (NaN where unknown); a step is kept only where it exceeds ``threshold`` (0.05 = 5%).
    Points without a finite positive ratio (a commit that could not be measured) are skipped; indices refer
    to the given sequence."""
    import numpy as np
    import ruptures

    kept = [i for i, r in enumerate(ratios) if isinstance(r, (int, float)) and math.isfinite(r) and r > 0]
    if len(kept) < MIN_POINTS:
        return []
    signal = np.log(np.asarray([ratios[i] for i in kept], dtype=float))
    known = [e for e in (errors[i] for i in kept) if isinstance(e, (int, float)) and math.isfinite(e) and e > 0]
    # Without any interval, the spread of successive differences (a robust scale that a step barely moves).
    sigma = float(np.median(known)) if known else float(np.median(np.abs(np.diff(signal)))) / 0.6745 / math.sqrt(2)
    sigma = max(sigma, 1e-4)  # identical points: any real step is then a change
    penalty = 2 * sigma**2 * math.log(len(signal))
    ends = ruptures.Pelt(model="l2", min_size=1, jump=1).fit(signal.reshape(-1, 1)).predict(pen=penalty)
    starts = [0] + ends[:-1]
    steps = []
    for start, end, next_end in zip(starts, ends, ends[1:]):
        before = math.exp(float(signal[start:end].mean()))
        after = math.exp(float(signal[end:next_end].mean()))
        if abs(math.log(after / before)) > math.log1p(threshold):
            steps.append(Step(kept[end], before, after))
    return steps


# --- bisect ------------------------------------------------------------------------------------------

SLOWER, NOT_SLOWER, SKIP = "slower", "not slower", "skip"


@dataclass
class BisectResult:
    """What a bisection found: the first slower commit, or where it could not tell."""

    first_slower: str | None  # the commit, when it is known
    candidates: list[str]  # commits any of which may be the first slower one (several when some were skipped)
    checked: dict[str, str]  # commit -> SLOWER / NOT_SLOWER / SKIP, in the order checked
    bad_is_slower: bool = True  # False: the bad end is not slower than good, and there is nothing to find


def bisect(commits: Sequence[str], judge: Callable[[str], str]) -> BisectResult:
    """The first of ``commits`` (oldest first: those after the good commit up to the bad one, which is last)
    that ``judge`` finds slower than the good commit, in about log2(n) checks, assuming that once slower,
    later commits stay slower (as ``git bisect`` assumes). ``judge(commit)`` returns SLOWER, NOT_SLOWER or
    SKIP (it could not be built or measured, or the check could not decide); skipped commits are stepped
    around as ``git bisect skip`` does. The bad end is checked first: if it is not slower there is nothing to
    find."""
    checked: dict[str, str] = {}
    if not commits:
        return BisectResult(None, [], checked, bad_is_slower=False)

    def check(index: int) -> str:
        commit = commits[index]
        if commit not in checked:
            checked[commit] = judge(commit)
        return checked[commit]

    if check(len(commits) - 1) != SLOWER:
        return BisectResult(None, [], checked, bad_is_slower=False)
    good, bad = -1, len(commits) - 1  # good: last index known not slower (-1: the good commit itself)
    while bad - good > 1:
        middle = (good + bad) // 2
        # The nearest untested or testable commit to the middle, alternating sides, as git bisect skip does.
        order = sorted(range(good + 1, bad), key=lambda i: (abs(i - middle), i))
        verdict, index = SKIP, None
        for index in order:
            if checked.get(commits[index]) == SKIP:
                continue
            verdict = check(index)
            if verdict != SKIP:
                break
        if verdict == SKIP:  # every commit between good and bad was skipped
            return BisectResult(None, list(commits[good + 1:bad + 1]), checked)
        if verdict == SLOWER:
            bad = index
        else:
            good = index
    return BisectResult(commits[bad], [commits[bad]], checked)
