"""The held-out text's own sampling error, from the per-position losses a run stores (``losses/``).

Every cell is scored on the same held-out characters, so seeds and configurations say nothing of how a
different stretch of text would have scored them: a perplexity of 7 is known from 5,000 characters to about
±7%. Resampling blocks of positions (the same blocks for every cell, so that paired comparisons keep their
pairing, and long enough, ``BLOCK`` characters, to keep the dependence between neighbouring characters) gives
that error: per configuration, the spread of its log ratio over resampled texts, and for a pooled effect, the
spread of the pooled estimate recomputed on each resampled text with the configurations' weights fixed (the
text is shared, so its error is common to every configuration and does not average away). Pure numpy; the
claims add it to the seeds' and configurations' error (``harness.analysis.evidence``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BLOCK = 200  # characters: several words, far beyond the 35 characters a network reads
REPLICATES = 1000
SEED = 0  # the resampling is fixed, so that a report rendered again gives the same intervals

# The stored evaluation behind each metric a claim decides on (harness.results.losses).
EVALUATION_OF = {"causal_ppl": "last", "best_causal_ppl": "best", "selected_causal_ppl": "selected"}


@dataclass(frozen=True)
class TextError:
    """Standard deviations (log-ratio scale) that the held-out text adds: per configuration, and of the
    pooled estimate; ``blocks`` resampled, ``positions`` per cell."""

    per_configuration: tuple[float, ...]
    pooled: float
    blocks: int
    positions: int


def block_means(nats: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """The mean loss of each whole block of positions (a last partial block is left out)."""
    nats = np.asarray(nats, dtype=np.float64)
    count = len(nats) // block
    return nats[: count * block].reshape(count, block).mean(axis=1)


def configuration_blocks(reference: dict, compared: dict, block: int = BLOCK) -> np.ndarray | None:
    """Per block, the configuration's mean log ratio (compared - reference loss): averaged over the seeds
    both sides have (paired), else the difference of the sides' means. ``reference``/``compared``: seed ->
    per-position losses. None when a side has none or the lengths differ."""
    if not reference or not compared:
        return None
    lengths = {len(v) for v in list(reference.values()) + list(compared.values())}
    if len(lengths) != 1 or lengths.pop() < 2 * block:
        return None
    paired = sorted(set(reference) & set(compared))
    if paired:
        return np.mean([block_means(compared[s], block) - block_means(reference[s], block) for s in paired], axis=0)
    return (np.mean([block_means(v, block) for v in compared.values()], axis=0)
            - np.mean([block_means(v, block) for v in reference.values()], axis=0))


def text_error(blocks_per_configuration: list[np.ndarray], weights, replicates: int = REPLICATES,
               seed: int = SEED) -> TextError | None:
    """The text's share of the error: resample blocks (the same for every configuration), recompute each
    configuration's mean and the weighted pooled mean. None without configurations or blocks."""
    if not blocks_per_configuration:
        return None
    counts = {len(b) for b in blocks_per_configuration}
    if len(counts) != 1:
        return None
    count = counts.pop()
    matrix = np.vstack(blocks_per_configuration)  # configurations x blocks
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(matrix), 1 / len(matrix))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, count, size=(replicates, count))
    resampled = matrix[:, draws].mean(axis=2)  # configurations x replicates
    pooled = weights @ resampled
    return TextError(tuple(float(v) for v in resampled.std(axis=1, ddof=1)), float(pooled.std(ddof=1)), count,
                     count * BLOCK)


def combined(se: float, text_sd: float) -> float:
    """A standard error with the text's added (independent sources of error add in variance)."""
    if not math.isfinite(text_sd):
        return se
    return math.sqrt((se if math.isfinite(se) else 0.0) ** 2 + text_sd**2)
