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
    train = tokens[:max_tokens]
    held_out = tokens[max_tokens : max_tokens + val_tokens]
    if not held_out or not train:
        raise ValueError("no held-out or no training tokens")
    vocab_size = max(vocab_size, len(set(train) | set(held_out)))
    unigrams = collections.Counter(train)
    bigrams = collections.Counter(zip(train, train[1:]))
    # The bigram predictor conditions on the token before each target; the first held-out target's
    # predecessor is the last training token.
    previous = [train[-1]] + held_out[:-1]
    unigram_nll = bigram_nll = 0.0
    for before, target in zip(previous, held_out):
        unigram_nll -= math.log((unigrams[target] + 1) / (len(train) + vocab_size))
        # The context's count as a bigram's first token (the last training token has no successor).
        context = unigrams[before] - (1 if before == train[-1] else 0)
        bigram_nll -= math.log((bigrams[(before, target)] + 1) / (context + vocab_size))
    count = len(held_out)
    return {"uniform": float(vocab_size), "unigram": math.exp(unigram_nll / count),
            "bigram": math.exp(bigram_nll / count), "tokens": count, "vocab_size": vocab_size,
            "smoothing": "add-one", "counted_on": f"the first {len(train)} tokens (training split)"}


def corpus_baselines(path, strip_boilerplate: bool, max_tokens: int, val_tokens: int) -> dict:
    """The baselines for a corpus file cleaned and split as training does it."""
    from harness.cell.corpus import clean_lines, read_corpus_lines, tokenize_chars

    from harness.analysis.ngram import ngram_baselines

    tokens = tokenize_chars(clean_lines(read_corpus_lines(path, strip_boilerplate)))
    baselines = no_learning_baselines(tokens, max_tokens, val_tokens, len(set(tokens)) + 1)
    # The vocabulary a cell's model has: the text's characters and <unk> (harness.cell.corpus.Vocab).
    vocabulary = sorted(set(tokens)) + ["<unk>"]
    return {**baselines, **ngram_baselines(tokens, max_tokens, val_tokens, vocabulary),
            "ngram_smoothing": "interpolated Kneser-Ney"}


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
