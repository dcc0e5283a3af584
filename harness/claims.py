"""The lesson's claims as tests on a results folder's tables, and the measures of generated text.

A suite lists its claims (``claims:``), each a name or a mapping of a name and parameters:

```yaml
claims:
  - depth_helps
  - {name: bidirectional_slow, threshold: 1.5}
  - {name: bidirectional_useless, min_seeds: 3, confidence: 0.99}
```

Each claim compares groups of finished (``ok``) cells that differ in one key (layers, or direction) and
agree in every other key that varies in the run. Seeds are the replicates: where both groups hold the
same seeds, the per-seed differences (or log ratios) are paired; otherwise the groups are compared with
Welch's interval. Every comparison is classified from its confidence interval, and a claim is
``supported`` when most comparisons support it, ``not supported`` when most contradict it, and
``inconclusive`` otherwise (too few seeds, cells missing, intervals too wide, or mixed results).

Everything here is pure: data frames in, verdicts and evidence out.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats

from .config import FIELDS, GRID_KEYS
from .errors import HarnessError

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

CLAIM_TITLES = {
    "depth_helps": "Depth helps",
    "bidirectional_slow": "Bidirectional is slow",
    "bidirectional_useless": "Bidirectional is useless for next-character prediction",
}
CLAIM_NAMES = tuple(CLAIM_TITLES)

PPL_METRICS = ("causal_ppl", "val_ppl", "train_ppl")
COST_METRICS = ("sec_per_epoch", "peak_mem_bytes")
METRIC_LABELS = {
    "causal_ppl": "held-out causal perplexity",
    "val_ppl": "held-out teacher-forced perplexity",
    "train_ppl": "training perplexity",
    "sec_per_epoch": "seconds per epoch",
    "peak_mem_bytes": "peak memory",
    "word_share": "share of generated words found in the corpus",
    "longest_repeat": "longest repeated run (characters)",
    "leak": "causal / teacher-forced perplexity",
}

SHORT_LABELS = {"causal_ppl": "causal ppl", "val_ppl": "teacher-forced ppl", "train_ppl": "training ppl",
                "sec_per_epoch": "s/epoch", "peak_mem_bytes": "peak memory"}

# How a comparison bears on its claim.
SUPPORTS, CONTRADICTS, UNCLEAR, INSUFFICIENT = "supports", "contradicts", "unclear", "insufficient"


# --- claim specifications -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimSpec:
    """One claim to test and the parameters of its test.

    - ``min_seeds``: replicates needed on each side of a comparison (an interval needs at least 2).
    - ``confidence``: level of the t-intervals.
    - ``metric``: depth_helps: the perplexity that decides (causal_ppl, val_ppl, train_ppl);
      bidirectional_slow: the cost that decides (sec_per_epoch, peak_mem_bytes).
    - ``basis``: depth_helps: compare at equal ``epochs`` or at equal training ``time``.
    - ``margin``: depth_helps and bidirectional_useless: the smallest relative change in perplexity that
      counts as a change (0.01: one percent of the reference cell's perplexity).
    - ``threshold``: bidirectional_slow: the bi/uni ratio above which bidirectional counts as slow.
    - ``directions``: depth_helps: the directions whose depth is studied (bidirectional cells' causal
      perplexity is dominated by the leak, which bidirectional_useless covers).
    """

    name: str
    min_seeds: int = 2
    confidence: float = 0.95
    metric: str = ""
    basis: str = "epochs"
    margin: float = 0.01
    threshold: float = 1.1
    directions: tuple[str, ...] = ("uni",)

    @property
    def title(self) -> str:
        """The claim's title, with the parameters that differ from the defaults."""
        default = default_claim(self.name).to_dict()
        changed = [f"{k} = {'/'.join(v) if isinstance(v, list) else v}" for k, v in self.to_dict().items()
                   if v != default[k]]
        return CLAIM_TITLES[self.name] + (f" ({', '.join(changed)})" if changed else "")

    def to_dict(self) -> dict:
        """The parameters that apply to this claim, as a suite would write them."""
        out = {"name": self.name}
        for key in _PARAMETERS[self.name]:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


def _int_at_least(low):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"expected an integer >= {low}")
        return value

    return check


def _number_between(low, high, low_open=True, high_open=True):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"expected a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            raise ValueError(f"expected a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
        return float(value)

    return check


