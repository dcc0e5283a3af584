"""Measures of generated text: does a model write words of the book, or repeat itself?

Every sample gets a number from every measure: an empty or all-space sample is the most degenerate text
there is, never a missing value.

- ``compression``: raw-deflate size over length. English of 50 characters barely compresses (about 0.8
  to 1); a text that repeats itself at any period compresses well ("erererer..." about 0.15).
- ``longest_repeat``: the longest substring that occurs at least twice (occurrences may overlap), at any
  period: "and the time time time" holds "time time " twice.
- ``word_share``: the share of generated words found in the corpus; ``distinct_share``: distinct words over
  words, low when one word repeats ("the the the" has word share 1 and distinct share 1/3).
- ``degenerate``: blank, or compressing below ``DEGENERATE_COMPRESSION``, or one substring repeated over at
  least ``DEGENERATE_REPEAT`` of the text, or words repeating (distinct share at most 0.5 over 4+ words).
"""

from __future__ import annotations

import math
import re
import zlib

DEGENERATE_COMPRESSION = 0.5
DEGENERATE_REPEAT = 0.4


def generated_part(text: str, prefix: str) -> str:
    """The characters a model generated: the text without its prompt."""
    text = text if isinstance(text, str) else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower()) if isinstance(text, str) else []


def corpus_word_set(lines: list[str]) -> set[str]:
    """The words of cleaned corpus lines (``harness.cell.corpus.clean_lines``)."""
    return {word for line in lines for word in words_of(line)}


def _words(text: str, drop_last: bool) -> list[str]:
    # Generation stops after a fixed number of characters, usually inside a word: the last word is left
    # out unless it is the only one.
    words = words_of(text)
    return words[:-1] if drop_last and len(words) > 1 else words


def word_share(text: str, corpus_words: set[str], drop_last: bool = True) -> float:
    """Share of the words of ``text`` found in ``corpus_words``; 0 for a text without words."""
    words = _words(text, drop_last)
    return sum(word in corpus_words for word in words) / len(words) if words else 0.0


def distinct_share(text: str, drop_last: bool = True) -> float:
    """Distinct words over words; 0 for a text without words."""
    words = _words(text, drop_last)
    return len(set(words)) / len(words) if words else 0.0


def compression(text: str) -> float:
    """Raw-deflate (level 9, no header) bytes over characters; 0 for a blank text."""
    text = text if isinstance(text, str) else ""
    if not text.strip():
        return 0.0
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = text.encode()
    return len(packer.compress(data) + packer.flush()) / len(data)


def longest_repeat(text: str) -> int:
    """Length of the longest substring occurring at least twice (overlaps allowed); a blank text counts
    whole. O(n^2) over the sample's characters, which are few (samples are tens of characters)."""
    text = text if isinstance(text, str) else ""
    if not text.strip():
        return len(text)
    n, best = len(text), 0
    # Longest common prefix of every pair of suffixes that start `shift` apart, by dynamic programming
    # along each diagonal.
    for shift in range(1, n):
        run = 0
        for i in range(n - shift):
            run = run + 1 if text[i] == text[i + shift] else 0
            best = max(best, run)
    return best


def _degenerate(text: str, packed: float, repeat: int, distinct: float) -> bool:
    if not text.strip():
        return True
    return (packed < DEGENERATE_COMPRESSION or repeat >= DEGENERATE_REPEAT * len(text)
            or (len(_words(text, True)) >= 4 and distinct <= 0.5))


def is_degenerate(text: str) -> bool:
    text = text if isinstance(text, str) else ""
    return _degenerate(text, compression(text), longest_repeat(text), distinct_share(text))


def measure(text: str, corpus_words: set[str] | None) -> dict:
    """Every measure of one generated text (``word_share`` NaN only when the corpus is unavailable); each
    is computed once, the degenerate flag from the others."""
    text = text if isinstance(text, str) else ""
    packed, repeat, distinct = compression(text), longest_repeat(text), distinct_share(text)
    return {"word_share": word_share(text, corpus_words) if corpus_words else math.nan,
            "distinct_share": distinct, "compression": packed, "longest_repeat": float(repeat),
            "degenerate": float(_degenerate(text, packed, repeat, distinct))}


MEASURES = ("word_share", "distinct_share", "compression", "longest_repeat", "degenerate")
