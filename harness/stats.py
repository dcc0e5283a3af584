"""Statistics shared by the claims engine, the report and the speed checks: pure functions on numbers.

Effects are computed on an analysis scale where they add up: log ratios for ratios (timings, memory,
perplexities), plain differences otherwise. A claim's evidence is a set of *configurations* (cell type,
depth, device, ...), each with a few seeds as replicates; the claim is decided by one *pooled* effect
across configurations (a random-effects combination, statsmodels' ``combine_effects``), not by a vote.

The speed checks (``harness compare``, last section) summarise each run by its median and compare two
sides by a bootstrap interval of the ratio of medians and a Mann-Whitney U test on the run medians.
"""

from __future__ import annotations

import math
import warnings
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


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student-t confidence interval; the bounds are NaN below two values."""
    import numpy as np
    from scipy import stats

    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    se = float(x.std(ddof=1)) / math.sqrt(len(x))
    if se == 0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=se)
    return mean, float(low), float(high)


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
    from scipy import stats

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
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * se
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

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


EMPTY_POOL = Pooled(math.nan, math.nan, math.nan, 0, math.nan, math.nan, math.nan, "none")


def pool(effects: list[Effect], confidence: float = 0.95) -> Pooled:
    """Combine configuration effects into one with a ``confidence`` interval.

    With standard errors: a random-effects model (Paule-Mandel between-configuration variance, as
    statsmodels' ``combine_effects(method_re="iterated")``), whose interval is the wider of the plain
    random-effects t-interval and the Hartung-Knapp-Sidik-Jonkman one, with k - 1 degrees of freedom
    (k configurations): with few configurations the plain normal interval is too narrow. Without standard
    errors (one seed per configuration), the configurations are the units: a t-interval over their effects.
    """
    import numpy as np
    from scipy import stats
    from statsmodels.stats.meta_analysis import combine_effects

    usable = [e for e in effects if math.isfinite(e.estimate)]
    k = len(usable)
    if k == 0:
        return EMPTY_POOL
    estimates = np.array([e.estimate for e in usable])
    with_se = [e for e in usable if math.isfinite(e.se) and e.se > 0]
    if len(with_se) < k:
        mean, low, high = t_interval(estimates, confidence)
        return Pooled(mean, low, high, k, math.nan, math.nan, math.nan, "configurations as units (t)")
    if k == 1:
        e = usable[0]
        return Pooled(e.estimate, e.low, e.high, 1, math.nan, math.nan, math.nan, "one configuration")
    variances = np.array([e.se**2 for e in usable])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = combine_effects(estimates, variances, method_re="iterated", use_t=True,
                                 alpha=1 - confidence)
    estimate = float(result.mean_effect_re)
    se = max(float(result.sd_eff_w_re), float(result.sd_eff_w_re_hksj))
    half = float(stats.t.ppf(0.5 + confidence / 2, k - 1)) * se
    q_pvalue = float(stats.chi2.sf(result.q, k - 1))
    return Pooled(estimate, estimate - half, estimate + half, k, min(1.0, max(0.0, float(result.i2))),
                  math.sqrt(max(0.0, float(result.tau2))), q_pvalue, "random effects (Paule-Mandel, HKSJ)")


def sign_test(estimates) -> float:
    """Two-sided exact sign test of configuration effects against zero (ties dropped)."""
    import numpy as np
    from scipy import stats

    x = np.asarray([e for e in estimates if math.isfinite(e) and e != 0])
    if len(x) == 0:
        return math.nan
    return float(stats.binomtest(int((x > 0).sum()), len(x)).pvalue)


# --- speed checks (`harness compare`): runs summarised by their medians --------------------------------
# A run is one process that trained a cell; each is summarised by the median of its timed epochs, and two
# sides are compared through these run medians (harness.compare explains why).

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