def _one_of(*choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return check


def _directions(value):
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or any(v not in ("uni", "bi") for v in items):
        raise ValueError("expected uni, bi, or a list of them")
    return tuple(dict.fromkeys(items))


_COMMON = {"min_seeds": _int_at_least(2), "confidence": _number_between(0, 1)}
_PARAMETERS = {
    "depth_helps": {**_COMMON, "metric": _one_of(*PPL_METRICS), "basis": _one_of("epochs", "time"),
                    "margin": _number_between(0, 1, low_open=False), "directions": _directions},
    "bidirectional_slow": {**_COMMON, "metric": _one_of(*COST_METRICS),
                           "threshold": _number_between(0, math.inf)},
    "bidirectional_useless": {**_COMMON, "margin": _number_between(0, 1, low_open=False)},
}
_DEFAULT_METRIC = {"depth_helps": "causal_ppl", "bidirectional_slow": "sec_per_epoch",
                   "bidirectional_useless": "causal_ppl"}


def default_claim(name: str) -> ClaimSpec:
    return ClaimSpec(name=name, metric=_DEFAULT_METRIC[name])


def default_claims() -> list[ClaimSpec]:
    """The lesson's three claims with default parameters."""
    return [default_claim(name) for name in CLAIM_NAMES]


def _unknown(kind: str, value, known) -> str:
    close = difflib.get_close_matches(str(value), list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return f"unknown {kind} {value!r}{hint}"


def parse_claims(raw, where: str) -> list[ClaimSpec]:
    """Validate a suite's ``claims`` list. ``None`` gives no claims. Raises HarnessError naming ``where``,
    the item and the key at fault."""
    if raw is None:
        return []
    # The caller may already name the key ("suite.yaml: claims").
    key = where if where.endswith("claims") else f"{where}: claims"
    if not isinstance(raw, list):
        raise HarnessError(f"{key} = {raw!r}: expected a list of claim names or mappings")
    specs, seen = [], set()
    for i, item in enumerate(raw):
        here = f"{key}[{i}]"
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict):
            if "name" not in item:
                raise HarnessError(f"{here}: a claim mapping needs a 'name' (one of {', '.join(CLAIM_NAMES)})")
            params = dict(item)
            name = params.pop("name")
        else:
            raise HarnessError(f"{here} = {item!r}: expected a claim name or a mapping with 'name'")
        if name not in CLAIM_TITLES:
            raise HarnessError(f"{here}: {_unknown('claim', name, CLAIM_NAMES)}")
        allowed = _PARAMETERS[name]
        values = {}
        for key, value in params.items():
            if key not in allowed:
                raise HarnessError(f"{here}: {name}: {_unknown('parameter', key, allowed)}")
            try:
                values[key] = allowed[key](value)
            except ValueError as exc:
                raise HarnessError(f"{here}: {name}.{key} = {value!r}: {exc}") from None
        spec = replace(default_claim(name), **values)
        if spec in seen:
            raise HarnessError(f"{here}: claim {name!r} is listed twice with the same parameters")
        seen.add(spec)
        specs.append(spec)
    return specs


# --- statistics ---------------------------------------------------------------------------------------


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student-t confidence interval; the bounds are NaN below two values."""
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


def welch_interval(a, b, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of b minus mean of a and its Welch confidence interval (unpaired, unequal variances)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    low, high = stats.t.interval(confidence, dof, loc=diff, scale=se)
    return diff, float(low), float(high)


@dataclass
class Comparison:
    """Group b against reference group a: their means, the effect (b - a, or b / a) and its interval."""

    n: int
    pairing: str  # "paired" (by seed), "unpaired" (Welch), or "too few" (no interval)
    mean_a: float
    mean_b: float
    effect: float
    low: float
    high: float

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def compare(a: pd.Series, b: pd.Series, kind: str, confidence: float = 0.95, min_seeds: int = 2) -> Comparison:
    """Compare per-seed values (Series indexed by seed). ``kind`` "difference": b - a; "ratio": b / a,
    computed on logarithms (so the interval is of the geometric-mean ratio). Non-finite values (and, for
    ratios, values that are not positive) are left out. Seeds present in both groups are paired."""
    a, b = _clean(a, kind), _clean(b, kind)
    mean_a = float(a.mean()) if len(a) else math.nan
    mean_b = float(b.mean()) if len(b) else math.nan
    transform = np.log if kind == "ratio" else (lambda v: v)
    back = np.exp if kind == "ratio" else (lambda v: v)
    paired = a.index.intersection(b.index)
    if len(paired) >= min_seeds:
        per_seed = transform(b[paired].to_numpy()) - transform(a[paired].to_numpy())
        mean, low, high = t_interval(per_seed, confidence)
        return Comparison(len(paired), "paired", mean_a, mean_b, float(back(mean)), float(back(low)),
                          float(back(high)))
    if len(a) >= min_seeds and len(b) >= min_seeds:
        mean, low, high = welch_interval(transform(a.to_numpy()), transform(b.to_numpy()), confidence)
        return Comparison(min(len(a), len(b)), "unpaired", mean_a, mean_b, float(back(mean)),
                          float(back(low)), float(back(high)))
    if len(a) and len(b):
        effect = mean_b / mean_a if kind == "ratio" else mean_b - mean_a
    else:
        effect = math.nan
    return Comparison(max(len(paired), min(len(a), len(b))), "too few", mean_a, mean_b, effect, math.nan,
                      math.nan)


def _clean(values: pd.Series, kind: str) -> pd.Series:
    values = pd.to_numeric(values, errors="coerce")
    values = values[np.isfinite(values)]
    if kind == "ratio":
        values = values[values > 0]
    # Several rows for one seed (an axis the caller did not separate) are averaged.
    return values.groupby(level=0).mean()


# --- text quality -------------------------------------------------------------------------------------


def generated_part(text: str, prefix: str) -> str:
    """The characters a model generated: the text without its prompt."""
    text = text if isinstance(text, str) else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def corpus_word_set(lines: list[str]) -> set[str]:
    """The words of cleaned corpus lines (``harness.data.clean_lines``)."""
    return {word for line in lines for word in words_of(line)}


def word_share(text: str, corpus_words: set[str], drop_last: bool = True) -> float:
    """Share of the words of ``text`` that occur in ``corpus_words``; NaN when there is no word.

    Generation stops after a fixed number of characters, usually inside a word, so the last word is left
    out (``drop_last``) unless it is the only one."""
    words = words_of(text)
    if drop_last and len(words) > 1:
        words = words[:-1]
    if not words:
        return math.nan
    return sum(word in corpus_words for word in words) / len(words)


def longest_repeat(text: str, max_unit: int = 4) -> int:
    """Length in characters of the longest run of one unit of 1 to ``max_unit`` characters repeated at
    least twice in a row ("travellerererer" holds "erererer": 8). 0 when nothing repeats.

    A run with period p is a stretch where every character equals the one p places later; it counts
    when it spans at least two whole units (length >= 2p)."""
    text = text if isinstance(text, str) else ""
    best = 0
    for period in range(1, max_unit + 1):
        streak = 0
        for i in range(len(text) - period):
            streak = streak + 1 if text[i] == text[i + period] else 0
            if streak >= period:
                best = max(best, streak + period)
    return best


def sample_quality(samples: pd.DataFrame, corpus_words: set[str] | None) -> pd.DataFrame:
    """Per sample row: ``word_share`` (NaN without corpus words) and ``longest_repeat`` of the generated
    characters (the prompt left out)."""
    out = samples.copy()
    if out.empty:
        out["word_share"] = pd.Series(dtype=float)
        out["longest_repeat"] = pd.Series(dtype=float)
        return out
    prefixes = out["prefix"] if "prefix" in out else pd.Series("", index=out.index)
    texts = out["text"] if "text" in out else pd.Series("", index=out.index)
    generated = [generated_part(t, p if isinstance(p, str) else "") for t, p in zip(texts, prefixes)]
    out["word_share"] = [word_share(g, corpus_words) if corpus_words else math.nan for g in generated]
    out["longest_repeat"] = [float(longest_repeat(g)) for g in generated]
    return out


# --- results --------------------------------------------------------------------------------------------


@dataclass
class ClaimResult:
    spec: ClaimSpec
    verdict: str
    summary: str  # one line with the numbers that decided
    reason: str = ""  # why, when inconclusive
    evidence: pd.DataFrame = field(default_factory=pd.DataFrame)
    headline: str = ""  # the gist in a few words, for a table of claims

    @property
    def short(self) -> str:
        """A few words for a table: the headline, else why inconclusive."""
        return self.headline or self.reason or self.summary

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def title(self) -> str:
        return self.spec.title


def evaluate_claims(cells: pd.DataFrame, epochs: pd.DataFrame, samples: pd.DataFrame, specs,
                    corpus_words: set[str] | None = None) -> list[ClaimResult]:
    """Evaluate each claim of ``specs`` (default: the lesson's three) on a run's tables."""
    specs = list(specs) if specs else default_claims()
    cells = cells if cells is not None else pd.DataFrame()
    epochs = epochs if epochs is not None else pd.DataFrame()
    samples = samples if samples is not None else pd.DataFrame()
    evaluators = {"depth_helps": _depth_helps, "bidirectional_slow": _bidirectional_slow,
                  "bidirectional_useless": _bidirectional_useless}
    return [evaluators[spec.name](cells, epochs, samples, spec, corpus_words) for spec in specs]


# --- shared machinery -------------------------------------------------------------------------------

GRID_AXES = tuple(k for k in GRID_KEYS if k != "seed")  # seeds are the replicates, not an axis


def ok_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells that finished (status ok), with the result columns numeric."""
    if cells.empty or "status" not in cells:
        return cells.iloc[0:0].copy()
    ok = cells[cells["status"] == "ok"].copy()
    for column in PPL_METRICS + COST_METRICS + ("seed", "layers", "total_sec"):
        if column in ok:
            ok[column] = pd.to_numeric(ok[column], errors="coerce")
    return ok


def extra_keys(cells: pd.DataFrame) -> list[str]:
    """Configuration keys beyond the grid axes that take more than one value in ``cells``: the suite's other
    matrix axes (precision, hidden, threads, lr ...). Cells that differ in one are different configurations."""
    return [k for k in FIELDS if k in cells and k not in GRID_KEYS and cells[k].nunique() > 1]


def configuration_keys(cells: pd.DataFrame) -> list[str]:
    """The grid axes and every other configuration key that varies: one configuration per combination."""
    return [k for k in GRID_AXES if k in cells] + extra_keys(cells)


def context_keys(cells: pd.DataFrame, compared: str) -> list[str]:
    """The keys that identify a group of seeds apart from the compared key: the grid axes, and every
    other configuration key that takes more than one value in ``cells``."""
    return [k for k in configuration_keys(cells) if k != compared]


def by_seed(group: pd.DataFrame, column: str) -> pd.Series:
    """``column`` of a group of cells as numbers indexed by seed (the replicates that compare() pairs)."""
    if column not in group or "seed" not in group:
        return pd.Series(dtype=float)
    return pd.Series(pd.to_numeric(group[column], errors="coerce").to_numpy(), index=group["seed"].to_numpy())


def _groups(frame: pd.DataFrame, keys: list[str]):
    if frame.empty:
        return
    if not keys:
        yield (), frame
        return
    for key, group in frame.groupby(keys, dropna=False, sort=True):
        yield (key if isinstance(key, tuple) else (key,)), group


def _depth_steps(ok: pd.DataFrame, keys: list[str]):
    """(context, "lo -> hi layers", shallower cells, deeper cells) for each pair of adjacent depths in each
    group of cells that agree in ``keys``."""
    for key, group in _groups(ok, keys):
        depths = sorted(group["layers"].unique())
        for lo, hi in zip(depths, depths[1:]):
            yield (dict(zip(keys, key)), f"{int(lo)} -> {int(hi)} layers", group[group["layers"] == lo],
                   group[group["layers"] == hi])


MACHINE = "machine"


def machine_of(cells: pd.DataFrame) -> pd.Series | None:
    """Per cell, the machine its timings come from: the CPU model, and for CUDA cells the GPU too
    (cells.csv ``cpu_model``, ``gpu_name``; a Ray run's ``node``, else ``hostname``). None when not recorded."""
    def text(column):
        if column not in cells:
            return pd.Series("", index=cells.index)
        return cells[column].astype(object).where(cells[column].notna(), "").astype(str)

    if "cpu_model" in cells:
        cpu, gpu = text("cpu_model"), text("gpu_name")
    elif "node" in cells:
        parts = text("node").str.split("|", expand=True).reindex(columns=range(3)).fillna("")
        cpu, gpu = parts[1], parts[2]
    elif "hostname" in cells:
        return text("hostname")
    else:
        return None
    cuda = text("device") == "cuda"
    return cpu.where(~cuda | (gpu == ""), cpu + ", " + gpu).where(cpu != "", "unrecorded")


def with_machine(cells: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``cells`` with a ``machine`` column, and ``["machine"]`` as a further context key, when the cells were
    timed on more than one machine (a Ray run across nodes); otherwise ``cells`` unchanged and no key.
    Timings are compared only between cells timed on the same machine."""
    machines = machine_of(cells) if not cells.empty else None
    if machines is None or machines.nunique() < 2:
        return cells, []
    return cells.assign(**{MACHINE: machines}), [MACHINE]


def _row(context: dict, comparison: str, metric: str, basis: str, result: Comparison, outcome: str,
         bearing: str) -> dict:
    return {**context, "comparison": comparison, "metric": metric, "basis": basis, "n": result.n,
            "pairing": result.pairing, "mean_a": result.mean_a, "mean_b": result.mean_b,
            "effect": result.effect, "ci_low": result.low, "ci_high": result.high, "outcome": outcome,
            "bearing": bearing}


def _decide(deciding: pd.DataFrame, spec: ClaimSpec, metric: str) -> tuple[str, str]:
    """A verdict from the bearings of the deciding comparisons, and the reason when inconclusive."""
    counts = deciding["bearing"].value_counts() if not deciding.empty else pd.Series(dtype=int)
    s, c, u = (int(counts.get(b, 0)) for b in (SUPPORTS, CONTRADICTS, UNCLEAR))
    decided = s + c + u
    if decided == 0:
        most = int(deciding["n"].max()) if not deciding.empty else 0
        if most == 0:
            return INCONCLUSIVE, f"cells missing: no comparison has {metric} values on both sides"
        return INCONCLUSIVE, (f"too few seeds: at most {most} per side of a comparison, "
                              f"{spec.min_seeds} needed")
    if s > c + u:
        return SUPPORTED, ""
    if c > s + u:
        return NOT_SUPPORTED, ""
    if u >= max(s, c):
        return INCONCLUSIVE, f"spread too wide: {u} of {decided} intervals include the threshold"
    return INCONCLUSIVE, f"mixed results: {s} of {decided} comparisons support the claim, {c} contradict it"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _counts_phrase(deciding: pd.DataFrame, labels: dict[str, str]) -> str:
    counts = deciding["bearing"].value_counts()
    decided = int(sum(counts.get(b, 0) for b in (SUPPORTS, CONTRADICTS, UNCLEAR)))
    if decided == 0:
        return f"{_plural(len(deciding), 'comparison')}, none with enough seeds for an interval"
    parts = [f"{labels[b]} in {int(counts.get(b, 0))} of {decided}" for b in (SUPPORTS, CONTRADICTS, UNCLEAR)]
    skipped = int(counts.get(INSUFFICIENT, 0))
    if skipped:
        parts.append(f"{skipped} without enough seeds")
    return ", ".join(parts)


def _headline(verdict: str, reason: str, deciding: pd.DataFrame, labels: dict[str, str]) -> str:
    """How many comparisons went the verdict's way ("lower in 8 of 8"), or why there is no verdict."""
    if verdict == INCONCLUSIVE:
        return reason
    bearing = SUPPORTS if verdict == SUPPORTED else CONTRADICTS
    counts = deciding["bearing"].value_counts()
    decided = int(sum(counts.get(b, 0) for b in (SUPPORTS, CONTRADICTS, UNCLEAR)))
    return f"{labels[bearing]} in {int(counts.get(bearing, 0))} of {decided}"


def _mean_phrase(values: pd.Series, kind: str) -> str:
    """The mean alone of ``_range_phrase``: x1.96 (geometric mean of ratios) or -13.6% (relative changes)."""
    values = values[np.isfinite(values)]
    if kind == "ratio":
        values = values[values > 0]
        return f"x{float(np.exp(np.log(values).mean())):.3g}" if not values.empty else ""
    return f"{values.mean():+.1%}" if not values.empty else ""


def _range_phrase(values: pd.Series, kind: str) -> str:
    """Mean and range of ratios (geometric mean, shown as xR) or of relative changes (shown in percent)."""
    values = values[np.isfinite(values)]
    if kind == "ratio":
        values = values[values > 0]
    if values.empty:
        return ""
    if kind == "ratio":
        mean = float(np.exp(np.log(values).mean()))
        return f"x{mean:.3g} on average (range x{values.min():.3g} to x{values.max():.3g})"
    return f"{values.mean():+.1%} on average (range {values.min():+.1%} to {values.max():+.1%})"


def _left_out_note(cells: pd.DataFrame, keep) -> str:
    if cells.empty or "status" not in cells:
        return ""
    relevant = cells[keep(cells)] if keep else cells
    bad = relevant[relevant["status"] != "ok"]
    if bad.empty:
        return ""
    counts = bad["status"].value_counts()
    listed = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f" Left out: {listed} {'cell' if len(bad) == 1 else 'cells'}."


def _no_interval(result: Comparison) -> str:
    return "no values" if result.n == 0 else "too few seeds"


def _empty_result(spec: ClaimSpec, reason: str, note: str = "") -> ClaimResult:
    return ClaimResult(spec, INCONCLUSIVE, f"{INCONCLUSIVE}: {reason}.{note}", reason, pd.DataFrame())


# --- depth helps ------------------------------------------------------------------------------------


def training_curves(epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per cell_id: its epochs in order with ``elapsed`` (cumulative training seconds).

    A warm-up epoch (one-time allocation and thread start-up, left out of ``sec_per_epoch`` for the same
    reason) counts at the cell's median steady epoch time, so that it does not decide a comparison."""
    if epochs.empty or not {"cell_id", "epoch", "sec"} <= set(epochs.columns):
        return {}
    frame = epochs.copy()
    for column in ("epoch", "sec") + PPL_METRICS:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    curves = {}
    for cell_id, group in frame.groupby("cell_id", sort=False):
        group = group.sort_values("epoch").copy()
        seconds = group["sec"].fillna(0)
        if "warmup" in group:
            warmup = group["warmup"].astype(str).str.lower().isin(("true", "1", "1.0"))
            if warmup.any() and (~warmup).any():
                seconds = seconds.where(~warmup, float(seconds[~warmup].median()))
        group["elapsed"] = seconds.cumsum()
        curves[cell_id] = group
    return curves


def value_at_time(curve: pd.DataFrame, seconds: float, metric: str) -> float:
    """The last value of ``metric`` recorded by ``seconds`` of training (NaN if none was)."""
    if curve is None or metric not in curve or not math.isfinite(seconds):
        return math.nan
    reached = curve[(curve["elapsed"] <= seconds * (1 + 1e-9)) & curve[metric].notna()]
    return float(reached[metric].iloc[-1]) if not reached.empty else math.nan


def _depth_outcome(result: Comparison, margin: float) -> tuple[str, str]:
    if not result.has_interval:
        return _no_interval(result), INSUFFICIENT
    tolerance = margin * abs(result.mean_a)
    if result.high < -tolerance:
        return "lower", SUPPORTS
    if result.low > tolerance:
        return "higher", CONTRADICTS
    if result.low >= -tolerance and result.high <= tolerance:
        return "no change", CONTRADICTS
    return "unclear", UNCLEAR


def _depth_helps(cells, epochs, samples, spec: ClaimSpec, corpus_words) -> ClaimResult:
    in_scope = (lambda c: c["direction"].isin(spec.directions)) if "direction" in cells else None
    note = _left_out_note(cells, in_scope)
    ok = ok_cells(cells)
    if "direction" in ok:
        ok = ok[ok["direction"].isin(spec.directions)]
    directions = "/".join(spec.directions)
    if ok.empty or "layers" not in ok:
        return _empty_result(spec, f"cells missing: no finished {directions} cells", note)
    if ok["layers"].nunique() < 2:
        return _empty_result(spec, f"only one depth ({_plural(int(ok['layers'].iloc[0]), 'layer')}) among the finished "
                                   f"{directions} cells", note)
    curves = training_curves(epochs)
    rows = []
    keys = context_keys(ok, "layers")
    for context, step, a_cells, b_cells in _depth_steps(ok, keys):
        for metric in PPL_METRICS:
            result = compare(by_seed(a_cells, metric), by_seed(b_cells, metric), "difference",
                             spec.confidence, spec.min_seeds)
            rows.append(_row(context, step, metric, "epochs", result, *_depth_outcome(result, spec.margin)))
    # At equal training time the seconds count, so only cells timed on the same machine are compared.
    ok, machine = with_machine(ok)
    for context, step, a_cells, b_cells in _depth_steps(ok, keys + machine) if curves else ():
        a_time = {int(s): curves[c]["elapsed"].iloc[-1] for s, c in zip(a_cells["seed"], a_cells["cell_id"])
                  if c in curves}
        fallback = float(np.median(list(a_time.values()))) if a_time else math.nan
        for metric in PPL_METRICS:
            a = pd.Series({s: value_at_time(curves[c], a_time.get(int(s), math.nan), metric)
                           for s, c in zip(a_cells["seed"], a_cells["cell_id"]) if c in curves}, dtype=float)
            b = pd.Series({s: value_at_time(curves[c], a_time.get(int(s), fallback), metric)
                           for s, c in zip(b_cells["seed"], b_cells["cell_id"]) if c in curves}, dtype=float)
            result = compare(a, b, "difference", spec.confidence, spec.min_seeds)
            rows.append(_row(context, step, metric, "time", result, *_depth_outcome(result, spec.margin)))
    evidence = pd.DataFrame(rows)
    deciding = evidence[(evidence["metric"] == spec.metric) & (evidence["basis"] == spec.basis)] \
        if not evidence.empty else evidence
    label = f"{METRIC_LABELS[spec.metric]} at equal {'training time' if spec.basis == 'time' else 'epochs'}"
    if deciding.empty:
        reason = ("no per-epoch times (epochs.csv missing or empty)" if spec.basis == "time"
                  else f"no {spec.metric} values")
        return ClaimResult(spec, INCONCLUSIVE, f"{INCONCLUSIVE}: {reason}.{note}", reason, evidence)
    verdict, reason = _decide(deciding, spec, spec.metric)
    words = {SUPPORTS: "lower with more layers", CONTRADICTS: "higher or unchanged", UNCLEAR: "unclear"}
    relative = deciding["effect"] / deciding["mean_a"]
    summary = f"{label}: {_counts_phrase(deciding, words)}"
    change = _range_phrase(relative[deciding["bearing"] != INSUFFICIENT], "relative")
    if change:
        summary += f"; change per depth step {change}"
    other_basis = "time" if spec.basis == "epochs" else "epochs"
    other = evidence[(evidence["metric"] == "train_ppl") & (evidence["basis"] == other_basis)]
    if not other.empty and (other["bearing"] != INSUFFICIENT).any():
        lower = int((other["bearing"] == SUPPORTS).sum())
        summary += (f"; training perplexity at equal {'training time' if other_basis == 'time' else 'epochs'}"
                    f" lower in {lower} of {int((other['bearing'] != INSUFFICIENT).sum())}")
    summary = f"{verdict}: {summary}.{note}"
    if reason:
        summary = f"{summary} Inconclusive because {reason}."
    short = SHORT_LABELS[spec.metric] + (" at equal time" if spec.basis == "time" else "")
    headline = _headline(verdict, reason, deciding, {SUPPORTS: f"{short} lower with more layers",
                                                      CONTRADICTS: f"{short} higher or unchanged with more layers"})
    mean_change = _mean_phrase(relative[deciding["bearing"] != INSUFFICIENT], "relative")
    if mean_change:
        headline += f" ({mean_change} per step)"
    return ClaimResult(spec, verdict, summary, reason, evidence, headline)


# --- bidirectional is slow ------------------------------------------------------------------------------


def _slow_outcome(result: Comparison, threshold: float) -> tuple[str, str]:
    if not result.has_interval:
        return _no_interval(result), INSUFFICIENT
    if result.low > threshold:
        return "slower", SUPPORTS
    if result.high < threshold:
        return "not slower", CONTRADICTS
    return "unclear", UNCLEAR


def direction_pairs(ok: pd.DataFrame, timing: bool = False):
    """(context, uni cells, bi cells) for every group of cells that differ only in direction and seed.
    ``timing``: the pairs compare times or memory, so cells timed on different machines are not paired
    (the context then names the machine when the cells ran on several)."""
    if ok.empty or "direction" not in ok:
        return
    keys = context_keys(ok, "direction")
    if timing:
        ok, machine = with_machine(ok)
        keys += machine
    for key, group in _groups(ok, keys):
        uni, bi = group[group["direction"] == "uni"], group[group["direction"] == "bi"]
        if not uni.empty and not bi.empty:
            yield dict(zip(keys, key)), uni, bi


def _bidirectional_slow(cells, epochs, samples, spec: ClaimSpec, corpus_words) -> ClaimResult:
    note = _left_out_note(cells, None)
    ok = ok_cells(cells)
    rows = []
    for context, uni, bi in direction_pairs(ok, timing=True):
        for metric in COST_METRICS:
            result = compare(by_seed(uni, metric), by_seed(bi, metric), "ratio", spec.confidence, spec.min_seeds)
            rows.append(_row(context, "bi / uni", metric, "epochs", result, *_slow_outcome(result, spec.threshold)))
    evidence = pd.DataFrame(rows)
    if evidence.empty:
        return _empty_result(spec, "cells missing: no finished uni and bi cells that differ only in direction",
                             note)
    deciding = evidence[evidence["metric"] == spec.metric]
    if not np.isfinite(deciding["effect"]).any():
        return ClaimResult(spec, INCONCLUSIVE, f"{INCONCLUSIVE}: no {spec.metric} values.{note}",
                           f"no {spec.metric} values", evidence)
    verdict, reason = _decide(deciding, spec, spec.metric)
    words = {SUPPORTS: f"slower by more than x{spec.threshold:g}", CONTRADICTS: "not slower", UNCLEAR: "unclear"}
    summary = f"bi/uni {METRIC_LABELS[spec.metric]}: {_range_phrase(deciding['effect'], 'ratio')}; " \
              f"{_counts_phrase(deciding, words)}"
    other = evidence[(evidence["metric"] != spec.metric) & np.isfinite(evidence["effect"])]
    if not other.empty:
        summary += f"; {METRIC_LABELS[other['metric'].iloc[0]]} {_range_phrase(other['effect'], 'ratio')}"
    summary = f"{verdict}: {summary}.{note}"
    if reason:
        summary = f"{summary} Inconclusive because {reason}."
    headline = f"bi/uni {SHORT_LABELS[spec.metric]} {_mean_phrase(deciding['effect'], 'ratio')}; " + _headline(
        verdict, reason, deciding, {SUPPORTS: f"above x{spec.threshold:g}", CONTRADICTS: f"below x{spec.threshold:g}"})
    return ClaimResult(spec, verdict, summary, reason, evidence, headline)


# --- bidirectional is useless ---------------------------------------------------------------------------


def _useless_outcome(result: Comparison, margin: float) -> tuple[str, str]:
    if not result.has_interval:
        return _no_interval(result), INSUFFICIENT
    if result.low > 1 - margin:
        return "bi no better", SUPPORTS
    if result.high < 1 - margin:
        return "bi better", CONTRADICTS
    return "unclear", UNCLEAR


def _leak_outcome(result: Comparison, margin: float) -> tuple[str, str]:
    if not result.has_interval:
        return _no_interval(result), INSUFFICIENT
    if result.low > 1 + margin:
        return "leak", SUPPORTS
    if result.high <= 1 + margin:
        return "no leak", CONTRADICTS
    return "unclear", UNCLEAR


def _difference_outcome(result: Comparison) -> str:
    if not result.has_interval:
        return _no_interval(result)
    if result.high < 0:
        return "bi lower"
    if result.low > 0:
        return "bi higher"
    return "no clear difference"


def cell_quality(samples: pd.DataFrame, corpus_words: set[str] | None) -> pd.DataFrame:
    """Per cell_id: mean share of generated words in the corpus and mean longest repeated run."""
    if samples.empty or "cell_id" not in samples:
        return pd.DataFrame(columns=["word_share", "longest_repeat"])
    scored = sample_quality(samples, corpus_words)
    return scored.groupby("cell_id")[["word_share", "longest_repeat"]].mean()


def _bidirectional_useless(cells, epochs, samples, spec: ClaimSpec, corpus_words) -> ClaimResult:
    note = _left_out_note(cells, None)
    ok = ok_cells(cells)
    quality = cell_quality(samples, corpus_words)
    if "cell_id" in ok:
        for column in ("word_share", "longest_repeat"):
            ok[column] = ok["cell_id"].map(quality[column]).astype(float)
    rows = []
    for context, uni, bi in direction_pairs(ok):
        result = compare(by_seed(uni, "causal_ppl"), by_seed(bi, "causal_ppl"), "ratio", spec.confidence,
                         spec.min_seeds)
        rows.append(_row(context, "bi / uni", "causal_ppl", "epochs", result, *_useless_outcome(result, spec.margin)))
        for direction, group in (("bi", bi), ("uni", uni)):
            result = compare(by_seed(group, "val_ppl"), by_seed(group, "causal_ppl"), "ratio", spec.confidence,
                             spec.min_seeds)
            outcome, _ = _leak_outcome(result, spec.margin)
            rows.append(_row(context, f"{direction}: causal / teacher-forced", "leak", "epochs", result, outcome,
                             "context"))
        for metric in ("word_share", "longest_repeat"):
            result = compare(by_seed(uni, metric), by_seed(bi, metric), "difference", spec.confidence,
                             spec.min_seeds)
            outcome = _difference_outcome(result)
            rows.append(_row(context, "bi - uni", metric, "samples", result, outcome, "context"))
    evidence = pd.DataFrame(rows)
    if evidence.empty:
        return _empty_result(spec, "cells missing: no finished uni and bi cells that differ only in direction",
                             note)
    deciding = evidence[evidence["metric"] == "causal_ppl"]
    if not np.isfinite(deciding["effect"]).any():
        return ClaimResult(spec, INCONCLUSIVE, f"{INCONCLUSIVE}: no causal_ppl values.{note}",
                           "no causal_ppl values", evidence)
    verdict, reason = _decide(deciding, spec, "causal_ppl")
    words = {SUPPORTS: "bi no better", CONTRADICTS: "bi better", UNCLEAR: "unclear"}
    summary = (f"bi/uni held-out causal perplexity {_range_phrase(deciding['effect'], 'ratio')}; "
               f"{_counts_phrase(deciding, words)}")
    leak = evidence[evidence["comparison"] == "bi: causal / teacher-forced"]
    if np.isfinite(leak["effect"]).any():
        summary += f"; bi causal/teacher-forced {_range_phrase(leak['effect'], 'ratio')}"
    summary += "; " + _quality_phrase(ok, corpus_words)
    summary = f"{verdict}: {summary}.{note}"
    if reason:
        summary = f"{summary} Inconclusive because {reason}."
    headline = f"bi/uni causal ppl {_mean_phrase(deciding['effect'], 'ratio')}; " + _headline(
        verdict, reason, deciding, {SUPPORTS: "bi no better", CONTRADICTS: "bi better"})
    return ClaimResult(spec, verdict, summary, reason, evidence, headline)


def _quality_phrase(ok: pd.DataFrame, corpus_words) -> str:
    if "word_share" not in ok or "direction" not in ok:
        return "no generated samples"
    by_direction = ok.groupby("direction")[["word_share", "longest_repeat"]].mean()
    parts = []
    if corpus_words:
        shares = [f"{d} {by_direction.loc[d, 'word_share']:.0%}" for d in ("uni", "bi")
                  if d in by_direction.index and np.isfinite(by_direction.loc[d, "word_share"])]
        if shares:
            parts.append("words found in the corpus " + " vs ".join(shares))
    else:
        parts.append("words found in the corpus: unavailable (corpus not found)")
    repeats = [f"{d} {by_direction.loc[d, 'longest_repeat']:.3g}" for d in ("uni", "bi")
               if d in by_direction.index and np.isfinite(by_direction.loc[d, "longest_repeat"])]
    if repeats:
        parts.append("longest repeated run " + " vs ".join(repeats) + " characters")
    return "; ".join(parts) if parts else "no generated samples"
