"""The cells and epochs tables as the claims and figures read them: finished cells with numeric results,
the keys that make a configuration, the groups of cells that differ only in direction or in depth (timings
compared only within one machine), and each cell's training curve and best held-out perplexity."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.spec.claims import BEST_METRIC, SELECTED_METRIC, COST_METRICS, PPL_METRICS
from harness.spec.config import FIELDS, GRID_KEYS, CellConfig

GRID_AXES = tuple(k for k in GRID_KEYS if k != "seed")  # seeds are the replicates, not an axis
MACHINE = "machine"


# --- tables -----------------------------------------------------------------------------------------------


def ok_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells that finished (status ok), with the result columns numeric."""
    if cells.empty or "status" not in cells:
        return cells.iloc[0:0].copy()
    ok = cells[cells["status"] == "ok"].copy()
    for column in PPL_METRICS + COST_METRICS + ("seed", "layers", "flops_per_epoch", BEST_METRIC, SELECTED_METRIC):
        if column in ok:
            ok[column] = pd.to_numeric(ok[column], errors="coerce")
    return ok


def extra_keys(cells: pd.DataFrame) -> list[str]:
    """Configuration keys beyond the grid axes that take more than one value in ``cells`` (precision,
    hidden, threads ...): cells that differ in one are different configurations."""
    return [k for k in FIELDS if k in cells and k not in GRID_KEYS and _varies(cells[k], k)]


def _varies(column: pd.Series, key: str) -> bool:
    """Whether ``column`` holds more than one value of ``key``. A missing value is the key's default: a value
    of its own where that is None (no parameter target beside a target), the default's value otherwise (a row
    stored before the key existed)."""
    default = CellConfig.model_fields[key].default
    if default is None:
        return column.nunique(dropna=False) > 1
    if column.isna().any() and isinstance(default, (int, float, str)) and not isinstance(default, bool):
        return len({_canonical(v) for v in column.astype(object).where(column.notna(), default)}) > 1
    return column.nunique() > 1


