"""The report's figures: matplotlib Figures (no pyplot state) with one visual language throughout.

- Direction is a colour (``DIRECTION_COLORS``), cell type a marker (``CELL_MARKERS``), depth a line style
  (``DEPTH_STYLES``), in every figure.
- Perplexities, times and ratios are drawn on log axes, and their intervals are computed on the log
  scale (``harness.analysis.stats.log_interval``), so that no whisker reaches an impossible value.
- Seeds are drawn individually (thin lines, small points); means over seeds are geometric.

Every function takes tables, draws one PNG and returns its path, or None when the run holds no data for
it (the report then says so instead of showing an empty plot).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path

from harness.analysis.no_learning import best_ngram
from harness.report.captions import CELL_MARKERS, FIGURES  # noqa: F401 - FIGURES: the captions of these figures
from harness.report.wording import measure_labels
from harness.analysis.cell_frames import GRID_AXES, MACHINE, direction_pairs, extra_keys, ok_cells, training_curves
from harness.analysis.claims import ClaimResult

DIRECTION_COLORS = {"uni": "#0173b2", "bi": "#de8f05"}
DEPTH_STYLES = {1: "-", 2: "--", 3: "-.", 4: ":"}
MEASURE_COLORS = {"training": "#029e73", "held-out causal": "#d55e00", "held-out teacher-forced": "#cc78bc"}
BASELINE_STYLES = {"uniform": ":", "unigram": "--", "bigram": "-."}
DPI = 90
FOREST_DPI = 80  # one forest plot per claim: smaller, so that a report of many claims stays short
# The forest plot's labels: 11 pixels at FOREST_DPI, the least at which "rnn" does not read as "mn".
FOREST_POINTS = 10
FOREST_WIDTH = 7.6  # inches, unless the labels need more
FOREST_PLOT_WIDTH = 5.8  # inches beside the labels: the axes, their margins
# The forest plot's margins in inches, laid out by hand (constrained layout doubled its cost): above, the
# title; below, the tick labels, the axis label and the legend; left of the axes, the widest label.
FOREST_TOP, FOREST_BOTTOM, FOREST_RIGHT, FOREST_LABEL_PAD = 0.32, 0.84, 0.2, 0.16
FOREST_LABEL_SCALE = 1.1  # rasterised text runs wider than the font's advance widths by up to a few percent

# Titles sit just above their axes: no figure has tick labels or an offset text on top, and a title left
# to place itself measures every axis of its figure at each draw (a sixth of a panel figure's cost).
TITLE_Y = 1.0
CONDITION_COLORS = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494",
                    "#ece133", "#56b4e9")
CELL_STYLES = {"rnn": ":", "gru": "-", "lstm": "--"}


def depth_style(layers) -> str:
    return DEPTH_STYLES.get(int(layers), (0, (1, 3)))


def _save(fig: Figure | None, path: Path, dpi: int = DPI) -> Path | None:
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


class _PlainLogFormatter(ticker.LogFormatter):
    """LogFormatter's choice of which ticks to label, written as plain numbers (0.2, 6, 10)."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


class _InViewLogLocator(ticker.LogLocator):
    """LogLocator's ticks, less those outside the view: it returns whole decades around the view, and the
    axis makes a tick (two lines, two labels) for each before drawing only those inside, which was a third
    of a forest plot's cost. The ticks drawn are the same."""

    def __call__(self):
        low, high = sorted(self.axis.get_view_interval())
        slack = (high / low) ** 1e-9 if low > 0 else 1.0
        return [t for t in super().__call__() if low / slack <= t <= high * slack]


def _log_axis(ax, which: str = "y") -> None:
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_locator(_InViewLogLocator())
    axis.set_minor_locator(_InViewLogLocator(subs="auto"))
    axis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _geomean(values) -> float:
    x = np.asarray([v for v in values if np.isfinite(v) and v > 0], dtype=float)
    return float(np.exp(np.log(x).mean())) if len(x) else math.nan


