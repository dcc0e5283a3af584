"""The text a run's cells were trained on, found again from what they recorded: its file (never downloaded;
a file whose SHA-256 differs from the recorded one is not used), its words, and the no-learning baselines of
its held-out text (``harness.analysis.no_learning``). The runner records the baselines in run.json; the report
reads them there, or computes them here for a run that predates them."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path
from typing import Iterable

from harness.errors import HarnessError

# One split of a corpus: (corpus name or path, strip the Gutenberg boilerplate, training tokens, held-out tokens).
Split = tuple[str, bool, int, int]


def find_corpus(name: str, sha256s: Iterable[str] = ()) -> tuple[Path | None, str]:
    """The file of a recorded corpus and where it was found, or (None, why not). ``sha256s``: the digests
    the cells recorded (none: not checked)."""
    from harness.cell.corpus import resolve_corpus

    try:
        path = resolve_corpus(name, offline=True)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except (HarnessError, OSError) as exc:
        return None, f"corpus {name!r} unavailable ({str(exc).splitlines()[0]})"
    recorded = {str(s) for s in sha256s}
    if recorded and digest not in recorded:
        return None, f"{path} differs from the text the cells were trained on (SHA-256 {digest[:12]})"
    return path, str(path)


def _column(cells, key: str) -> list:
    return [v for v in cells[key].tolist() if v is not None and v == v] if key in cells else []  # v == v: not NaN


def _flag(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def recorded_corpus(cells) -> tuple[str | None, bool, list[str]]:
    """From a cells table (cells.csv): the corpus most cells name, whether it was stripped of its boilerplate
    (yes unless recorded otherwise), and the SHA-256 digests the cells recorded."""
    names = [str(v) for v in _column(cells, "corpus")]
    name = collections.Counter(names).most_common(1)[0][0] if names else None
    strip = _column(cells, "strip_boilerplate")
    return name, (not strip or _flag(strip[0])), [str(v) for v in _column(cells, "corpus_sha256")]


def table_splits(cells) -> list[Split]:
    """The split of each row of a cells table, as ``run_baselines`` takes them."""
    name, strip, _ = recorded_corpus(cells)
    splits = []
    for row in cells.to_dict("records") if name is not None else ():
        try:
            splits.append((str(row.get("corpus", name)), strip, int(float(row["max_tokens"])),
                           int(float(row["val_tokens"]))))
        except (KeyError, TypeError, ValueError):
            continue
    return splits


def corpus_words(cells) -> tuple[set[str] | None, str]:
    """The words of the corpus a cells table was trained on, cleaned as training cleaned them, or None and
    why not."""
    from harness.analysis.text_measures import corpus_word_set
    from harness.cell.corpus import clean_lines, read_corpus_lines

    name, strip, sha256s = recorded_corpus(cells)
    if name is None:
        return None, "no corpus recorded in cells.csv"
    path, note = find_corpus(name, sha256s)
    if path is None:
        return None, note
    try:
        lines = read_corpus_lines(path, strip)
    except (HarnessError, OSError) as exc:
        return None, f"corpus unreadable ({str(exc).splitlines()[0]})"
    return corpus_word_set(clean_lines(lines)), note


def usable_baselines(recorded) -> bool:
    return isinstance(recorded, dict) and all(isinstance(recorded.get(k), (int, float)) and not isinstance(
        recorded.get(k), bool) for k in ("unigram", "bigram"))


def run_baselines(splits: Iterable[Split], recorded=None, sha256s: Iterable[str] = ()) -> tuple[dict | None, str]:
    """The no-learning baselines of a run's held-out text: ``recorded`` (run.json's) when usable, else computed
    from the corpus file for the split most cells use; (None, why not) when there is none. A run recorded
    before the n-gram models existed gets them computed from the corpus file, beside its own."""
    from harness.analysis.no_learning import best_ngram, corpus_baselines

    if usable_baselines(recorded) and best_ngram(recorded) is not None:
        return recorded, "recorded in run.json"
    counted = collections.Counter(splits)
    fallback = (recorded, "recorded in run.json") if usable_baselines(recorded) else None
    if not counted:
        return fallback or (None, "no corpus recorded")
    corpus, strip, max_tokens, val_tokens = counted.most_common(1)[0][0]
    if not val_tokens:
        return fallback or (None, "no held-out text")
    path, note = find_corpus(corpus, sha256s)
    if path is None:
        return fallback or (None, note)
    try:
        computed = corpus_baselines(path, strip, max_tokens, val_tokens)
    except (HarnessError, OSError, ValueError) as exc:
        return fallback or (None, f"no baselines ({exc})")
    if fallback:
        ngrams = {k: v for k, v in computed.items() if k.endswith("-gram") or k == "ngram_smoothing"}
        return {**recorded, **ngrams}, "recorded in run.json; the n-gram models computed from the corpus file"
    return computed, "computed from the corpus file"
