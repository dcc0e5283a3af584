"""Perplexities of predictors that learn nothing but letter frequencies, for the held-out text.

A model has learned something about the text only when its held-out perplexity is below these:
``uniform`` (every token equally likely: the vocabulary size), ``unigram`` (each token's frequency in the
training split) and ``bigram`` (the frequency of each token after the one before it). Counts come from
the training split and are add-one (Laplace) smoothed over the model's vocabulary, so that no held-out
token has probability zero. Pure Python, no torch: the report computes them too.
"""

from __future__ import annotations

import collections
import math


def no_learning_baselines(tokens: list, max_tokens: int, val_tokens: int, vocab_size: int) -> dict:
    """Held-out perplexity of the uniform, unigram and bigram predictors for tokens[max_tokens :
    max_tokens + val_tokens], counted on tokens[:max_tokens]. ``vocab_size`` counts every token the model
    can emit (the harness's vocabulary has ``<unk>`` besides the text's characters)."""
    return text_baselines([tokens[:max_tokens]], tokens[max_tokens : max_tokens + val_tokens], vocab_size,
                          before=tokens[max_tokens - 1 : max_tokens])


def text_baselines(pieces: list[list], held_out: list, vocab_size: int, before: list) -> dict:
    """The uniform, unigram and bigram predictors counted on the training text ``pieces`` (pieces of the
    corpus that do not follow one another there, so no bigram straddles two) and scored on ``held_out``;
    ``before``: the text just before the held-out tokens (its last token is the first target's context)."""
    pieces = [list(piece) for piece in pieces if len(piece)]
    if not held_out or not pieces:
        raise ValueError("no held-out or no training tokens")
    seen = set().union(*map(set, pieces))
    vocab_size = max(vocab_size, len(seen | set(held_out)))
    unigrams = collections.Counter(token for piece in pieces for token in piece)
    bigrams = collections.Counter(pair for piece in pieces for pair in zip(piece, piece[1:]))
    contexts = collections.Counter(token for piece in pieces for token in piece[:-1])  # tokens with a successor
    trained = sum(unigrams.values())
    previous = [before[-1] if len(before) else None] + list(held_out[:-1])
    unigram_nll = bigram_nll = 0.0
    for context, target in zip(previous, held_out):
        unigram = (unigrams[target] + 1) / (trained + vocab_size)
        unigram_nll -= math.log(unigram)
        # No text before the held-out tokens: the first is predicted from letter frequencies alone.
        bigram_nll -= math.log(unigram if context is None else
                               (bigrams[(context, target)] + 1) / (contexts[context] + vocab_size))
    count = len(held_out)
    counted_on = (f"the first {trained} tokens (training split)" if len(pieces) == 1 else
                  f"the {trained} training tokens ({' + '.join(str(len(p)) for p in pieces)}, "
                  "the held-out and selection text left out)")
    return {"uniform": float(vocab_size), "unigram": math.exp(unigram_nll / count),
            "bigram": math.exp(bigram_nll / count), "tokens": count, "vocab_size": vocab_size,
            "smoothing": "add-one", "counted_on": counted_on}


def corpus_baselines(path, strip_boilerplate: bool, max_tokens: int, val_tokens: int, train_text: str = "first",
                     select_tokens: int = 0) -> dict:
    """The baselines for a corpus file cleaned and split as training does it, counted on the training text
    of ``train_text`` (first or book) and scored on the held-out tokens after the first ``max_tokens``."""
    from harness.cell.corpus import clean_lines, read_corpus_lines, tokenize_chars, training_pieces

    from harness.analysis.ngram import ngram_baselines_of

    tokens = tokenize_chars(clean_lines(read_corpus_lines(path, strip_boilerplate)))
    if max_tokens + val_tokens + select_tokens > len(tokens):
        raise ValueError(f"{max_tokens + val_tokens + select_tokens} tokens asked of a text of {len(tokens)}")
    pieces = training_pieces(tokens, max_tokens, val_tokens, train_text, select_tokens)
    held_out, before = tokens[max_tokens : max_tokens + val_tokens], tokens[:max_tokens]
    baselines = text_baselines(pieces, held_out, len(set(tokens)) + 1, before)
    # The vocabulary a cell's model has: the text's characters and <unk> (harness.cell.corpus.Vocab).
    vocabulary = sorted(set(tokens)) + ["<unk>"]
    return {**baselines, **ngram_baselines_of(pieces, before, held_out, vocabulary),
            "ngram_smoothing": "interpolated Kneser-Ney", "train_text": train_text}


# A cell has learned when its best held-out causal perplexity is at most this share of the unigram
# baseline's. Cells stuck on the letter-frequency plateau sit within 0.5% of it (16.94-17.03 against 17.03 in
# the committed studies), cells that left it are below 12.5: 5% below is outside the plateau's spread and far
# above anything a network that learned more than letter frequencies reaches.
LEARNED_SHARE_OF_UNIGRAM = 0.95


def learned_bound(baselines: dict | None) -> float | None:
    """The best held-out causal perplexity a cell must reach to count as having learned; None without a
    unigram baseline."""
    unigram = (baselines or {}).get("unigram")
    if isinstance(unigram, bool) or not isinstance(unigram, (int, float)) or not math.isfinite(unigram):
        return None
    return LEARNED_SHARE_OF_UNIGRAM * float(unigram)


def best_ngram(baselines: dict | None) -> tuple[str, float] | None:
    """The character n-gram model (``N-gram`` entries) with the lowest held-out perplexity, or None."""
    found = [(name, float(value)) for name, value in (baselines or {}).items()
             if name.endswith("-gram") and isinstance(value, (int, float)) and not isinstance(value, bool)
             and math.isfinite(value)]
    return min(found, key=lambda item: item[1]) if found else None
