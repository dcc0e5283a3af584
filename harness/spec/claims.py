"""The claims a suite may declare, and their parameters: parsed and checked here, evaluated by
``harness.analysis.claims``. Light on purpose (no pandas or scipy), so that loading a suite stays fast.

A suite lists its claims (``claims:``), each a name or a mapping of a name and parameters:

```yaml
claims:
  - depth_helps
  - {name: bidirectional_slow, threshold: 1.5}
  - {name: bidirectional_useless, confidence: 0.99}
```

and may ask for every claim again under several *conditions*, each a subset of its cells; ``choose`` keeps,
per configuration, the cells of the value of a key (e.g. the learning rate) whose cells did best on the
selection text (``harness.analysis.conditions``):

```yaml
conditions:
  - {name: the recipe, where: {lr: 1, train_text: first}}
  - {name: learning rate chosen per depth, where: {train_text: first}, choose: lr}
```
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace

from harness.errors import HarnessError, quote

CLAIM_TITLES = {
    "depth_helps": "Depth helps",
    "bidirectional_slow": "Bidirectional is slow",
    "bidirectional_useless": "Bidirectional is useless for next-character prediction",
}
CLAIM_NAMES = tuple(CLAIM_TITLES)

PPL_METRICS = ("causal_ppl", "val_ppl", "train_ppl")
# The lowest held-out causal perplexity of any evaluation during training (early stopping): apart from a
# network that memorised its training text by the last epoch, what it could do.
BEST_METRIC = "best_causal_ppl"
# The held-out causal perplexity at the epoch chosen on selection text (data.select_tokens, evaluated every
# eval.select_every epochs): early stopping without choosing on the text that reports.
SELECTED_METRIC = "selected_causal_ppl"
COST_METRICS = ("sec_per_epoch", "peak_mem_bytes")
# What a claim on any axis may compare: perplexities (held to the learned gate) and costs.
AXIS_METRICS = PPL_METRICS + (BEST_METRIC, SELECTED_METRIC) + COST_METRICS + ("tokens_per_sec",)
AXIS = "axis"  # the kind of a claim declared with an axis, beside the lesson's three shorthands


@dataclass(frozen=True)
class ClaimSpec:
    """One claim to test and the parameters of its test.

    - ``min_seeds``: seeds a configuration needs on each side to count (below it, it is shown, not pooled).
    - ``confidence``: level of the intervals (per configuration and pooled).
    - ``metric``: depth_helps: the perplexity that decides (causal_ppl, val_ppl, train_ppl);
      bidirectional_slow: the cost that decides (sec_per_epoch, peak_mem_bytes).
    - ``basis``: depth_helps: compare at equal ``epochs`` or at equal training ``time``.
    - ``margin``: depth_helps and bidirectional_useless: the smallest relative change in perplexity that
      counts as a change (0.01: a ratio below 0.99 is an improvement).
    - ``threshold``: bidirectional_slow: the bi/uni ratio above which bidirectional counts as slow.
    - ``directions``: depth_helps: the directions whose depth is studied (bidirectional cells' causal
      perplexity is dominated by the leak, which bidirectional_useless covers).

    A claim on any axis (``name`` is ``AXIS``) also has ``label`` (its name as the suite gives it), ``axis``
    (the configuration key it varies), ``expect`` (lower or higher: the direction of the claimed effect on
    ``metric``), ``base`` (each other level against it; None: the axis's last level against its first) and
    ``where`` (the cells it is about: (key, values) pairs). Its ``threshold`` (NaN: 1 -/+ ``margin``) is the
    ratio the pooled interval is held against.
    """

    name: str
    min_seeds: int = 1
    confidence: float = 0.95
    metric: str = ""
    basis: str = "epochs"
    margin: float = 0.01
    threshold: float = 1.1
    directions: tuple[str, ...] = ("uni",)
    label: str = ""
    axis: str = ""
    expect: str = ""
    base: object = None
    where: tuple = ()

    @property
    def title(self) -> str:
        """The claim's title, with the parameters that differ from the defaults."""
        default = default_claim(self.name).to_dict()
        named = ("name", "axis", "expect", "base", "where") if self.name == AXIS else ()
        changed = [f"{k} = {'/'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in self.to_dict().items()
                   if k not in named and not _same_value(v, default.get(k))]
        title = self.label if self.name == AXIS else CLAIM_TITLES[self.name]
        return title + (f" ({', '.join(changed)})" if changed else "")

    @property
    def bound(self) -> float:
        """An axis claim's threshold: given, or 1 - margin (expect lower) / 1 + margin (expect higher)."""
        if not math.isnan(self.threshold):
            return self.threshold
        return 1 - self.margin if self.expect == "lower" else 1 + self.margin

    def to_dict(self) -> dict:
        """The parameters that apply to this claim, as a suite would write them."""
        out = {"name": self.label if self.name == AXIS else self.name}
        for key in _PARAMETERS[self.name]:
            value = getattr(self, key)
            if key == "where":
                value = {k: list(v) if len(v) > 1 else v[0] for k, v in value}
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


def _same_value(a, b) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


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


_COMMON = {"min_seeds": _int_at_least(1), "confidence": _number_between(0, 1)}
_PARAMETERS = {
    "depth_helps": {**_COMMON, "metric": _one_of(*PPL_METRICS, BEST_METRIC, SELECTED_METRIC), "basis": _one_of("epochs", "time"),
                    "margin": _number_between(0, 1, low_open=False), "directions": _directions},
    "bidirectional_slow": {**_COMMON, "metric": _one_of(*COST_METRICS),
                           "threshold": _number_between(0, math.inf)},
    "bidirectional_useless": {**_COMMON, "margin": _number_between(0, 1, low_open=False),
                              "metric": _one_of("causal_ppl", BEST_METRIC, SELECTED_METRIC)},
}
_PARAMETERS[AXIS] = {**_COMMON, "axis": None, "metric": _one_of(*AXIS_METRICS), "expect": _one_of("lower", "higher"),
                     "base": None, "where": None, "margin": _number_between(0, 1, low_open=False),
                     "threshold": _number_between(0, math.inf)}
_DEFAULT_METRIC = {"depth_helps": "causal_ppl", "bidirectional_slow": "sec_per_epoch",
                   "bidirectional_useless": "causal_ppl", AXIS: "causal_ppl"}


def default_claim(name: str) -> ClaimSpec:
    if name == AXIS:
        return ClaimSpec(name=AXIS, metric=_DEFAULT_METRIC[AXIS], threshold=math.nan)
    return ClaimSpec(name=name, metric=_DEFAULT_METRIC[name])


def default_claims() -> list[ClaimSpec]:
    """The lesson's three claims with default parameters."""
    return [default_claim(name) for name in CLAIM_NAMES]


def _unknown(kind: str, value, known) -> str:
    close = difflib.get_close_matches(str(value), list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return f"unknown {kind} {quote(value)}{hint}"


def parse_claims(raw, where: str, field_for=None) -> list[ClaimSpec]:
    """Validate a suite's ``claims`` list. ``None`` gives no claims. Raises HarnessError naming ``where``,
    the item and the key at fault. ``field_for(key, where)`` turns a key as written (``lr``, ``train.lr``)
    into its field name (default: the suite's own rule)."""
    if field_for is None:
        from harness.spec.config import field_for_axis as field_for
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
        if isinstance(item, dict) and "axis" in item:
            spec = _axis_claim(name, params, here, field_for)
            if spec in seen:
                raise HarnessError(f"{here}: claim {name!r} is listed twice with the same parameters")
            seen.add(spec)
            specs.append(spec)
            continue
        if not isinstance(name, str) or name not in CLAIM_TITLES:
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
        if spec.metric in (BEST_METRIC, SELECTED_METRIC) and spec.basis == "time":
            raise HarnessError(f"{here}: {name}: metric {spec.metric} is compared after the same epochs only, "
                               "not at equal training time")
        if spec in seen:
            raise HarnessError(f"{here}: claim {name!r} is listed twice with the same parameters")
        seen.add(spec)
        specs.append(spec)
    return specs


def _axis_claim(name, params: dict, here: str, field_for) -> ClaimSpec:
    """A claim on any axis: ``{name, axis, metric, expect[, base, where, margin, threshold, confidence,
    min_seeds]}``."""
    if not isinstance(name, str) or not name.strip():
        raise HarnessError(f"{here}: name = {name!r}: expected a non-empty text")
    if name in CLAIM_TITLES:
        raise HarnessError(f"{here}: {name} is a shorthand of the lesson's claim and takes no axis; give a claim "
                           "with an axis its own name")
    allowed = _PARAMETERS[AXIS]
    for key in ("metric", "expect"):
        if key not in params:
            raise HarnessError(f"{here}: {name}: {key} is required with an axis "
                               f"({'one of ' + ', '.join(AXIS_METRICS) if key == 'metric' else 'lower or higher'})")
    values = {"label": name.strip()}
    for key, value in params.items():
        if key not in allowed:
            raise HarnessError(f"{here}: {name}: {_unknown('parameter', key, allowed)}")
        if key == "axis":
            if not isinstance(value, str):
                raise HarnessError(f"{here}: {name}.axis = {value!r}: expected a configuration key, e.g. lr")
            values["axis"] = field_for(value, f"{here}: {name}.axis")
            if values["axis"] == "seed":
                raise HarnessError(f"{here}: {name}.axis = seed: seeds are the replicates, not an axis to compare")
        elif key == "base":
            if isinstance(value, (list, dict)):
                raise HarnessError(f"{here}: {name}.base = {value!r}: expected one value of the axis")
            values["base"] = value
        elif key == "where":
            values["where"] = subset_pairs(value, f"{here}: {name}.where", field_for)
        else:
            try:
                values[key] = allowed[key](value)
            except ValueError as exc:
                raise HarnessError(f"{here}: {name}.{key} = {value!r}: {exc}") from None
    return replace(default_claim(AXIS), **values)


def subset_pairs(subset, where: str, field_for) -> tuple[tuple[str, tuple], ...]:
    """A ``where`` mapping (key: a value or a list of them) as (field, values) pairs; HarnessError naming
    ``where`` for what is not a mapping or an empty list."""
    if not isinstance(subset, dict):
        raise HarnessError(f"{where} = {subset!r}: expected a mapping of keys to a value or a list")
    pairs = []
    for key, value in subset.items():
        values = tuple(value) if isinstance(value, list) else (value,)
        if not values:
            raise HarnessError(f"{where}.{key}: an empty list matches no cell")
        pairs.append((field_for(key, where), values))
    return tuple(pairs)


def claims_needing_curves(specs: list[ClaimSpec]) -> list[ClaimSpec]:
    """Claims that compare held-out perplexity at equal training time: they need held-out perplexity
    during training (``eval.every`` > 0), not only after the last epoch."""
    return [s for s in specs if s.name == "depth_helps" and s.basis == "time" and s.metric != "train_ppl"]


@dataclass(frozen=True)
class ConditionSpec:
    """A subset of a run's cells under which every claim is tested again.

    - ``where``: (key, allowed values) pairs; a cell belongs when each of its keys has one of the values.
    - ``choose``: a configuration key (e.g. ``lr``); per configuration (every other key but the seed) only
      the cells with the value that did best on the selection text are kept (``harness.analysis.conditions``)."""

    name: str
    where: tuple[tuple[str, tuple], ...] = ()
    choose: str = ""

    def to_dict(self) -> dict:
        out = {"name": self.name, "where": {k: list(v) if len(v) > 1 else v[0] for k, v in self.where}}
        return {**out, "choose": self.choose} if self.choose else out


def parse_conditions(raw, where: str, field_for) -> list[ConditionSpec]:
    """Validate a suite's ``conditions`` list; ``field_for(key, where)`` turns a key as written (``lr``,
    ``train.lr``) into its field name or raises HarnessError."""
    if raw is None:
        return []
    key = f"{where}: conditions"
    if not isinstance(raw, list):
        raise HarnessError(f"{key}: expected a list of mappings with name, where and (optionally) choose")
    specs, names = [], set()
    for i, item in enumerate(raw):
        here = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise HarnessError(f"{here} = {item!r}: expected a mapping with name, where and (optionally) choose")
        unknown = [k for k in item if k not in ("name", "where", "choose")]
        if unknown:
            raise HarnessError(f"{here}: {_unknown('key', unknown[0], ('name', 'where', 'choose'))}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise HarnessError(f"{here}: name = {name!r}: expected a non-empty text")
        if name in names:
            raise HarnessError(f"{here}: name {name!r} is used twice")
        names.add(name)
        pairs = list(subset_pairs(item.get("where") or {}, f"{here}: where", field_for))
        choose = item.get("choose") or ""
        if choose:
            choose = field_for(choose, f"{here}: choose")
            if choose == "seed":
                raise HarnessError(f"{here}: choose = seed: seeds are the replicates, not a setting to choose")
        specs.append(ConditionSpec(name.strip(), tuple(pairs), choose))
    return specs