def _baselines(ax, baselines: dict | None, label: bool) -> None:
    lines = [(name, style, (baselines or {}).get(name)) for name, style in BASELINE_STYLES.items()]
    best = best_ngram(baselines)
    if best is not None:  # the strongest simple model of the same text (Kneser-Ney)
        lines.append((f"best n-gram ({best[0]})", (0, (1, 1)), best[1]))
    for name, style, value in lines:
        if isinstance(value, (int, float)) and math.isfinite(value):
            ax.axhline(value, color="0.45", lw=0.9, ls=style, zorder=1)
            if label:
                ax.annotate(f"{name} {value:.3g}", (1.0, value), xycoords=("axes fraction", "data"),
                            xytext=(-2, 2), textcoords="offset points", ha="right", fontsize=7, color="0.35")


def panel_baselines(baselines: dict | None, cells: pd.DataFrame, cell_ids) -> dict | None:
    """The baselines a panel of ``cell_ids`` is drawn against: those of the text its cells trained on
    (``harness.analysis.run_text.cell_baselines``' columns) where they all share one that is not the run's
    main text (the whole book), else ``baselines``."""
    columns = ("unigram_baseline", "bigram_baseline", "ngram_baseline", "ngram_baseline_order")
    if any(c not in cells for c in columns):
        return baselines
    rows = cells[cells["cell_id"].isin(set(cell_ids))]
    values = {c: pd.to_numeric(rows[c], errors="coerce").dropna().unique() for c in columns[:3]}
    orders = rows["ngram_baseline_order"].dropna().unique()
    main = best_ngram(baselines)
    if any(len(v) != 1 for v in values.values()) or len(orders) != 1 or (
            main is not None and math.isclose(values["ngram_baseline"][0], main[1], rel_tol=1e-9)):
        return baselines
    own = {k: v for k, v in (baselines or {}).items() if not k.endswith("-gram")}
    return {**own, "unigram": float(values["unigram_baseline"][0]), "bigram": float(values["bigram_baseline"][0]),
            str(orders[0]): float(values["ngram_baseline"][0])}


def _style_handles(directions, depths, cells, extra=()) -> list:
    handles = [Line2D([], [], color=DIRECTION_COLORS[d], lw=2, label=d) for d in directions]
    handles += [Line2D([], [], color="0.3", lw=1.3, ls=depth_style(n), label=f"{int(n)} layer{'s' if n > 1 else ''}")
                for n in depths]
    handles += [Line2D([], [], color="0.3", marker=CELL_MARKERS.get(c, "o"), ls="none", label=c) for c in cells]
    return handles + list(extra)


