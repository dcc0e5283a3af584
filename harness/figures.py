"""The report's figures: seaborn on matplotlib Figures (no pyplot state), one palette throughout.

Every function takes tidy tables, draws one PNG and returns its path, or None when the run holds no
data for it (the report then says so instead of showing an empty plot). Seeds are drawn as individual
points or lines; means carry the same t-intervals as the tables.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import ticker
from matplotlib.figure import Figure

from .claims import (GRID_AXES, MACHINE, by_seed, compare, direction_pairs, extra_keys, ok_cells, t_interval,
                     training_curves, with_machine)
from .config import GRID_KEYS

PALETTE = sns.color_palette("colorblind", 10)
DIRECTION_COLORS = {"uni": PALETTE[0], "bi": PALETTE[1]}
METRIC_COLORS = {"training": PALETTE[2], "held-out teacher-forced": PALETTE[4], "held-out causal": PALETTE[3]}
HEATMAP_CMAP = "flare"
STYLE = "whitegrid"
DPI = 110
MIB = 1024 * 1024

FIGURES = {
    "learning_curves": "Training perplexity by epoch, one line per seed, coloured by depth.",
    "final_perplexity": "Final training, held-out teacher-forced and held-out causal perplexity against depth "
                        "(small dots: seeds; diamonds: mean with 95% t-interval).",
    "seconds_per_epoch": "Median seconds per training epoch against depth, by direction and device.",
    "slowdown_heatmap": "Bidirectional slowdown: geometric-mean bi/uni ratio of seconds per epoch (paired by seed).",
    "peak_memory": "Peak memory during training against depth (CUDA: allocated; CPU: resident-set increase).",
    "flops_utilization": "FLOP utilization against depth, by direction and device: achieved training FLOP/s over "
                         "the device's calibrated float32 matrix-product rate (run.json calibration); bf16 cells "
                         "can exceed 100%.",
    "leak": "The leak: held-out teacher-forced against causal perplexity of each cell; on the diagonal both agree.",
    "pareto": "Quality against cost: held-out causal perplexity against total training time per configuration "
              "(mean over seeds); the line joins the Pareto front.",
}


def layer_colors(depths) -> dict:
    """A depth keeps its colour in every figure."""
    return {d: PALETTE[(int(d) - 1) % len(PALETTE)] for d in depths}


def _grid(rows: int, cols: int, width: float = 4.2, height: float = 3.2, **kwargs):
    fig = Figure(figsize=(max(5.0, width * cols), height * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    return fig, axes


def _save(fig: Figure | None, path: Path) -> Path | None:
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


class _PlainLogFormatter(ticker.LogFormatter):
    """LogFormatter's choice of which ticks to label, written as plain numbers (0.2, 6, 10)."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _log_axis(axis) -> None:
    """Log scale labelled with plain numbers (0.2, 6, 10) rather than powers (2e-01, 6 x 10^0)."""
    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    axis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _t_errorbar(values):
    _, low, high = t_interval(list(values))
    mean = float(np.mean(values))
    return (mean, mean) if not (math.isfinite(low) and math.isfinite(high)) else (low, high)


