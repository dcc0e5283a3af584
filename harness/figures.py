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

from .claims import by_seed, compare, direction_pairs, ok_cells, t_interval, training_curves
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
                         "the device's calibrated float32 matrix-product rate (run.json calibration).",
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


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _log_axis(axis) -> None:
    """Log scale labelled with plain numbers (6, 8, 10) rather than powers (6 x 10^0)."""
    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    axis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _t_errorbar(values):
    _, low, high = t_interval(list(values))
    mean = float(np.mean(values))
    return (mean, mean) if not (math.isfinite(low) and math.isfinite(high)) else (low, high)


def _finite(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    values = pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(dtype=float)
    out = frame.assign(**{column: values})
    return out[np.isfinite(out[column])]


def _panel_label(values: dict) -> str:
    return ", ".join(str(v) for v in values.values())


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
    curves = training_curves(epochs)
    if not curves:
        return None
    frame = pd.concat(curves.values(), ignore_index=True)
    frame = _finite(frame, "train_ppl")
    if frame.empty or not {"cell", "direction", "layers", "seed"} <= set(frame.columns):
        return None
    frame["panel"] = frame["direction"].astype(str)
    if "device" in frame and frame["device"].nunique() > 1:
        frame["panel"] = frame["direction"].astype(str) + ", " + frame["device"].astype(str)
    cell_types = sorted(frame["cell"].unique())
    panels = sorted(frame["panel"].unique(), key=lambda p: (not p.startswith("uni"), p))
    depths = sorted(frame["layers"].unique())
    with sns.axes_style(STYLE):
        fig, axes = _grid(len(cell_types), len(panels), sharex=True, sharey=True)
        for i, cell in enumerate(cell_types):
            for j, panel in enumerate(panels):
                ax = axes[i, j]
                data = frame[(frame["cell"] == cell) & (frame["panel"] == panel)]
                if not data.empty:
                    sns.lineplot(data=data, x="epoch", y="train_ppl", hue="layers", hue_order=depths,
                                 palette=layer_colors(depths), units="seed", estimator=None, lw=1.1, alpha=0.85,
                                 ax=ax)
                _log_axis(ax.yaxis)
                ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
                ax.set_title(f"{cell}, {panel}", fontsize=10)
                ax.set_xlabel("epoch" if i == len(cell_types) - 1 else "")
                ax.set_ylabel("training perplexity (log scale)" if j == 0 else "")
        _legend_once(axes, "layers")
        fig.suptitle("Learning curves")
        return _save(fig, path)


def _final_long(ok: pd.DataFrame) -> pd.DataFrame:
    names = {"train_ppl": "training", "val_ppl": "held-out teacher-forced", "causal_ppl": "held-out causal"}
    present = [c for c in names if c in ok]
    if not present:
        return pd.DataFrame()
    keys = [k for k in GRID_KEYS if k in ok]
    long = ok.melt(id_vars=keys, value_vars=present, var_name="metric", value_name="perplexity")
    long["metric"] = long["metric"].map(names)
    return _finite(long, "perplexity")


def final_perplexity(cells: pd.DataFrame, path: Path) -> Path | None:
    long = _final_long(ok_cells(cells))
    if long.empty:
        return None
    long["row"] = long["direction"].astype(str)
    if long["device"].nunique() > 1:
        long["row"] = long["direction"].astype(str) + ", " + long["device"].astype(str)
    rows = sorted(long["row"].unique(), key=lambda p: (not p.startswith("uni"), p))
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
        return _save(fig, path)


def _cost_against_depth(cells: pd.DataFrame, column: str, scale: float, ylabel: str, title: str,
                        path: Path) -> Path | None:
    ok = _finite(ok_cells(cells), column) if column in cells else pd.DataFrame()
    if ok.empty:
        return None
    ok = ok.assign(value=ok[column] / scale)
    devices = sorted(ok["device"].unique())
    cell_types = sorted(ok["cell"].unique())
    depths = sorted(ok["layers"].unique())
    directions = [d for d in DIRECTION_COLORS if d in set(ok["direction"])]
    with sns.axes_style(STYLE):
        fig, axes = _grid(len(devices), len(cell_types), sharey="row")
        for i, device in enumerate(devices):
            for j, cell in enumerate(cell_types):
                ax = axes[i, j]
                data = ok[(ok["device"] == device) & (ok["cell"] == cell)]
                if not data.empty:
                    _seeds_and_means(ax, data, "layers", "value", "direction", depths, directions, DIRECTION_COLORS)
                ax.set_title(f"{cell}, {device}", fontsize=10)
                ax.set_xlabel("layers")
                ax.set_ylabel(ylabel if j == 0 else "")
                ax.set_ylim(bottom=0)
        _legend_once(axes, "direction")
        fig.suptitle(title)
        return _save(fig, path)


def seconds_per_epoch(cells: pd.DataFrame, path: Path) -> Path | None:
    return _cost_against_depth(cells, "sec_per_epoch", 1.0, "seconds per epoch (s)", "Time per epoch", path)


def peak_memory(cells: pd.DataFrame, path: Path) -> Path | None:
    return _cost_against_depth(cells, "peak_mem_bytes", MIB, "peak memory (MiB)", "Peak memory during training",
                               path)


def flops_utilization(cells: pd.DataFrame, path: Path) -> Path | None:
    return _cost_against_depth(cells, "flops_utilization", 0.01, "FLOP utilization (% of matmul rate)",
                               "FLOP utilization: training against the calibrated matrix product", path)


def slowdown_table(cells: pd.DataFrame, metric: str = "sec_per_epoch") -> pd.DataFrame:
    """Geometric-mean bi/uni ratio per (cell type, device, other keys) row and depth column."""
    records = []
    for context, uni, bi in direction_pairs(ok_cells(cells), timing=True):
        result = compare(by_seed(uni, metric), by_seed(bi, metric), "ratio")
        label = ", ".join(str(v) for k, v in context.items() if k != "layers")
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


def pareto(cells: pd.DataFrame, epochs: pd.DataFrame, path: Path) -> Path | None:
    ok = ok_cells(cells)
    if ok.empty or "causal_ppl" not in ok:
        return None
    ok = ok.assign(train_sec=ok["cell_id"].map(training_seconds(ok, epochs)))
    ok = _finite(_finite(ok, "train_sec"), "causal_ppl")
    if ok.empty:
        return None
    keys = [k for k in ("cell", "layers", "direction", "device") if k in ok]
    configs = ok.groupby(keys, as_index=False)[["train_sec", "causal_ppl"]].mean()
    configs["label"] = configs.apply(lambda r: f"{r['cell']}-l{int(r['layers'])}-{r['direction']}"
                                     + (f"-{r['device']}" if ok["device"].nunique() > 1 else ""), axis=1)
    front = pareto_front(configs, "train_sec", "causal_ppl")
    directions = [d for d in DIRECTION_COLORS if d in set(ok["direction"])]
    with sns.axes_style(STYLE):
        fig = Figure(figsize=(7.2, 5.0), layout="constrained")
        ax = fig.subplots()
        sns.scatterplot(data=ok, x="train_sec", y="causal_ppl", hue="direction", hue_order=directions,
                        palette=DIRECTION_COLORS, alpha=0.3, s=18, legend=False, ax=ax)
        sns.scatterplot(data=configs, x="train_sec", y="causal_ppl", hue="direction", hue_order=directions,
                        palette=DIRECTION_COLORS, style="cell", s=70, ax=ax)
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
