"""What the report says about its figures without drawing them: their names and captions, the order of the
cell types, the unit of memory. Light (no matplotlib): the document and the main process of a report
(``harness.report.build``) need these, and only the workers that draw (``harness.report.drawing``) import
``harness.report.figures``."""

from __future__ import annotations

from pathlib import Path

MIB = 1024 * 1024
CELL_MARKERS = {"rnn": "o", "gru": "s", "lstm": "^"}  # the marker of each cell type, and their order

FIGURES = {
    "heldout_curves": "Held-out causal perplexity against epochs (top) and against training seconds (bottom), "
                      "one panel per cell type: thin lines are seeds, thick lines their geometric mean; colour is "
                      "the direction, line style the depth; grey lines are the no-learning baselines.",
    "train_vs_heldout": "Training (green) and held-out causal (red) perplexity by epoch, geometric mean over "
                        "seeds, one panel per cell type and direction; line style is the depth. A gap where "
                        "training perplexity is far below held-out is memorisation or, for bidirectional cells, "
                        "the leak.",
    "slowdown_heatmap": "Bidirectional slowdown: geometric-mean bi/uni seconds per epoch by cell type and depth, "
                        "with the bi/uni ratio of FLOPs per epoch below each value.",
    "seconds_per_epoch": "Seconds per epoch against depth: dots are seeds, bars the geometric mean with its 95% "
                         "interval (log scale).",
    "condition_depth": "Best held-out causal perplexity of the unidirectional cells against depth, one line per cell "
                       "type (line style and marker) and condition (colour): geometric mean over seeds, whiskers from "
                       "the lowest to the highest seed; at the epoch chosen on selection text where the cells had "
                       "selection text, else at the best held-out evaluation. Grey lines are the no-learning "
                       "baselines; a dotted line in a condition's colour is the best n-gram model of that "
                       "condition's own training text, where it differs (the whole book).",
}


FIGURES_MODULE = "harness.report.figures"


def figure_tasks(cells, epochs, baselines, folder: Path) -> list[tuple]:
    """The run's figures as (name, "module:function", arguments) to draw into ``folder``; each function
    returns the PNG's path, or None where the run has no data for it (``harness.report.drawing`` draws them)."""
    png = {name: Path(folder) / f"{name}.png" for name in FIGURES if name != "condition_depth"}
    return [("heldout_curves", f"{FIGURES_MODULE}:heldout_curves", (cells, epochs, baselines, png["heldout_curves"])),
            ("train_vs_heldout", f"{FIGURES_MODULE}:train_vs_heldout", (cells, epochs, baselines, png["train_vs_heldout"])),
            ("slowdown_heatmap", f"{FIGURES_MODULE}:slowdown_heatmap", (cells, png["slowdown_heatmap"])),
            ("seconds_per_epoch", f"{FIGURES_MODULE}:seconds_per_epoch", (cells, png["seconds_per_epoch"]))]