def _canonical(value):
    """A value as one thing whether read as a number or as text (0, 0.0 and "0" alike)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def configuration_keys(cells: pd.DataFrame) -> list[str]:
    """The grid axes and every other configuration key that varies: one configuration per combination."""
    return [k for k in GRID_AXES if k in cells] + extra_keys(cells)


def context_keys(cells: pd.DataFrame, compared: str) -> list[str]:
    return [k for k in configuration_keys(cells) if k != compared]


def by_seed(group: pd.DataFrame, column: str) -> dict:
    """``column`` of a group of cells as {seed: value} (several rows of one seed are averaged)."""
    if column not in group or "seed" not in group:
        return {}
    values = pd.to_numeric(group[column], errors="coerce").to_numpy(dtype=float)
    sums: dict = {}
    for seed, value in zip(group["seed"].tolist(), values.tolist()):
        if math.isfinite(value) and pd.notna(seed):  # a row without a seed is no seed's (as groupby drops it)
            total, count = sums.get(seed, (0.0, 0))
            sums[seed] = (total + value, count + 1)
    return {int(seed): total / count for seed, (total, count) in sorted(sums.items())}


def ids_by_seed(group: pd.DataFrame) -> dict:
    """The cell id of each seed of a group of cells ({seed: cell_id}; the first where a seed repeats)."""
    if "cell_id" not in group or "seed" not in group:
        return {}
    seeds = pd.to_numeric(group["seed"], errors="coerce")
    out = {}
    for seed, cell_id in zip(seeds, group["cell_id"]):
        if pd.notna(seed):
            out.setdefault(int(seed), str(cell_id))
    return out


def groups(frame: pd.DataFrame, keys: list[str]):
    """(values of ``keys``, its cells) for each combination of ``keys`` in ``frame``; all of it when none."""
    if frame.empty:
        return
    if not keys:
        yield (), frame
        return
    for key, group in frame.groupby(keys, dropna=False, sort=True):
        yield (key if isinstance(key, tuple) else (key,)), group


def text_column(cells: pd.DataFrame, column: str) -> pd.Series:
    """``cells[column]`` as strings, empty where missing (and wholly empty when there is no such column)."""
    if column not in cells:
        return pd.Series("", index=cells.index, dtype=object)
    return cells[column].astype(object).where(cells[column].notna(), "").astype(str)


def machine_of(cells: pd.DataFrame) -> pd.Series | None:
    """Per cell, the machine its timings come from: the CPU model, and for CUDA cells the GPU too
    (cells.csv ``cpu_model``, ``gpu_name``; a Ray run's ``node``, else ``hostname``). None when not recorded."""
    if "cpu_model" in cells:
        cpu, gpu = text_column(cells, "cpu_model"), text_column(cells, "gpu_name")
    elif "node" in cells:
        parts = text_column(cells, "node").str.split("|", expand=True).reindex(columns=range(3)).fillna("")
        cpu, gpu = parts[1], parts[2]
    elif "hostname" in cells:
        return text_column(cells, "hostname")
    else:
        return None
    cuda = text_column(cells, "device") == "cuda"
    return cpu.where(~cuda | (gpu == ""), cpu + ", " + gpu).where(cpu != "", "unrecorded")


def with_machine(cells: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``cells`` with a ``machine`` column and ``["machine"]`` as a further context key when the cells were
    timed on more than one machine; otherwise unchanged. Timings are compared only within a machine."""
    machines = machine_of(cells) if not cells.empty else None
    if machines is None or machines.nunique() < 2:
        return cells, []
    return cells.assign(**{MACHINE: machines}), [MACHINE]


def direction_pairs(ok: pd.DataFrame, timing: bool = False):
    """(context, uni cells, bi cells) for every group of cells that differ only in direction and seed."""
    if ok.empty or "direction" not in ok:
        return
    keys = context_keys(ok, "direction")
    if timing:
        ok, machine = with_machine(ok)
        keys += machine
    for key, group in groups(ok, keys):
        uni, bi = group[group["direction"] == "uni"], group[group["direction"] == "bi"]
        if not uni.empty and not bi.empty:
            yield dict(zip(keys, key)), uni, bi


def depth_extremes(ok: pd.DataFrame, keys: list[str]):
    """(context, "lo -> hi layers", shallowest cells, deepest cells): one comparison per configuration, its
    deepest network against its shallowest. Adjacent steps (1 -> 2, 2 -> 3, 3 -> 4) share their middle
    network, so they are not independent units, and their mean is the extremes' ratio anyway."""
    for key, group in groups(ok, keys):
        depths = sorted(group["layers"].dropna().unique())
        if len(depths) >= 2:
            lo, hi = depths[0], depths[-1]
            yield (dict(zip(keys, key)), f"{int(lo)} -> {int(hi)} layers", group[group["layers"] == lo],
                   group[group["layers"] == hi])


# --- curves ----------------------------------------------------------------------------------------------


_CURVES: dict[int, tuple] = {}  # id of an epochs table -> (a weak reference to it, its curves)


def training_curves(epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per cell_id: its epochs in order with ``elapsed`` (cumulative training seconds).

    A warm-up epoch (one-time allocation and thread start-up, left out of ``sec_per_epoch`` for the same
    reason) counts at the cell's median steady epoch time, so that it does not decide a comparison. The
    curves of the table last asked for are kept (claims and learning status ask for the same table); the
    tables a run is read into are not changed after loading."""
    import weakref

    if epochs is None:
        return {}
    kept = _CURVES.get(id(epochs))
    if kept is not None and kept[0]() is epochs:
        return kept[1]
    curves = _training_curves(epochs)
    _CURVES.clear()
    _CURVES[id(epochs)] = (weakref.ref(epochs), curves)
    return curves


def _training_curves(epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    if epochs is None or epochs.empty or not {"cell_id", "epoch", "sec"} <= set(epochs.columns):
        return {}
    frame = epochs[epochs["cell_id"].notna()].copy()
    if frame.empty:
        return {}
    for column in ("epoch", "sec") + PPL_METRICS:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    # The whole table at once, then cut per cell: cells in the order they first appear, epochs in order.
    first_seen = pd.Series(pd.factorize(frame["cell_id"])[0], index=frame.index)
    frame = frame.assign(_cell=first_seen).sort_values(["_cell", "epoch"], kind="stable")
    seconds = frame["sec"].fillna(0)
    if "warmup" in frame:
        warmup = frame["warmup"].astype(str).str.lower().isin(("true", "1", "1.0"))
        steady = seconds[~warmup].groupby(frame["_cell"][~warmup]).median()
        replace = warmup & frame["_cell"].isin(steady.index)  # a cell with steady epochs to stand in
        seconds = seconds.where(~replace, frame["_cell"].map(steady))
    frame["elapsed"] = seconds.groupby(frame["_cell"]).cumsum()
    cells = frame.pop("_cell").to_numpy()
    ends = np.flatnonzero(np.diff(cells)) + 1
    starts = np.concatenate(([0], ends))
    stops = np.concatenate((ends, [len(frame)]))
    ids = frame["cell_id"].to_numpy()
    return {ids[start]: frame.iloc[start:stop].copy() for start, stop in zip(starts, stops)}


def value_at_time(curve: pd.DataFrame, seconds: float, metric: str) -> float:
    """The last value of ``metric`` recorded by ``seconds`` of training (NaN if none was)."""
    if curve is None or metric not in curve or not math.isfinite(seconds):
        return math.nan
    reached = curve[(curve["elapsed"] <= seconds * (1 + 1e-9)) & curve[metric].notna()]
    return float(reached[metric].iloc[-1]) if not reached.empty else math.nan


def best_causal(cells: pd.DataFrame, curves: dict) -> pd.Series:
    """Per cell row: the lowest held-out causal perplexity it reached at any evaluation: those along its
    curve, its last one, and the one at the epoch chosen on selection text (a cell evaluated on held-out
    text only there, ``eval.every: 0`` and ``eval.last: false``, has no other)."""
    def column(name: str) -> pd.Series:
        return pd.to_numeric(cells[name], errors="coerce") if name in cells else pd.Series(np.nan, index=cells.index)

    last = np.fmin(column("causal_ppl"), column(SELECTED_METRIC))
    if "cell_id" not in cells:
        return last
    best = []
    for cell_id, final in zip(cells["cell_id"], last):
        curve = curves.get(cell_id)
        values = curve["causal_ppl"].dropna() if curve is not None and "causal_ppl" in curve else pd.Series()
        best.append(float(min(values.min(), final)) if len(values) and math.isfinite(final)
                    else float(values.min()) if len(values) else final)
    return pd.Series(best, index=cells.index, dtype=float)


def best_metrics(ok: pd.DataFrame) -> tuple[str, ...]:
    """The early-stopping perplexities ``ok`` has: the best of the held-out evaluations, and the one at the
    epoch chosen on selection text where cells were evaluated on it."""
    selected = SELECTED_METRIC in ok and pd.to_numeric(ok[SELECTED_METRIC], errors="coerce").notna().any()
    return (BEST_METRIC, SELECTED_METRIC) if selected else (BEST_METRIC,)



def matches_value(column: pd.Series, value) -> pd.Series:
    """Where ``column`` holds ``value``: as numbers when both are numbers (1 and 1.0 alike), else as text
    (a table read back from CSV holds "adam", 0.003, True ...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return column.astype(str).str.lower() == str(value).lower()
    numbers = pd.to_numeric(column, errors="coerce")
    return np.isclose(numbers, float(value), rtol=1e-9, atol=0.0) & numbers.notna()


def matches_values(column: pd.Series, values) -> pd.Series:
    """Where ``column`` holds one of ``values`` (``matches_value``); None matches an empty cell (a key not
    set, such as ``target_params`` of a cell with its hidden size given)."""
    hit = pd.Series(False, index=column.index)
    for value in values:
        hit |= column.isna() if value is None else pd.Series(np.asarray(matches_value(column, value)), index=column.index)
    return hit


def subset_mask(cells: pd.DataFrame, where) -> pd.Series:
    """Which cells hold, for each (key, values) pair of ``where``, one of the values (``matches_values``); a
    key the table lacks matches only None (a key not recorded is at its default)."""
    mask = pd.Series(True, index=cells.index)
    for key, values in where:
        mask &= matches_values(cells[key], values) if key in cells else any(v is None for v in values)
    return mask


def axis_context_keys(ok: pd.DataFrame, axis: str) -> tuple[list[str], list[str]]:
    """The keys that make a configuration when ``axis`` is compared, and the keys that move with the axis
    (one value per level of it, different between levels, such as an arm's own learning rate and epochs):
    those are part of what is compared, not of the configuration."""
    keys, moving = [], []
    for key in context_keys(ok, axis):
        per_level = ok.groupby(ok[axis].astype(str), dropna=False)[key].nunique(dropna=False)
        varies = ok[key].nunique(dropna=False) > 1
        (moving if varies and (per_level <= 1).all() else keys).append(key)
    return keys, moving


def _label(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def axis_pairs(ok: pd.DataFrame, keys: list[str], axis: str, base=None):
    """(context, "AXIS b / a", reference cells, compared cells) per configuration: against ``base`` each
    other level of the axis, or without one the last level against the first (numeric order)."""
    for key, group in groups(ok, keys):
        context = dict(zip(keys, key))
        values = list(dict.fromkeys(group[axis].dropna().tolist()))
        if base is not None:
            reference = group[matches_value(group[axis], base)]
            if reference.empty:
                continue
            others = [v for v in values if not matches_value(pd.Series([v]), base).iloc[0]]
            for value in sorted(others, key=_order):
                yield (context, f"{axis} {_label(value)} / {_label(base)}", reference,
                       group[matches_value(group[axis], value)])
        else:
            ordered = sorted(values, key=_order)
            if len(ordered) >= 2:
                lo, hi = ordered[0], ordered[-1]
                yield (context, f"{axis} {_label(hi)} / {_label(lo)}", group[matches_value(group[axis], lo)],
                       group[matches_value(group[axis], hi)])


def _order(value):
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return (0, float(number), "") if pd.notna(number) else (1, 0.0, str(value))
