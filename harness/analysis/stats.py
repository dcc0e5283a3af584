"""Statistics shared by the claims engine, the report and the speed checks: pure functions on numbers.

Effects are computed on an analysis scale where they add up: log ratios for ratios (timings, memory,
perplexities), plain differences otherwise. A claim's evidence is a set of *configurations* (cell type,
depth, device, ...), each with a few seeds as replicates; the claim is decided by one *pooled* effect
across configurations (a random-effects combination, ``random_effects``: statsmodels' ``combine_effects``
arithmetic, which the tests check it against), not by a vote.

The speed checks (``harness compare``, last section) summarise each run by its median and compare two
sides by a bootstrap interval of the ratio of medians and a Mann-Whitney U test on the run medians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    import numpy as np

# numpy (and scipy) are imported by the functions that use them: `compare --help` imports this module.

# The smallest standard error a per-configuration effect may have, on the analysis scale. Replicates that
# agree exactly (deterministic outcomes, values rounded when stored) would otherwise give an interval of
# zero width, printed as certainty. 1e-3 on the log scale is a 0.1% ratio: below any timing or perplexity
# difference the harness can resolve.
RESOLUTION = {"ratio": 1e-3, "difference": 1e-3}


def t_quantile(probability: float, dof: float) -> float:
    """Student's t quantile (``scipy.stats.t.ppf``; normal where ``dof`` is infinite). From scipy.special:
    importing scipy.stats costs a report's main process most of a second, a third of its analysis."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, probability))


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student-t confidence interval; the bounds are NaN below two values."""
    import numpy as np

    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    se = float(x.std(ddof=1)) / math.sqrt(len(x))
    if se == 0:
        return mean, mean, mean
    half = t_quantile(0.5 + confidence / 2, len(x) - 1) * se
    return mean, mean - half, mean + half


def log_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Geometric mean of positive ``values`` and its t-interval computed on the log scale, so that the
    interval of a perplexity or a time never reaches below zero (NaN bounds below two values)."""
    import numpy as np

    x = np.asarray([v for v in values if np.isfinite(v) and v > 0], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean, low, high = t_interval(np.log(x), confidence)
    return math.exp(mean), math.exp(low) if math.isfinite(low) else math.nan, \
        math.exp(high) if math.isfinite(high) else math.nan


def transform(values, kind: str) -> np.ndarray:
    """Values on the analysis scale: logs for ratios (non-positive values become NaN), as they are otherwise."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if kind == "ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)
    return x


def back(value: float, kind: str) -> float:
    """From the analysis scale back to a ratio (exp) or a difference."""
    if not math.isfinite(value):
        return value
    return math.exp(value) if kind == "ratio" else value


@dataclass
class Replicates:
    """One configuration's seeds: reference side ``a`` and compared side ``b`` (seed -> value)."""

    a: dict
    b: dict

    def paired(self) -> list:
        return sorted(set(self.a) & set(self.b))


@dataclass
class Effect:
    """An effect on the analysis scale with its standard error, degrees of freedom and interval.
    ``bounded`` is True when the standard error was raised to the resolution floor (replicates agreed)."""

    estimate: float
    se: float
    dof: float
    low: float
    high: float
    n: int
    pairing: str  # paired, unpaired, single (one seed a side: no within-configuration spread)
    bounded: bool = False

    def ratio(self) -> tuple[float, float, float]:
        return math.exp(self.estimate), math.exp(self.low), math.exp(self.high)

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def _clean(values: dict, kind: str) -> dict:
    out = {}
    for seed, value in values.items():
        v = float(transform([value], kind)[0]) if value is not None else math.nan
        if math.isfinite(v):
            out[seed] = v
    return out


def pooled_spread(groups: list[Replicates], kind: str) -> tuple[float, float]:
    """The within-configuration standard deviation pooled over configurations (as one-way ANOVA pools
    it) and its degrees of freedom: of per-seed differences where a configuration's seeds pair up, and
    of each side's values otherwise. (NaN, 0) when no configuration has two seeds."""
    import numpy as np

    squares, dof = 0.0, 0
    for group in groups:
        a, b = _clean(group.a, kind), _clean(group.b, kind)
        paired = sorted(set(a) & set(b))
        if len(paired) >= 2:
            d = np.array([b[s] - a[s] for s in paired])
            squares += float(((d - d.mean()) ** 2).sum())
            dof += len(d) - 1
        else:
            for side in (a, b):
                if len(side) >= 2:
                    x = np.array(list(side.values()))
                    # Unpaired sides contribute the variance of single values; a difference of means has
                    # about twice a single side's variance, as a paired difference has.
                    squares += 2 * float(((x - x.mean()) ** 2).sum())
                    dof += len(x) - 1
    if dof == 0:
        return math.nan, 0
    return math.sqrt(squares / dof), dof


def configuration_effect(group: Replicates, kind: str, spread: tuple[float, float],
                         confidence: float = 0.95) -> Effect:
    """The effect of one configuration (b against a) with an interval from the pooled spread.

    Paired by seed where both sides share seeds (the mean per-seed difference), else the difference of
    the sides' means. Its standard error is the pooled within-configuration SD over sqrt(n), so that two
    seeds give a usable interval (t with the pooled degrees of freedom, not 1), and never below the
    resolution floor. With no within-configuration spread anywhere (one seed each) there is no interval."""
    import numpy as np

    a, b = _clean(group.a, kind), _clean(group.b, kind)
    paired = sorted(set(a) & set(b))
    sd, dof = spread
    if paired:
        estimate = float(np.mean([b[s] - a[s] for s in paired]))
        n, pairing = len(paired), "paired"
    elif a and b:
        estimate = float(np.mean(list(b.values())) - np.mean(list(a.values())))
        n, pairing = min(len(a), len(b)), "unpaired"
    else:
        return Effect(math.nan, math.nan, 0, math.nan, math.nan, 0, "none")
    if dof == 0 or not math.isfinite(sd):
        return Effect(estimate, math.nan, 0, math.nan, math.nan, n, "single seeds")
    se = sd / math.sqrt(n)
    floor = RESOLUTION[kind]
    bounded = se < floor
    se = max(se, floor)
    half = t_quantile(0.5 + confidence / 2, dof) * se
    return Effect(estimate, se, dof, estimate - half, estimate + half, n, pairing, bounded)


@dataclass
class Pooled:
    """A random-effects combination of configuration effects (analysis scale) and its heterogeneity."""

    estimate: float
    low: float
    high: float
    k: int  # configurations pooled
    i2: float  # share of the spread between configurations not explained by within-configuration noise
    tau: float  # SD of the true effects between configurations (analysis scale)
    q_pvalue: float  # Cochran's Q test that all configurations share one effect
    method: str
    # Where a new configuration's effect would land (95% prediction interval; NaN with fewer than three
    # configurations): the confidence interval says where the average is, this where a configuration is.
    pi_low: float = math.nan
    pi_high: float = math.nan

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def configurations_disagree(self) -> bool:
        """Heterogeneity dominates: most of the spread between configurations is real (I² at least 50%) and
        Cochran's Q rejects one shared effect (p < 0.1). More seeds would not narrow the interval then."""
        return self.k >= 2 and self.i2 >= DISAGREE_I2 and self.q_pvalue < DISAGREE_Q_P


DISAGREE_I2 = 0.5
DISAGREE_Q_P = 0.1
EMPTY_POOL = Pooled(math.nan, math.nan, math.nan, 0, math.nan, math.nan, math.nan, "none")


def pool(effects: list[Effect], confidence: float = 0.95) -> Pooled:
    """Combine configuration effects into one with a ``confidence`` interval.

    With standard errors: a random-effects model (Paule-Mandel between-configuration variance, as
    statsmodels' ``combine_effects(method_re="iterated")``, ``random_effects``), whose interval is the wider of the plain
    random-effects t-interval and the Hartung-Knapp-Sidik-Jonkman one, with k - 1 degrees of freedom
    (k configurations): with few configurations the plain normal interval is too narrow. Without standard
    errors (one seed per configuration), the configurations are the units: a t-interval over their effects.
    """
    import numpy as np
    from scipy.special import chdtrc

    usable = [e for e in effects if math.isfinite(e.estimate)]
    k = len(usable)
    if k == 0:
        return EMPTY_POOL
    estimates = np.array([e.estimate for e in usable])
    with_se = [e for e in usable if math.isfinite(e.se) and e.se > 0]
    if len(with_se) < k:
        mean, low, high = t_interval(estimates, confidence)
        pi_low = pi_high = math.nan
        if k >= 3:  # a new configuration: the spread of one more draw, sd * sqrt(1 + 1/k)
            half = t_quantile(0.5 + confidence / 2, k - 1) * float(np.std(estimates, ddof=1)) * math.sqrt(1 + 1 / k)
            pi_low, pi_high = mean - half, mean + half
        return Pooled(mean, low, high, k, math.nan, math.nan, math.nan, "configurations as units (t)", pi_low, pi_high)
    if k == 1:
        e = usable[0]
        return Pooled(e.estimate, e.low, e.high, 1, math.nan, math.nan, math.nan, "one configuration")
    result = random_effects(estimates, np.array([e.se**2 for e in usable]))
    estimate = result.mean
    se = max(result.se, result.se_hksj)
    half = t_quantile(0.5 + confidence / 2, k - 1) * se
    q = result.q
    q_pvalue = float(chdtrc(k - 1, max(q, 0.0)))  # Q of identical effects may round below zero
    tau2 = max(0.0, result.tau2)
    pi_low = pi_high = math.nan
    if k >= 3:  # Higgins, Thompson & Spiegelhalter (2009): t with k - 2 degrees of freedom
        spread = t_quantile(0.5 + confidence / 2, k - 2) * math.sqrt(tau2 + se**2)
        pi_low, pi_high = estimate - spread, estimate + spread
    # I² from Q itself: statsmodels' 1 - 1/H² blows up where Q rounds to zero or below (identical effects).
    i2 = (q - (k - 1)) / q if q > k - 1 else 0.0
    return Pooled(estimate, estimate - half, estimate + half, k, i2,
                  math.sqrt(tau2), q_pvalue, "random effects (Paule-Mandel, HKSJ)", pi_low, pi_high)


@dataclass(frozen=True)
class RandomEffects:
    """``random_effects``' result, named as statsmodels' ``CombineResults`` attributes it equals."""

    mean: float  # mean_effect_re
    se: float  # sd_eff_w_re
    se_hksj: float  # sd_eff_w_re_hksj
    q: float  # Cochran's Q, with fixed-effect weights
    tau2: float  # Paule-Mandel between-configuration variance


def random_effects(estimates, variances, atol: float = 1e-5, max_iterations: int = 50) -> RandomEffects:
    """statsmodels' ``combine_effects(estimates, variances, method_re="iterated")`` (Paule-Mandel, iterated
    as DerSimonian & Kacker 2007, appendix 8) for the statistics ``pool`` uses, computed with numpy:
    statsmodels' meta-analysis module imports scipy.stats, most of a second of a report
    (tests/test_claims.py checks the two agree)."""
    import numpy as np

    effect, variance = np.asarray(estimates, dtype=float), np.asarray(variances, dtype=float)
    k = len(effect)
    weights = 1 / variance
    q = float((weights * effect**2).sum() - (weights * effect).sum() ** 2 / weights.sum())
    tau2 = 0.0
    for _ in range(max_iterations):
        w = 1 / (variance + tau2)
        residual_sq = (effect - w.dot(effect) / w.sum()) ** 2
        excess = w.dot(residual_sq) - (k - 1)  # the estimating equation
        if excess < 0:
            tau2 = 0.0
            break
        if abs(excess) <= atol:
            break
        tau2 += excess / (w**2).dot(residual_sq)
    w = 1 / (variance + tau2)
    mean = float(w.dot(effect) / w.sum())
    hksj = float(((w / w.sum()) * (effect - mean) ** 2).sum() / (k - 1))
    return RandomEffects(mean, float(math.sqrt(1 / w.sum())), math.sqrt(hksj), q, float(tau2))


def sign_test(estimates) -> float:
    """Two-sided exact sign test of configuration effects against zero (ties dropped): scipy's
    ``binomtest(positives, n).pvalue`` at p = 1/2, in integers (the null is symmetric, so the p-value is
    twice the smaller tail)."""
    signs = [e > 0 for e in estimates if math.isfinite(e) and e != 0]
    if not signs:
        return math.nan
    n, positives = len(signs), sum(signs)
    tail = sum(math.comb(n, i) for i in range(min(positives, n - positives) + 1))
    return min(1.0, 2 * tail / 2**n)


# --- speed checks (`harness compare`): runs summarised by their medians --------------------------------
# A run is one process that trained a cell; each is summarised by the median of its timed epochs, and two
# sides are compared through these run medians (harness.analysis.speed_compare explains why).

MIN_RUNS = 3
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240521  # fixed: the same samples always give the same interval


def median_or_nan(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    import numpy as np

    return float(np.median(values)) if len(values) else math.nan


def safe_ratio(new: float, base: float) -> float:
    """new / base, NaN unless both are finite and base is positive."""
    if not (math.isfinite(new) and math.isfinite(base)) or base <= 0:
        return math.nan
    return new / base


def run_medians(runs: Iterable[Sequence[float]]) -> tuple[float, ...]:
    """Each run's median; runs without a timed epoch are left out."""
    import numpy as np

    return tuple(float(np.median(r)) for r in runs if len(r))


def relative_spread(values: Sequence[float]) -> float:
    """Interquartile range / median of at least two values (NaN otherwise), the measure of noise that
    torch.utils.benchmark warns on; one outlying run barely moves it."""
    import numpy as np

    if len(values) < 2:
        return math.nan
    low, middle, high = np.percentile(np.asarray(values, float), [25, 50, 75])
    return float(high - low) / float(middle) if middle > 0 else math.nan


def enough_runs(n_base: int, n_new: int, alpha: float) -> bool:
    """At least ``MIN_RUNS`` on each side, and enough that the exact two-sided Mann-Whitney test could
    reach ``p < alpha`` at all: its smallest attainable p is 2 / C(n_base + n_new, n_base) (e.g. 5 and
    5 runs are the fewest for alpha = 0.01)."""
    if min(n_base, n_new) < MIN_RUNS:
        return False
    return 2 / math.comb(n_base + n_new, n_base) < alpha


def runs_needed(alpha: float) -> int:
    """The fewest runs per side (the same on both) with which the test can decide at ``alpha``."""
    n = MIN_RUNS
    while not enough_runs(n, n, alpha):
        n += 1
    return n


def mann_whitney_p(base: Sequence[float], new: Sequence[float]) -> float:
    from scipy.stats import mannwhitneyu

    if not base or not new:
        return math.nan
    p = float(mannwhitneyu(new, base, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p  # all values tied: no evidence of a difference


def bootstrap_ratio_ci(base: Sequence[float], new: Sequence[float], confidence: float,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of median(new) / median(base), each sample resampled on its own."""
    if len(base) < 2 or len(new) < 2:
        return math.nan, math.nan
    import numpy as np

    rng = np.random.default_rng(seed)
    base_arr, new_arr = np.asarray(base, float), np.asarray(new, float)
    base_medians = np.median(rng.choice(base_arr, size=(resamples, len(base_arr))), axis=1)
    new_medians = np.median(rng.choice(new_arr, size=(resamples, len(new_arr))), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = new_medians / base_medians
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


# --- paired A/B checks (`harness ab`) -------------------------------------------------------------------
#
# The decision of `harness ab`: did the new side train slower than the base side, from paired epochs.
#
# Pure functions on numbers (numpy and scipy, no torch), so that the rule can be tested on literal data and
# re-applied to stored measurements.
#
# A **pair** is one timed epoch of each side, run one right after the other by two processes, so that both
# see the same seconds of the machine. A pair gives the log-ratio ``log(new / base)``; the machine's drift,
# which moves both epochs of a pair alike, cancels in it. Consecutive rounds alternate which side goes
# first (B A, A B, B A, ...), and a **unit** is two such rounds (``abba_units``): the mean of their two
# log-ratios, in which the cost of going second cancels as well.
#
# A **run** is one cell and seed, trained by its own pair of fresh processes; its value is the mean of its
# units (``run_value``). Runs, not units, are the independent replicates: a process keeps a speed of its
# own for minutes (measured here: one of two processes of the same code became 11% faster halfway through
# a check and stayed so, docs/regression.md), which every unit of that process shares, so an interval over
# units would count it as a real difference. The decision is taken on the runs' values (one cell: its
# seeds; pooled: every run of every cell).
#
# For a set of run values (one cell, or all cells pooled) the estimate is the geometric mean of the
# ratios, ``exp(mean log-ratio)``, with a ``1 - alpha`` t-interval of the mean log-ratio (scipy's
# one-sample t-test) mapped back to a ratio. The verdict:
#
# * ``regression``: the interval lies above 1 (the slowdown is real) **and** the estimate is above
#   ``1 + threshold`` (it is large enough to matter). Rule ``"estimate"``, the default; rule ``"interval"``
#   asks the whole interval to lie above ``1 + threshold`` instead (fewer false alarms, less power). Which
#   one is the default is decided by the error rates measured in docs/regression.md.
# * ``improvement``: the mirror image (interval below 1, estimate below ``1 / (1 + threshold)``).
# * ``no change``: the whole interval lies within ``[1 / (1 + threshold), 1 + threshold]``: any change is
#   confidently smaller than the threshold.
# * ``undecided``: none of these (the interval reaches past the threshold): more runs would tell.
# * ``too few runs``: fewer than ``MIN_RUNS`` values.
#
# For the new side running faster, a lower time is better, so "regression" is always "new slower".

MIN_RUNS = 3  # a t-interval from two values is too wide to decide anything; three is the fewest allowed
RULES = ("estimate", "interval")
DEFAULT_RULE = "estimate"
VERDICTS = ("regression", "improvement", "no change", "undecided", "too few runs")


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


def run_value(base: Sequence[float], new: Sequence[float]) -> float | None:
    """The log-ratio of one run: the mean of its units (``abba_units`` of its rounds); None without a
    unit (fewer than two rounds)."""
    units = abba_units(log_ratios(base, new))
    return sum(units) / len(units) if units else None


def decide(ratios: Iterable[float], threshold: float = 0.10, alpha: float = 0.01,
           rule: str = DEFAULT_RULE) -> Decision:
    """The verdict on independent log-ratios ``log(new / base)``, one per run (see the comment above)."""
    from scipy import stats as scipy_stats

    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: choose from {', '.join(RULES)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha!r}: must be between 0 and 1")
    if threshold < 0:
        raise ValueError(f"threshold {threshold!r}: must not be negative")
    import numpy as np

    d = np.asarray([float(r) for r in ratios], float)
    n = len(d)
    if n < MIN_RUNS:
        ratio = math.exp(float(d.mean())) if n else math.nan
        return Decision(n, ratio, math.nan, math.nan, math.nan, math.nan, "too few runs", threshold, alpha, rule)
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0:  # every pair gave the same ratio: the interval is that ratio (scipy would give NaN)
        low = high = mean
        p = 1.0 if mean == 0 else 0.0
    else:
        test = scipy_stats.ttest_1samp(d, 0.0)
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


def exit_code(verdicts: Iterable[str]) -> int:
    """As `harness compare`: 1 when anything regressed, 2 when nothing could be decided (too few runs
    everywhere, or nothing measured), 0 otherwise."""
    verdicts = list(verdicts)
    if "regression" in verdicts:
        return 1
    if not verdicts or all(v == "too few runs" for v in verdicts):
        return 2
    return 0
