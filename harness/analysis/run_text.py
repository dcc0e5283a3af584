"""The text a run's cells were trained on, found again from what they recorded: its file (never downloaded;
a file whose SHA-256 differs from the recorded one is not used), its words, and the no-learning baselines of
its held-out text (``harness.analysis.no_learning``). The runner records the baselines in run.json; the report
reads them there, or computes them here for a run that predates them."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path
from typing import Iterable, NamedTuple

from harness.errors import HarnessError


class Split(NamedTuple):
    """One split of a corpus into training and held-out text, as a cell's configuration sets it."""

    corpus: str  # name or path
    strip: bool  # strip the Gutenberg boilerplate
    max_tokens: int
    val_tokens: int  # held-out tokens, after the first max_tokens
    train_text: str = "first"  # first: the first max_tokens; book: those and the text after held-out and selection
    select_tokens: int = 0

    def text(self) -> "Split":
        """The split with only what changes its baselines: the selection text matters to the book's."""
        split = Split(*self)
        return split._replace(select_tokens=0) if split.train_text != "book" else split

    def record(self) -> dict:
        return {"corpus": self.corpus, "strip_boilerplate": self.strip, "max_tokens": self.max_tokens,
                "val_tokens": self.val_tokens, "train_text": self.train_text, "select_tokens": self.select_tokens}

    @classmethod
    def from_record(cls, record: dict) -> "Split":
        return cls(str(record["corpus"]), bool(record["strip_boilerplate"]), int(record["max_tokens"]),
                   int(record["val_tokens"]), str(record.get("train_text", "first")),
                   int(record.get("select_tokens", 0)))


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
    """The split of each row of a cells table, as ``run_baselines`` takes them (None for a row without one)."""
    name, strip, _ = recorded_corpus(cells)
    splits = []
    for row in cells.to_dict("records") if name is not None else ():
        try:
            text = row.get("train_text")
            select = row.get("select_tokens")
            splits.append(Split(str(row.get("corpus", name)), strip, int(float(row["max_tokens"])),
                                int(float(row["val_tokens"])), str(text) if text == text and text else "first",
                                int(float(select)) if select == select and select not in (None, "") else 0).text())
        except (KeyError, TypeError, ValueError):
            splits.append(None)
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
    from harness.analysis.no_learning import best_ngram

    if usable_baselines(recorded) and best_ngram(recorded) is not None:
        return recorded, "recorded in run.json"
    split = main_split(splits)
    fallback = (recorded, "recorded in run.json") if usable_baselines(recorded) else None
    if split is None:
        return fallback or (None, "no corpus recorded")
    computed, why = _computed(split, sha256s)
    if computed is None:
        return fallback or (None, why)
    if fallback:
        ngrams = {k: v for k, v in computed.items() if k.endswith("-gram") or k == "ngram_smoothing"}
        return {**recorded, **ngrams}, "recorded in run.json; the n-gram models computed from the corpus file"
    return computed, "computed from the corpus file"


def main_split(splits: Iterable) -> Split | None:
    """The split most cells use (its baselines are run.json's ``baselines``)."""
    counted = collections.Counter(Split(*s).text() for s in splits if s is not None)
    return counted.most_common(1)[0][0] if counted else None


def _computed(split: Split, sha256s: Iterable[str]) -> tuple[dict | None, str]:
    from harness.analysis.no_learning import corpus_baselines

    if not split.val_tokens:
        return None, "no held-out text"
    path, note = find_corpus(split.corpus, sha256s)
    if path is None:
        return None, note
    try:
        return corpus_baselines(path, split.strip, split.max_tokens, split.val_tokens, split.train_text,
                                split.select_tokens), "computed from the corpus file"
    except (HarnessError, OSError, ValueError) as exc:
        return None, f"no baselines ({exc})"


def other_text_baselines(splits: Iterable, recorded=None, sha256s: Iterable[str] = ()) -> list[dict]:
    """The baselines of every training text the cells used besides the main split's (``main_split``), as
    run.json's ``text_baselines`` holds them: one record per split (``Split.record``) with its ``baselines``;
    those ``recorded`` are kept, the others computed from the corpus file (a split whose corpus is not found
    is left out)."""
    splits = [Split(*s).text() for s in splits if s is not None]
    main = main_split(splits)
    kept = _entries_by_split(recorded)
    for split in dict.fromkeys(splits):
        if split != main and split not in kept:
            computed, _ = _computed(split, sha256s)
            if computed is not None:
                kept[split] = {**split.record(), "baselines": computed}
    return list(kept.values())


def cell_baselines(cells, main: dict | None, others: list[dict]) -> dict[str, list]:
    """Per row of a cells table, the baselines of its own training text: ``unigram_baseline``,
    ``bigram_baseline``, ``ngram_baseline`` (the best n-gram model's perplexity) and ``ngram_baseline_order`` (its name), from
    ``main`` (run.json's ``baselines``, for the main split and for a row without a split) or the entry of
    ``others`` (``other_text_baselines``) for the row's split; NaN / None where there are none."""
    from harness.analysis.no_learning import best_ngram

    by_split = {split: entry["baselines"] for split, entry in _entries_by_split(others).items()}
    splits = table_splits(cells)
    splits = splits if len(splits) == len(cells) else [None] * len(cells)
    main_text = main_split(splits)
    columns: dict[str, list] = {"unigram_baseline": [], "bigram_baseline": [], "ngram_baseline": [],
                                "ngram_baseline_order": []}
    for split in splits:
        # A row of another training text whose baselines are unknown has none: never the main text's.
        baselines = main if split is None or split == main_text else by_split.get(split)
        usable = usable_baselines(baselines)
        best = best_ngram(baselines)
        columns["unigram_baseline"].append(float(baselines["unigram"]) if usable else float("nan"))
        columns["bigram_baseline"].append(float(baselines["bigram"]) if usable else float("nan"))
        columns["ngram_baseline"].append(best[1] if best else float("nan"))
        columns["ngram_baseline_order"].append(best[0] if best else None)
    return columns


def _entries_by_split(entries) -> dict[Split, dict]:
    """run.json's ``text_baselines`` entries with usable baselines, by the split they were counted for."""
    found = {}
    for entry in entries if isinstance(entries, list) else ():
        try:
            split = Split.from_record(entry).text()
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if usable_baselines(entry.get("baselines")):
            found[split] = entry
    return found
