"""The quality of each cell's generated text: the text measures (``harness.analysis.text_measures``) of its
samples averaged per cell, and per direction over finished cells."""

from __future__ import annotations

import pandas as pd

from harness.analysis import text_measures


def cell_quality(samples: pd.DataFrame, corpus_words: set[str] | None) -> pd.DataFrame:
    """Per cell_id: the mean of each text measure over its samples (``harness.analysis.text_measures``)."""
    if samples is None or samples.empty or "cell_id" not in samples:
        return pd.DataFrame(columns=list(text_measures.MEASURES))
    rows = []
    for row in samples.itertuples():
        prefix = row.prefix if isinstance(getattr(row, "prefix", ""), str) else ""
        text = text_measures.generated_part(getattr(row, "text", ""), prefix)
        rows.append({"cell_id": row.cell_id, **text_measures.measure(text, corpus_words)})
    return pd.DataFrame(rows).groupby("cell_id").mean()


def quality_by_direction(ok: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """Mean text measures of each direction's finished cells."""
    if quality is None or quality.empty or "cell_id" not in ok or "direction" not in ok:
        return pd.DataFrame()
    joined = ok[["cell_id", "direction"]].join(quality, on="cell_id")
    return joined.groupby("direction")[list(text_measures.MEASURES)].mean()