def _legend_columns(fig, handles) -> int:
    # As many columns as the figure is wide for: a narrow figure's legend wraps instead of being cut.
    return max(1, min(len(handles), int(fig.get_figwidth() // 1.15)))


def _style_legend(fig, directions, depths, cells, extra=()) -> None:
    handles = _style_handles(directions, depths, cells, extra)
    fig.legend(handles=handles, loc="outside lower center", ncol=_legend_columns(fig, handles), fontsize=8,
               frameon=False)


# A grid of panels laid out by hand, in inches (constrained layout was half of these figures' cost): left of
# the panels their y label and tick labels, above each its title, below each its tick labels and x label,
# and below the grid the legend, LEGEND_ROW per row of it.
PANEL_LEFT, PANEL_RIGHT, PANEL_TITLE, PANEL_XAXIS, PANEL_GAP, SUPTITLE, LEGEND_ROW = 0.78, 0.15, 0.32, 0.5, 0.15, 0.3, 0.24


def _panel_grid(fig, rows: int, cols: int, handles: list, x_labels_each_row: bool, suptitle: bool,
                title_lines: int = 1) -> None:
    """Place a ``rows`` x ``cols`` grid of panels and the figure's legend (``handles``) by hand;
    ``title_lines``: lines of the longest panel title."""
    columns = _legend_columns(fig, handles)
    legend_rows = -(-len(handles) // columns) if handles else 0
    width, height = fig.get_size_inches()
    bottom = PANEL_XAXIS + legend_rows * LEGEND_ROW + 0.1
    title = PANEL_TITLE + (title_lines - 1) * TITLE_LINE
    top = title + (SUPTITLE if suptitle else 0.0)
    row_gap = title + (PANEL_XAXIS if x_labels_each_row else 0.12)
    panel_w = (width - PANEL_LEFT - PANEL_RIGHT - (cols - 1) * PANEL_GAP) / cols
    panel_h = (height - top - bottom - (rows - 1) * row_gap) / rows
    fig.subplots_adjust(left=PANEL_LEFT / width, right=1 - PANEL_RIGHT / width, top=1 - top / height,
                        bottom=bottom / height, wspace=PANEL_GAP / panel_w, hspace=row_gap / panel_h)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, frameon=False, borderaxespad=0.3)


MAX_VARIANTS = 8  # rows of panels for the other swept keys; more are left out, and the title says so


def variants(ok: pd.DataFrame) -> tuple[list[str], list[tuple]]:
    """The configuration keys a suite sweeps beyond the grid (hidden, lr, train_text ...) and their
    combinations among ``ok``: a figure draws each combination apart, never averaged into one line."""
    keys = extra_keys(ok) if not ok.empty else []
    if not keys:
        return [], [()]
    # A key that moves with the others (hidden with the parameter count, the settings that make up a suite's
    # arm) splits no configuration they do not split already: left out, the keys of most values first (hidden
    # before the parameter count it follows), then the last.
    grid = [k for k in GRID_AXES if k in ok]

    def configurations(names: list[str]) -> int:
        return len(ok[grid + names].astype(str).drop_duplicates())

    full = configurations(keys)
    order = sorted(range(len(keys)), key=lambda i: (-ok[keys[i]].astype(str).nunique(), -i))
    for key in [keys[i] for i in order]:
        rest = [k for k in keys if k != key]
        if rest and configurations(rest) == full:
            keys = rest
    combos = list(dict.fromkeys(tuple(row) for row in _as_text(ok[keys]).itertuples(index=False)))
    return keys, sorted(combos)


def _as_text(values):
    """Values as the text a combination holds: a missing one (no parameter target) is "none", never NaN,
    which neither sorts nor compares with text."""
    return values.astype(object).where(values.notna(), "none").astype(str)


def panel_title(head: str, label: str) -> str:
    """A panel's title: ``head`` (cell type, direction) and the combination's ``label`` on one line when
    they fit, else the label wrapped on the lines below."""
    if not label:
        return head
    one = f"{head}, {label}"
    return one if len(one) <= TITLE_CHARS else f"{head},\n" + textwrap.fill(label, TITLE_CHARS)


def variant_label(keys: list[str], combo: tuple, shown: list[tuple] | None = None) -> str:
    """``combo`` in words; with ``shown`` (the combinations drawn), only the keys whose value differs among
    them."""
    differ = [i for i in range(len(keys)) if shown is None or len({c[i] for c in shown}) > 1] or range(len(keys))
    return ", ".join(f"{keys[i]} {_plain(combo[i])}" for i in differ)


def _plain(value: str) -> str:
    """A value as a table of cells spells it, with an integral float written as an integer (621596.0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() and "." in str(value) else str(value)


# Characters of a panel title's line: a 4.2-inch panel at font size 10.
TITLE_CHARS = 52
TITLE_LINE = 0.16  # inches per line of a panel title beyond the first


def in_variant(frame: pd.DataFrame, keys: list[str], combo: tuple) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for key, value in zip(keys, combo):
        mask &= _as_text(frame[key]) == value
    return frame[mask]


def _curve_frame(cells: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Every finished cell's epochs with ``elapsed`` seconds, its grid keys and the other swept keys."""
    curves = training_curves(epochs)
    ok = ok_cells(cells)
    if not curves or ok.empty:
        return pd.DataFrame()
    keys = ok.set_index("cell_id")[[k for k in ("cell", "layers", "direction", "device", "seed") if k in ok]
                                   + variants(ok)[0]]
    frames = [curve for cell_id, curve in curves.items() if cell_id in keys.index]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop(columns=[c for c in keys.columns if c in frame]).join(keys, on="cell_id")


def _epoch_means(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per epoch of ``frame`` (seeds' rows): the mean of ``x`` and the geometric mean of the finite, positive
    ``y``, sorted by epoch. pandas' own mean of the logarithms: a Python function per group cost a sixth of
    a curve figure."""
    values = pd.to_numeric(frame[y], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(values) & (values > 0)
    if not keep.any():
        return pd.DataFrame({x: [], y: []})
    logs = pd.DataFrame({"epoch": frame["epoch"].to_numpy()[keep], y: np.log(values[keep])})
    if x != "epoch":
        logs[x] = frame[x].to_numpy()[keep]
    means = logs.groupby("epoch", sort=True).mean()
    means[y] = np.exp(means[y])
    return means.reset_index()


def heldout_curves(cells, epochs, baselines, path: Path) -> Path | None:
    frame = _curve_frame(cells, epochs)
    if frame.empty or "causal_ppl" not in frame:
        return None
    frame = frame[np.isfinite(pd.to_numeric(frame["causal_ppl"], errors="coerce"))]
    if frame.empty:
        return None
    cell_types = [c for c in CELL_MARKERS if c in set(frame["cell"])] or sorted(frame["cell"].unique())
    keys, combos = variants(ok_cells(cells))
    shown = combos[:MAX_VARIANTS]
    # One row per swept combination (against epochs), or the epochs and training-time rows when there is none.
    rows = [(combo, "epoch") for combo in shown] if keys else [((), "epoch"), ((), "elapsed")]
    titles = {(cell, combo, x): panel_title(cell, variant_label(keys, combo, shown) if keys else
                                            ("against epochs" if x == "epoch" else "against training time"))
              for cell in cell_types for combo, x in rows}
    lines = max(title.count("\n") + 1 for title in titles.values())
    fig = Figure(figsize=(4.2 * len(cell_types) + 0.5, (3.7 + (lines - 1) * TITLE_LINE) * len(rows)))
    axes = fig.subplots(len(rows), len(cell_types), squeeze=False, sharey=True)
    if len(combos) > len(shown):
        fig.suptitle(f"the first {len(shown)} of {len(combos)} combinations of {', '.join(keys)}", fontsize=9)
    for j, cell in enumerate(cell_types):
        for i, (combo, x) in enumerate(rows):
            data = in_variant(frame[frame["cell"] == cell], keys, combo)
            ax = axes[i, j]
            if data.empty:
                ax.set_visible(False)
                continue
            for (direction, layers), group in data.groupby(["direction", "layers"]):
                color, style = DIRECTION_COLORS.get(direction, "0.3"), depth_style(layers)
                for _, seed in group.groupby("cell_id"):
                    ax.plot(seed[x], seed["causal_ppl"], color=color, ls=style, lw=0.6, alpha=0.3)
                mean = _epoch_means(group, x, "causal_ppl")
                ax.plot(mean[x], mean["causal_ppl"], color=color, ls=style, lw=1.8)
            _baselines(ax, panel_baselines(baselines, cells, data["cell_id"]), label=j == len(cell_types) - 1)
            _log_axis(ax)
            if x == "elapsed" and data["elapsed"].max() > 20 * max(data["elapsed"].min(), 1e-9):
                _log_axis(ax, "x")
            ax.set_title(titles[(cell, combo, x)], fontsize=10, y=TITLE_Y)
            ax.set_xlabel("epoch" if x == "epoch" else "training seconds")
            ax.set_ylabel("held-out causal perplexity" if j == 0 else "")
    handles = _style_handles([d for d in DIRECTION_COLORS if d in set(frame["direction"])],
                             sorted(frame["layers"].unique()), [])
    _panel_grid(fig, len(rows), len(cell_types), handles, x_labels_each_row=True, suptitle=len(combos) > len(shown),
                title_lines=lines)
    return _save(fig, path)


def train_vs_heldout(cells, epochs, baselines, path: Path) -> Path | None:
    frame = _curve_frame(cells, epochs)
    if frame.empty or "train_ppl" not in frame:
        return None
    cell_types = [c for c in CELL_MARKERS if c in set(frame["cell"])] or sorted(frame["cell"].unique())
    directions = [d for d in DIRECTION_COLORS if d in set(frame["direction"])]
    keys, combos = variants(ok_cells(cells))
    shown = combos[:MAX_VARIANTS]
    # A row per direction and combination that has cells: a suite's arms need not have both directions.
    rows = [(d, combo) for combo in shown for d in directions
            if not in_variant(frame[frame["direction"] == d], keys, combo).empty]
    titles = {(cell, d, combo): panel_title(f"{cell}, {d}", variant_label(keys, combo, shown) if keys else "")
              for cell in cell_types for d, combo in rows}
    lines = max((title.count("\n") + 1 for title in titles.values()), default=1)
    fig = Figure(figsize=(4.2 * len(cell_types) + 0.5, (3.4 + (lines - 1) * TITLE_LINE) * len(rows) + 0.8))
    axes = fig.subplots(len(rows), len(cell_types), squeeze=False, sharey=True, sharex=True)
    if len(combos) > MAX_VARIANTS:
        fig.suptitle(f"the first {MAX_VARIANTS} of {len(combos)} combinations of {', '.join(keys)}", fontsize=9)
    measures = {"training": "train_ppl", "held-out causal": "causal_ppl"}
    for i, (direction, combo) in enumerate(rows):
        for j, cell in enumerate(cell_types):
            ax = axes[i, j]
            data = in_variant(frame[(frame["cell"] == cell) & (frame["direction"] == direction)], keys, combo)
            if data.empty:
                ax.set_visible(False)
                continue
            for layers, group in data.groupby("layers"):
                for name, column in measures.items():
                    if column not in group:
                        continue
                    mean = _epoch_means(group, "epoch", column)
                    ax.plot(mean["epoch"], mean[column], color=MEASURE_COLORS[name], ls=depth_style(layers), lw=1.5)
            _baselines(ax, panel_baselines(baselines, cells, data["cell_id"]), label=j == len(cell_types) - 1)
            _log_axis(ax)
            ax.set_title(titles[(cell, direction, combo)], fontsize=10, y=TITLE_Y,
                         color=DIRECTION_COLORS.get(direction, "black"))
            ax.set_xlabel("epoch" if i == len(rows) - 1 else "")
            ax.set_ylabel("perplexity" if j == 0 else "")
    # Only the measures drawn: cells read on held-out text once (at the selected epoch) have no curve of it.
    drawn = [n for n, column in measures.items()
             if column in frame and np.isfinite(pd.to_numeric(frame[column], errors="coerce")).any()]
    extra = [Line2D([], [], color=MEASURE_COLORS[n], lw=2, label=n) for n in drawn]
    handles = _style_handles([], sorted(frame["layers"].unique()), [], extra)
    _panel_grid(fig, len(rows), len(cell_types), handles, x_labels_each_row=False, suptitle=len(combos) > MAX_VARIANTS,
                title_lines=lines)
    return _save(fig, path)


def slowdown_table(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Geometric-mean bi/uni seconds per epoch and FLOPs per epoch, rows (cell type, device, other keys,
    machine) by depth columns."""
    records = []
    pairs = list(direction_pairs(ok_cells(cells), timing=True))
    # The keys beyond the grid whose value differs among the rows (a suite's arms move several keys together).
    differ = {k for k in {k for context, _, _ in pairs for k in context}
              if len({str(context.get(k)) for context, _, _ in pairs}) > 1}
    for context, uni, bi in pairs:
        grid = [str(v) for k, v in context.items() if k in GRID_AXES and k != "layers"]
        others = [f"{k}={_plain(str(v))}" for k, v in context.items()
                  if k not in GRID_AXES and k != MACHINE and k in differ]
        label = textwrap.fill(", ".join(grid + others + ([str(context[MACHINE])] if MACHINE in context else [])), 40)

        def ratio(column):
            if column not in uni:
                return math.nan
            a = _geomean(pd.to_numeric(uni[column], errors="coerce"))
            b = _geomean(pd.to_numeric(bi[column], errors="coerce"))
            return b / a if a > 0 else math.nan

        records.append({"row": label, "layers": context.get("layers"), "time": ratio("sec_per_epoch"),
                        "flops": ratio("flops_per_epoch")})
    if not records:
        return pd.DataFrame(), pd.DataFrame()
    frame = pd.DataFrame(records)
    time = frame.pivot_table(index="row", columns="layers", values="time", aggfunc="first").dropna(how="all")
    flops = frame.pivot_table(index="row", columns="layers", values="flops", aggfunc="first")
    return time, flops.reindex(index=time.index, columns=time.columns)


def slowdown_heatmap(cells: pd.DataFrame, path: Path) -> Path | None:
    time, flops = slowdown_table(cells)
    if time.empty or not np.isfinite(time.to_numpy(dtype=float)).any():
        return None
    values = time.to_numpy(dtype=float)
    lines = max(str(label).count("\n") + 1 for label in time.index)
    fig = Figure(figsize=(1.3 * time.shape[1] + 4.0 + (1.2 if lines > 1 else 0.0),
                          (0.7 + 0.15 * (lines - 1)) * time.shape[0] + 1.6), layout="constrained")
    ax = fig.subplots()
    # Anchored at 1 (no slowdown) so that colours compare across runs; log scale as for every ratio.
    high = max(2.0, float(np.nanmax(values)))
    from matplotlib.colors import LogNorm

    image = ax.imshow(values, cmap="Oranges", norm=LogNorm(vmin=1.0, vmax=high), aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if math.isfinite(values[i, j]):
                f = flops.to_numpy(dtype=float)[i, j]
                text = f"{values[i, j]:.2f}" + (f"\n(FLOPs x{f:.2f})" if math.isfinite(f) else "")
                dark = values[i, j] > math.sqrt(high)
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(time.shape[1]), [str(int(c)) for c in time.columns])
    ax.set_yticks(range(time.shape[0]), list(time.index))
    ax.set_xlabel("layers")
    fig.colorbar(image, ax=ax, label="bi / uni seconds per epoch")
    ax.set_title("Bidirectional slowdown", y=TITLE_Y)
    return _save(fig, path)


def seconds_per_epoch(cells: pd.DataFrame, path: Path) -> Path | None:
    from harness.analysis.stats import log_interval

    ok = ok_cells(cells)
    if ok.empty or "sec_per_epoch" not in ok:
        return None
    ok = ok[np.isfinite(ok["sec_per_epoch"]) & (ok["sec_per_epoch"] > 0)]
    if ok.empty:
        return None
    devices = sorted(ok["device"].unique()) if "device" in ok else ["cpu"]
    fig = Figure(figsize=(6.5 * len(devices), 4.2), layout="constrained")
    axes = fig.subplots(1, len(devices), squeeze=False)
    cell_types = [c for c in CELL_MARKERS if c in set(ok["cell"])]
    directions = [d for d in DIRECTION_COLORS if d in set(ok["direction"])]
    slots = [(c, d) for c in cell_types for d in directions]
    width = 0.8 / max(1, len(slots))
    for ax, device in zip(axes[0], devices):
        data = ok[ok["device"] == device] if "device" in ok else ok
        for k, (cell, direction) in enumerate(slots):
            group = data[(data["cell"] == cell) & (data["direction"] == direction)]
            for layers, seeds in group.groupby("layers"):
                x = float(layers) - 0.4 + width * (k + 0.5)
                values = seeds["sec_per_epoch"].to_numpy(float)
                ax.scatter(np.full(len(values), x), values, s=9, alpha=0.45, color=DIRECTION_COLORS[direction],
                           marker=CELL_MARKERS.get(cell, "o"), linewidths=0)
                mean, low, high = log_interval(values)
                if math.isfinite(low):
                    ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], color=DIRECTION_COLORS[direction],
                                marker=CELL_MARKERS.get(cell, "o"), ms=5, capsize=2, lw=1)
                else:
                    ax.plot([x], [mean], color=DIRECTION_COLORS[direction], marker=CELL_MARKERS.get(cell, "o"), ms=5)
        _log_axis(ax)
        ax.set_xticks(sorted(data["layers"].unique()))
        ax.set_xlabel("layers")
        ax.set_ylabel("seconds per epoch")
        ax.set_title(device, y=TITLE_Y)
    _style_legend(fig, directions, [], cell_types)
    return _save(fig, path)


def forest_plot(result: ClaimResult, path: Path) -> Path | None:
    """Each configuration's effect with its interval, the pooled effects, and the claim's no-effect and
    threshold lines, on a log axis."""
    return _save(forest_figure(result), path, dpi=FOREST_DPI)


def forest_figure(result: ClaimResult) -> Figure | None:
    """The forest plot of ``result`` (``forest_plot``), to be saved at FOREST_DPI; None without a finite effect.
    The figure is as wide as its longest label needs, so that no label is cut off."""
    rows = result.deciding
    if rows.empty or not np.isfinite(rows["ratio"]).any():
        return None
    rows = rows[np.isfinite(rows["ratio"])]
    keys = [k for k in rows.columns if k in GRID_AXES or k == MACHINE or k in ("hidden", "precision", "threads")]
    pooled = result.pooled_table
    n = len(rows) + len(pooled) + 1
    fig = Figure(figsize=(FOREST_WIDTH, 0.2 * n + 1.4))
    ax = fig.subplots()
    labels = []
    y = n - 1
    for _, row in rows.iterrows():
        label = " ".join(str(row[k]) for k in keys if k not in ("direction",) or result.name == "depth_helps")
        labels.append((y, f"{label} {row['comparison']}" if result.name == "depth_helps" else label))
        color = DIRECTION_COLORS["bi"] if result.name != "depth_helps" else DIRECTION_COLORS.get(
            str(row.get("direction", "uni")), "0.3")
        counted = bool(row["counted"])
        marker = CELL_MARKERS.get(str(row.get("cell")), "o")
        if math.isfinite(row["ci_low"]):
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color if counted else "0.7", lw=1.2)
        ax.plot([row["ratio"]], [y], marker=marker, ls="none", ms=5, color=color if counted else "white",
                markeredgecolor=color if counted else "0.6")
        y -= 1
    y -= 1
    for _, row in pooled.iterrows():
        if math.isfinite(row["ratio"]):
            label = "pooled, all" if row["cells"] == "all" else f"pooled, {row['cells']}"
            labels.append((y, label))
            if math.isfinite(row["ci_low"]):
                ax.plot([row["ci_low"], row["ci_high"]], [y, y], color="black", lw=2.2 if row["cells"] == "all" else 1.4)
            ax.plot([row["ratio"]], [y], marker="D", ms=7 if row["cells"] == "all" else 5, color="black")
        y -= 1
    ax.axvline(result.no_effect, color="0.5", lw=1, ls="-", label="no effect (x1)")
    if result.threshold != result.no_effect:
        ax.axvline(result.threshold, color="#d55e00", lw=1.2, ls="--", label=f"threshold (x{result.threshold:.3g})")
    _log_axis(ax, "x")
    shown = [v for v in [*rows["ci_low"], *rows["ci_high"], *rows["ratio"], *pooled["ci_low"], *pooled["ci_high"],
                         result.no_effect, result.threshold] if math.isfinite(v) and v > 0]
    ax.set_xlim(min(shown) / 1.15, max(shown) * 1.15)
    ax.set_yticks([p for p, _ in labels], [t for _, t in labels], fontsize=FOREST_POINTS)
    # The font's advance widths: the outlines' extents (TextPath) measure the same within 2 points, at 40x the cost.
    font = FontProperties(size=FOREST_POINTS)
    widest = max(text_to_path.get_text_width_height_descent(t, font, ismath=False)[0] for _, t in labels) / 72
    width, height = max(FOREST_WIDTH, FOREST_PLOT_WIDTH + FOREST_LABEL_SCALE * widest), fig.get_size_inches()[1]
    fig.set_size_inches(width, height)
    fig.subplots_adjust(left=(FOREST_LABEL_SCALE * widest + FOREST_LABEL_PAD) / width, right=1 - FOREST_RIGHT / width,
                        top=1 - FOREST_TOP / height, bottom=FOREST_BOTTOM / height)
    ax.set_ylim(y + 0.5, n - 0.5)
    ax.set_xlabel(measure_labels(pooled)[0] + " (ratio, log scale)" if not pooled.empty else "ratio")
    ax.grid(axis="x", color="0.9")
    fig.legend(loc="lower center", ncol=2, fontsize=FOREST_POINTS, frameon=False, borderaxespad=0.3)
    ax.set_title(result.title, fontsize=10, y=TITLE_Y)
    return fig


def make_figures(cells: pd.DataFrame, epochs: pd.DataFrame, baselines: dict | None, folder: Path
                 ) -> dict[str, Path | None]:
    """Draw the run's figures into ``folder`` here; name -> path, or None where the run has no data for it."""
    from harness.report.captions import figure_tasks
    from harness.report.drawing import resolve

    return {name: resolve(target)(*args) for name, target, args in figure_tasks(cells, epochs, baselines, folder)}


def _own_text_ngrams(ax, profile: pd.DataFrame, conditions: list[str], baselines: dict | None) -> None:
    """A condition whose cells trained on another text (the whole book) has its own best n-gram model: a
    line in the condition's colour where it differs from the run's."""
    if "ngram" not in profile:
        return
    main = best_ngram(baselines)
    for i, condition in enumerate(conditions):
        values = profile.loc[profile["condition"] == condition, "ngram"].dropna()
        if values.empty or (main is not None and math.isclose(values.median(), main[1], rel_tol=1e-3)):
            continue
        value = float(values.median())
        color = CONDITION_COLORS[i % len(CONDITION_COLORS)]
        ax.axhline(value, color=color, lw=0.9, ls=(0, (1, 1)), zorder=1)
        ax.annotate(f"best n-gram of its text {value:.3g}", (0.0, value), xycoords=("axes fraction", "data"),
                    xytext=(2, 2), textcoords="offset points", ha="left", fontsize=7, color=color)


def condition_depth(profile: pd.DataFrame, baselines: dict | None, path: Path) -> Path | None:
    """``harness.analysis.conditions.depth_profile``'s table: perplexity against depth per condition and cell type."""
    if profile is None or profile.empty:
        return None
    conditions = list(dict.fromkeys(profile["condition"]))
    cells = [c for c in CELL_MARKERS if c in set(profile["cell"])]
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.add_subplot()
    # Side by side within a depth, so that equal values of two lines stay visible.
    lines = len(conditions) * len(cells)
    offsets = np.linspace(-0.2, 0.2, lines) if lines > 1 else [0.0]
    for i, condition in enumerate(conditions):
        color = CONDITION_COLORS[i % len(CONDITION_COLORS)]
        for j, cell in enumerate(cells):
            rows = profile[(profile["condition"] == condition) & (profile["cell"] == cell)].sort_values("layers")
            if rows.empty:
                continue
            x = rows["layers"].to_numpy(float) + offsets[i * len(cells) + j]
            y = rows["ppl"].to_numpy(float)
            ax.errorbar(x, y, yerr=[y - rows["low"].to_numpy(float), rows["high"].to_numpy(float) - y],
                        color=color, ls=CELL_STYLES.get(cell, "-"), marker=CELL_MARKERS.get(cell, "o"), ms=4,
                        lw=1.2, elinewidth=0.7, capsize=2)
    _baselines(ax, baselines, label=True)
    _own_text_ngrams(ax, profile, conditions, baselines)
    _log_axis(ax)
    depths = sorted(set(profile["layers"]))
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xlabel("layers")
    selected = set(profile["metric"]) == {"selected_causal_ppl"}
    ax.set_ylabel("held-out causal perplexity, " + ("selected epoch" if selected else "best evaluation"))
    handles = [Line2D([], [], color=CONDITION_COLORS[i % len(CONDITION_COLORS)], lw=2, label=c)
               for i, c in enumerate(conditions)]
    handles += [Line2D([], [], color="0.3", ls=CELL_STYLES.get(c, "-"), marker=CELL_MARKERS.get(c, "o"), label=c)
                for c in cells]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    return _save(fig, path)
