"""Per-position held-out losses: ``losses/<name>.npz`` in a run folder, one file per cell.

For each evaluation the claims use (``last``: the last held-out evaluation; ``best``: the one with the lowest
causal perplexity; ``selected``: the epoch chosen on the selection text), the causal loss in nats of every
held-out position, in the text's order, as float16 (about 2 bytes a position before compression), and the
epoch it was measured at. An analysis resamples blocks of these positions to add the held-out text's own
sampling error to an interval; ``exp(mean)`` of an array is the cell's perplexity to about 1e-3 relative.
"""

from __future__ import annotations

from dataclasses import dataclass
import io
import zipfile
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.results.atomic import write_bytes_atomic

EVALUATIONS = ("last", "best", "selected")
LOSSES_BESIDE_RESULT = "losses.npz"  # the worker's file beside its result file, read by the grid


@dataclass(frozen=True)
class PositionLosses:
    """One evaluation's losses (nats per held-out position) and the epoch whose weights produced them."""

    epoch: int
    nats: np.ndarray

    @property
    def ppl(self) -> float:
        return float(np.exp(self.nats.astype(np.float64).mean()))


def as_float16(values) -> np.ndarray:
    """A loss array (a tensor's ``.numpy()``, a list) as float16; a loss beyond its range (65,504 nats, a
    probability of e^-65504) becomes inf, as the perplexity it belongs to is."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float32).reshape(-1).astype(np.float16)


def pack_losses(losses: dict[str, PositionLosses]) -> bytes:
    """The npz file's bytes: ``<evaluation>_epoch`` for each evaluation and its float16 array
    ``<evaluation>``, stored once where evaluations share their epoch (the same weights: a cell evaluated
    only after its last epoch has one array for ``last`` and ``best``)."""
    unknown = set(losses) - set(EVALUATIONS)
    if unknown:
        raise ValueError(f"unknown evaluations {sorted(unknown)}; known: {', '.join(EVALUATIONS)}")
    arrays, by_epoch = {}, {}
    for name in (n for n in EVALUATIONS if n in losses):
        item = losses[name]
        nats = as_float16(item.nats)
        arrays[f"{name}_epoch"] = np.asarray(int(item.epoch), dtype=np.int64)
        twin = by_epoch.get(int(item.epoch))
        if twin is None or not np.array_equal(arrays[twin], nats, equal_nan=True):
            arrays[name] = nats
            by_epoch.setdefault(int(item.epoch), name)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_losses(path, losses: dict[str, PositionLosses]) -> None:
    """Write ``losses`` to ``path`` atomically (``WriteError`` where the machine refuses)."""
    write_bytes_atomic(path, pack_losses(losses))


def read_losses(path) -> dict[str, PositionLosses]:
    """The evaluations stored in ``path``; a file that cannot be read is a ``HarnessError`` naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            epochs = {n: int(data[f"{n}_epoch"]) for n in EVALUATIONS if f"{n}_epoch" in data.files}
            arrays = {n: data[n].astype(np.float16) for n in epochs if n in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise HarnessError(f"{path}: not a readable losses file ({exc})") from None
    out = {}
    for name, epoch in epochs.items():
        # An evaluation without its own array shares the array of one at the same epoch.
        nats = arrays.get(name)
        if nats is None:
            nats = next((arrays[n] for n, e in epochs.items() if e == epoch and n in arrays), None)
        if nats is None:
            raise HarnessError(f"{path}: not a readable losses file (no array for {name!r})")
        out[name] = PositionLosses(epoch, nats)
    return out