def _finite(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    values = pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(dtype=float)
    out = frame.assign(**{column: values})
    return out[np.isfinite(out[column])]


def config_label(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per row, the values of configuration keys beyond the grid (``precision=bf16, hidden=64``): what tells
    apart cells that share cell type, depth, direction, device and seed."""
    if not keys or frame.empty:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[keys].apply(lambda row: ", ".join(f"{k}={_plain(v)}" for k, v in row.items()), axis=1)


def _plain(value) -> str:
    """1.0 as 1, so that a label reads like the suite's value."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return str(value)


def _join(*parts) -> str:
    return ", ".join(str(p) for p in parts if p is not None and str(p) != "")


def _row_order(labels) -> list[str]:
    """Panel rows: unidirectional first, then as sorted."""
    return sorted(set(labels), key=lambda p: (not str(p).startswith("uni"), str(p)))


def _seeds_and_means(ax, data, x, y, hue, order, hue_order, palette):
    """Per-seed dots and the mean with its t-interval, dodged by hue."""
    sns.stripplot(data=data, x=x, y=y, hue=hue, order=order, hue_order=hue_order, palette=palette, dodge=True,
                  alpha=0.45, size=3.5, jitter=0.12, legend=False, ax=ax)
    sns.pointplot(data=data, x=x, y=y, hue=hue, order=order, hue_order=hue_order, palette=palette,
                  dodge=0.8 - 0.8 / max(1, len(hue_order)), errorbar=_t_errorbar, markers="D", capsize=0.08,
                  linestyle="none", ax=ax)


def _legend_once(axes, title: str) -> None:
    """Keep one legend (top-right panel) for a whole figure."""
    flat = list(axes.flat)
    handles, labels = [], []
    for ax in flat:
        if ax.get_legend() is not None:
            if not handles:
                handles, labels = ax.get_legend_handles_labels()
            ax.get_legend().remove()
    if handles:
        seen = {}
        for h, lbl in zip(handles, labels):
            seen.setdefault(lbl, h)
        flat[min(len(flat) - 1, axes.shape[1] - 1)].legend(seen.values(), seen.keys(), title=title, fontsize=8,
                                                           title_fontsize=8)


def learning_curves(cells: pd.DataFrame, epochs: pd.DataFrame, path: Path) -> Path | None:
    return _save(learning_curves_figure(cells, epochs), path)


def learning_curves_figure(cells: pd.DataFrame, epochs: pd.DataFrame) -> Figure | None:
    curves = training_curves(epochs)
    if not curves:
        return None
    frame = pd.concat(curves.values(), ignore_index=True)
    frame = _finite(frame, "train_ppl")
    if frame.empty or not {"cell", "direction", "layers", "seed"} <= set(frame.columns):
        return None
    # Other matrix axes (precision, hidden ...) come from cells.csv, which has every key of every cell.
    extras = extra_keys(cells) if "cell_id" in cells else []
    labels = pd.Series(config_label(cells, extras).to_numpy(), index=cells["cell_id"]) if extras else None
    config = ", ".join(extras) or "config"  # the legend's heading for the line styles
    frame[config] = frame["cell_id"].map(labels).fillna("") if labels is not None else ""
    frame["panel"] = frame["direction"].astype(str)
    if "device" in frame and frame["device"].nunique() > 1:
        frame["panel"] = frame["direction"].astype(str) + ", " + frame["device"].astype(str)
    cell_types = sorted(frame["cell"].unique())
    panels = _row_order(frame["panel"])
    depths = sorted(frame["layers"].unique())
    configs = sorted(frame[config].unique())
    style = {"style": config, "style_order": configs} if len(configs) > 1 else {}
    with sns.axes_style(STYLE):
        fig, axes = _grid(len(cell_types), len(panels), sharex=True, sharey=True)
        for i, cell in enumerate(cell_types):
            for j, panel in enumerate(panels):
                ax = axes[i, j]
                data = frame[(frame["cell"] == cell) & (frame["panel"] == panel)]
                if not data.empty:
                    # One line per cell (cell_id): seeds of different configurations never join into one.
                    sns.lineplot(data=data, x="epoch", y="train_ppl", hue="layers", hue_order=depths,
                                 palette=layer_colors(depths), units="cell_id", estimator=None, lw=1.1,
                                 alpha=0.85, ax=ax, **style)
                _log_axis(ax.yaxis)
                ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
                ax.set_title(f"{cell}, {panel}", fontsize=10)
                ax.set_xlabel("epoch" if i == len(cell_types) - 1 else "")
                ax.set_ylabel("training perplexity (log scale)" if j == 0 else "")
        _legend_once(axes, "" if style else "layers")
        fig.suptitle("Learning curves" + (" (line style: " + ", ".join(extras) + ")" if style else ""))
        return fig


def _final_long(ok: pd.DataFrame) -> pd.DataFrame:
    names = {"train_ppl": "training", "val_ppl": "held-out teacher-forced", "causal_ppl": "held-out causal"}
    present = [c for c in names if c in ok]
    if not present:
        return pd.DataFrame()
    ok = ok.assign(config=config_label(ok, extra_keys(ok)))
    keys = [k for k in ("cell_id", *GRID_KEYS, "config") if k in ok]
    long = ok.melt(id_vars=keys, value_vars=present, var_name="metric", value_name="perplexity")
    long["metric"] = long["metric"].map(names)
    return _finite(long, "perplexity")


def final_perplexity(cells: pd.DataFrame, path: Path) -> Path | None:
    return _save(final_perplexity_figure(cells), path)


def final_perplexity_figure(cells: pd.DataFrame) -> Figure | None:
    long = _final_long(ok_cells(cells))
    if long.empty:
        return None
    several_devices = long["device"].nunique() > 1
    # A panel row per direction, device and other configuration: seeds of fp32 and bf16 are never averaged.
    long["row"] = [_join(d, v if several_devices else None, c)
                   for d, v, c in zip(long["direction"], long["device"], long["config"])]
    rows = _row_order(long["row"])
    cell_types = sorted(long["cell"].unique())
    depths = sorted(long["layers"].unique())
    hue_order = [m for m in METRIC_COLORS if m in set(long["metric"])]
    with sns.axes_style(STYLE):
        fig, axes = _grid(len(rows), len(cell_types), sharey=True)
        for i, row in enumerate(rows):
            for j, cell in enumerate(cell_types):
                ax = axes[i, j]
                data = long[(long["row"] == row) & (long["cell"] == cell)]
                if not data.empty:
                    _seeds_and_means(ax, data, "layers", "perplexity", "metric", depths, hue_order, METRIC_COLORS)
                _log_axis(ax.yaxis)
                ax.set_title(f"{cell}, {row}", fontsize=10)
                ax.set_xlabel("layers")
                ax.set_ylabel("perplexity (log scale)" if j == 0 else "")
        _legend_once(axes, "perplexity")
        fig.suptitle("Final perplexity against depth")
        return fig


def cost_against_depth(cells: pd.DataFrame, column: str, scale: float, ylabel: str, title: str) -> Figure | None:
    """Per-seed values and means against depth, coloured by direction; a panel per cell type (columns) and
    per device, other configuration and machine (rows). Rows of one device share their y scale, so that
    e.g. fp32 and bf16 read side by side; machines are never pooled."""
    ok = _finite(ok_cells(cells), column) if column in cells else pd.DataFrame()
    if ok.empty:
        return None
    extras = extra_keys(ok)
    ok, machine = with_machine(ok)
    ok = ok.assign(value=ok[column] / scale, config=config_label(ok, extras))
    machines = ok[MACHINE] if machine else pd.Series("", index=ok.index)
    ok["row"] = [_join(d, c, m) for d, c, m in zip(ok["device"], ok["config"], machines)]
    rows = sorted(ok["row"].unique())
    device_of = dict(zip(ok["row"], ok["device"]))
    cell_types = sorted(ok["cell"].unique())
    depths = sorted(ok["layers"].unique())
    directions = [d for d in DIRECTION_COLORS if d in set(ok["direction"])]
    with sns.axes_style(STYLE):
        fig, axes = _grid(len(rows), len(cell_types))
        first_of_device = {}
        for i, row in enumerate(rows):
            for j, cell in enumerate(cell_types):
                ax = axes[i, j]
                anchor = first_of_device.setdefault(device_of[row], ax)
                if ax is not anchor:
                    ax.sharey(anchor)
                data = ok[(ok["row"] == row) & (ok["cell"] == cell)]
                if not data.empty:
                    _seeds_and_means(ax, data, "layers", "value", "direction", depths, directions, DIRECTION_COLORS)
                ax.set_title(f"{cell}, {row}", fontsize=10)
                ax.set_xlabel("layers")
                ax.set_ylabel(ylabel if j == 0 else "")
        for ax in first_of_device.values():
            ax.set_ylim(bottom=0)
        _legend_once(axes, "direction")
        fig.suptitle(title)
        return fig


def seconds_per_epoch(cells: pd.DataFrame, path: Path) -> Path | None:
    return _save(cost_against_depth(cells, "sec_per_epoch", 1.0, "seconds per epoch (s)", "Time per epoch"), path)


def peak_memory(cells: pd.DataFrame, path: Path) -> Path | None:
    return _save(cost_against_depth(cells, "peak_mem_bytes", MIB, "peak memory (MiB)", "Peak memory during training"),
                 path)


def flops_utilization(cells: pd.DataFrame, path: Path) -> Path | None:
    return _save(cost_against_depth(cells, "flops_utilization", 0.01, "FLOP utilization (% of matmul rate)",
                                    "FLOP utilization: training against the calibrated matrix product"), path)


def slowdown_table(cells: pd.DataFrame, metric: str = "sec_per_epoch") -> pd.DataFrame:
    """Geometric-mean bi/uni ratio per (cell type, device, other keys, machine) row and depth column."""
    records = []
    for context, uni, bi in direction_pairs(ok_cells(cells), timing=True):
        result = compare(by_seed(uni, metric), by_seed(bi, metric), "ratio")
        grid = [v for k, v in context.items() if k in GRID_AXES and k != "layers"]
        others = [f"{k}={_plain(v)}" for k, v in context.items() if k not in GRID_AXES and k != MACHINE]
        label = _join(*grid, *others, context.get(MACHINE))
        records.append({"row": label, "layers": context.get("layers"), "ratio": result.effect})
    if not records:
        return pd.DataFrame()
    table = pd.DataFrame(records).pivot_table(index="row", columns="layers", values="ratio", aggfunc="first")
    return table.dropna(how="all")


def slowdown_heatmap(cells: pd.DataFrame, path: Path) -> Path | None:
    table = slowdown_table(cells)
    if table.empty or not np.isfinite(table.to_numpy(dtype=float)).any():
        return None
    with sns.axes_style("white"):
        fig = Figure(figsize=(1.2 * table.shape[1] + 4.5, 0.55 * table.shape[0] + 1.8), layout="constrained")
        ax = fig.subplots()
        values = table.to_numpy(dtype=float)
        # Anchor the scale at 1 (no slowdown) so that colours compare across runs.
        low = min(1.0, float(np.nanmin(values)))
        high = max(low + 1.0, float(np.nanmax(values)))
        sns.heatmap(table.astype(float), annot=True, fmt=".2f", cmap=HEATMAP_CMAP, vmin=low, vmax=high,
                    linewidths=0.5, ax=ax, cbar_kws={"label": "bi / uni time per epoch (ratio)"})
        ax.tick_params(axis="y", labelrotation=0)
        ax.set_xlabel("layers")
        ax.set_ylabel("")
        ax.set_title("Bidirectional slowdown by cell type, device and depth")
        return _save(fig, path)


def leak(cells: pd.DataFrame, path: Path) -> Path | None:
    ok = _finite(_finite(ok_cells(cells), "val_ppl"), "causal_ppl") if {"val_ppl", "causal_ppl"} <= set(cells) \
        else pd.DataFrame()
    if ok.empty:
        return None
    directions = [d for d in DIRECTION_COLORS if d in set(ok["direction"])]
    with sns.axes_style(STYLE):
        fig = Figure(figsize=(6.4, 5.0), layout="constrained")
        ax = fig.subplots()
        sns.scatterplot(data=ok, x="val_ppl", y="causal_ppl", hue="direction", hue_order=directions,
                        palette=DIRECTION_COLORS, style="cell", s=45, alpha=0.85, ax=ax)
        _log_axis(ax.xaxis)
        _log_axis(ax.yaxis)
        low = min(ok["val_ppl"].min(), ok["causal_ppl"].min()) * 0.9
        high = max(ok["val_ppl"].max(), ok["causal_ppl"].max()) * 1.1
        ax.plot([low, high], [low, high], color="0.5", lw=1, ls="--", label="causal = teacher-forced")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("held-out teacher-forced perplexity (log scale)")
        ax.set_ylabel("held-out causal perplexity (log scale)")
        ax.set_title("The leak: bidirectional cells see the answer when teacher-forced")
        ax.legend(fontsize=8)
        return _save(fig, path)


def training_seconds(cells: pd.DataFrame, epochs: pd.DataFrame) -> pd.Series:
    """Training seconds per cell_id: the sum of its epochs' times, else its process time."""
    curves = training_curves(epochs)
    values = {}
    for _, row in cells.iterrows():
        curve = curves.get(row.get("cell_id"))
        if curve is not None and len(curve):
            values[row["cell_id"]] = float(curve["elapsed"].iloc[-1])
        else:
            values[row["cell_id"]] = float(pd.to_numeric(pd.Series([row.get("total_sec")]), errors="coerce").iloc[0])
    return pd.Series(values, dtype=float)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows no other row beats on both ``x`` and ``y`` (lower is better), ordered by ``x``."""
    ordered = points.sort_values([x, y])
    front, best = [], math.inf
    for index, row in ordered.iterrows():
        if row[y] < best:
            front.append(index)
            best = row[y]
    return ordered.loc[front]


def pareto_points(cells: pd.DataFrame, epochs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Finished cells with their total training seconds, and their means per configuration (grid axes and
    every other key that varies, so fp32 and bf16 stay apart; and machine, so seconds are not pooled
    across machines) with a ``label``. Empty frames when nothing has both time and causal perplexity."""
    ok = ok_cells(cells)
    if ok.empty or "causal_ppl" not in ok:
        return pd.DataFrame(), pd.DataFrame()
    ok = ok.assign(train_sec=ok["cell_id"].map(training_seconds(ok, epochs)))
    ok = _finite(_finite(ok, "train_sec"), "causal_ppl")
    if ok.empty:
        return ok, pd.DataFrame()
    extras = extra_keys(ok)
    ok, machine = with_machine(ok)
    keys = [k for k in GRID_AXES if k in ok] + extras + machine
    configs = ok.groupby(keys, as_index=False, dropna=False)[["train_sec", "causal_ppl"]].mean()
    several_devices = ok["device"].nunique() > 1

    def label(row) -> str:
        text = f"{row['cell']}-l{int(row['layers'])}-{row['direction']}"
        text += f"-{row['device']}" if several_devices else ""
        text += "".join(f" {k}={_plain(row[k])}" for k in extras)
        return text + (f" on {row[MACHINE]}" if machine else "")

    configs["label"] = [label(row) for _, row in configs.iterrows()]
    # The marker tells cell types and other configurations apart (lstm, precision=bf16).
    configs["marker"] = [_join(c, x) for c, x in zip(configs["cell"], config_label(configs, extras))]
    return ok, configs


def pareto(cells: pd.DataFrame, epochs: pd.DataFrame, path: Path) -> Path | None:
    ok, configs = pareto_points(cells, epochs)
    if configs.empty:
        return None
    front = pareto_front(configs, "train_sec", "causal_ppl")
    directions = [d for d in DIRECTION_COLORS if d in set(ok["direction"])]
    with sns.axes_style(STYLE):
        fig = Figure(figsize=(7.2, 5.0), layout="constrained")
        ax = fig.subplots()
        sns.scatterplot(data=ok, x="train_sec", y="causal_ppl", hue="direction", hue_order=directions,
                        palette=DIRECTION_COLORS, alpha=0.3, s=18, legend=False, ax=ax)
        heading = ", ".join(["cell", *extra_keys(ok)])  # the legend's heading for the markers
        points = configs.drop(columns="cell").rename(columns={"marker": heading})
        sns.scatterplot(data=points, x="train_sec", y="causal_ppl", hue="direction", hue_order=directions,
                        palette=DIRECTION_COLORS, style=heading, style_order=sorted(points[heading].unique()),
                        s=70, ax=ax)
        ax.plot(front["train_sec"], front["causal_ppl"], color="0.25", lw=1.2, drawstyle="steps-post",
                label="Pareto front")
        for _, row in front.iterrows():
            ax.annotate(row["label"], (row["train_sec"], row["causal_ppl"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        if ok["train_sec"].max() > 10 * ok["train_sec"].min():
            _log_axis(ax.xaxis)
        ax.set_xlabel("total training time (s)")
        ax.set_ylabel("held-out causal perplexity")
        ax.set_title("Quality against cost")
        ax.legend(fontsize=8)
        return _save(fig, path)


def make_figures(cells: pd.DataFrame, epochs: pd.DataFrame, folder: Path) -> dict[str, Path | None]:
    """Draw every figure into ``folder``; name -> path, or None where the run has no data for it."""
    folder = Path(folder)
    png = {name: folder / f"{name}.png" for name in FIGURES}
    return {
        "learning_curves": learning_curves(cells, epochs, png["learning_curves"]),
        "final_perplexity": final_perplexity(cells, png["final_perplexity"]),
        "seconds_per_epoch": seconds_per_epoch(cells, png["seconds_per_epoch"]),
        "slowdown_heatmap": slowdown_heatmap(cells, png["slowdown_heatmap"]),
        "peak_memory": peak_memory(cells, png["peak_memory"]),
        "flops_utilization": flops_utilization(cells, png["flops_utilization"]),
        "leak": leak(cells, png["leak"]),
        "pareto": pareto(cells, epochs, png["pareto"]),
    }
