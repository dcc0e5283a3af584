"""Character n-gram models with interpolated Kneser-Ney smoothing: the strongest simple baseline of a text.

A network has learned more than the statistics of short letter sequences only when its held-out perplexity
is below the best of these models, fitted on exactly the text the network trained on and scored on the same
held-out tokens.

Interpolated Kneser-Ney (Chen and Goodman, 1999, with one discount per order), for an order-n model:

    P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h)  +  D_k * N_k(h) / c_k(h) * P_{k-1}(w | h')

where h' is h without its first token, ``c_n`` counts the n-grams of the training text, ``c_k`` for k < n
counts continuations (the distinct tokens that precede ``h w``), ``c_k(h)`` is the sum of ``c_k(h w)`` over
w, ``N_k(h)`` the number of distinct w with ``c_k(h w) > 0``, and ``D_k = n1 / (n1 + 2 n2)`` from the numbers
of k-grams counted once and twice (0.5 where there are none). A context never seen hands its mass to the
order below; below order 1 is the uniform distribution over the vocabulary, so that no token has probability
zero. Every P_k(. | h) sums to 1 over the vocabulary. Pure Python, no torch.
"""

from __future__ import annotations

import collections
import math
from typing import Sequence


class KneserNey:
    """An interpolated Kneser-Ney model of order ``order`` over ``vocabulary``, counted on ``tokens``;
    ``discount``: the same discount at every order in place of each order's estimate."""

    def __init__(self, tokens: Sequence, order: int, vocabulary, discount: float | None = None,
                 grams: dict[int, collections.Counter] | None = None):
        """``grams``: ``gram_counts(tokens, n)`` for some n >= ``order``, shared by models of several orders."""
        if order < 1:
            raise ValueError("order must be at least 1")
        self.order = order
        self.vocabulary = list(dict.fromkeys(vocabulary))
        if not set(tokens) <= set(self.vocabulary):
            raise ValueError("the training tokens hold tokens outside the vocabulary")
        # counts[k][context][token], k = 1..order: raw counts at the top order, continuation counts below.
        self.counts: dict[int, dict[tuple, collections.Counter]] = {}
        grams = grams if grams is not None else gram_counts(tokens, order)
        for k in range(1, order + 1):
            table: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
            if k == order:
                for gram, count in grams[k].items():
                    table[gram[:-1]][gram[-1]] += count
            else:
                for gram in grams[k + 1]:  # each distinct left extension (a h w) counts once for (h w)
                    table[gram[1:-1]][gram[-1]] += 1
            self.counts[k] = dict(table)
        # ``discount``: one for every order (as some implementations have it), instead of each order's estimate.
        self.discounts = {k: self._discount(k) if discount is None else discount for k in self.counts}
        self.totals = {k: {h: sum(c.values()) for h, c in table.items()} for k, table in self.counts.items()}

    def _discount(self, k: int) -> float:
        spectrum = collections.Counter(c for counter in self.counts[k].values() for c in counter.values())
        once, twice = spectrum[1], spectrum[2]
        return once / (once + 2 * twice) if once + twice else 0.5

    def prob(self, history: Sequence, token) -> float:
        """P(token | the last order-1 tokens of ``history``)."""
        context = tuple(history[-(self.order - 1):]) if self.order > 1 else ()
        return self._prob(self.order, context, token)

    def _prob(self, k: int, context: tuple, token) -> float:
        if k == 0:
            return 1.0 / len(self.vocabulary)
        context = context[len(context) - (k - 1):] if k > 1 else ()
        lower = self._prob(k - 1, context[1:], token)
        counter = self.counts[k].get(context)
        if not counter:
            return lower  # a context never seen: all its mass to the order below
        total, discount = self.totals[k][context], self.discounts[k]
        return (max(counter.get(token, 0) - discount, 0.0) + discount * len(counter) * lower) / total

    def perplexity(self, history: Sequence, held_out: Sequence) -> float:
        """exp of the mean negative log-probability of ``held_out``, each token predicted from the ones
        before it, the first from the end of ``history``."""
        text = list(history[-(self.order - 1):]) if self.order > 1 else []
        nll = 0.0
        for token in held_out:
            nll -= math.log(self.prob(text, token))
            text.append(token)
            if len(text) > self.order:
                text.pop(0)
        return math.exp(nll / len(held_out))


def gram_counts(tokens: Sequence, order: int) -> dict[int, collections.Counter]:
    """{k: Counter of the k-grams of ``tokens`` (tuples)} for k = 1..order."""
    return {k: collections.Counter(zip(*(tokens[i:] for i in range(k)))) for k in range(1, order + 1)}


def pieces_gram_counts(pieces: Sequence[Sequence], order: int) -> dict[int, collections.Counter]:
    """``gram_counts`` of several pieces of text that do not follow one another: no k-gram straddles two."""
    counts = {k: collections.Counter() for k in range(1, order + 1)}
    for piece in pieces:
        for k, counter in gram_counts(piece, order).items():
            counts[k].update(counter)
    return counts


def ngram_baselines(tokens: Sequence, max_tokens: int, val_tokens: int, vocabulary,
                    orders=range(1, 7)) -> dict[str, float]:
    """Held-out perplexity of Kneser-Ney models of each order in ``orders``, counted on tokens[:max_tokens]
    and scored on the ``val_tokens`` after them: ``{"1-gram": ..., ..., "6-gram": ...}``."""
    train = list(tokens[:max_tokens])
    return ngram_baselines_of([train], train, list(tokens[max_tokens:max_tokens + val_tokens]), vocabulary, orders)


def ngram_baselines_of(pieces: Sequence[Sequence], before: Sequence, held_out: Sequence, vocabulary,
                       orders=range(1, 7)) -> dict[str, float]:
    """``ngram_baselines`` counted on the training text ``pieces`` (see ``pieces_gram_counts``) and scored on
    ``held_out``, the first tokens predicted from the end of ``before`` (the text just before them)."""
    orders = list(orders)
    pieces = [list(piece) for piece in pieces if len(piece)]
    held_out = list(held_out)
    if not pieces or not held_out:
        raise ValueError("no held-out or no training tokens")
    grams = pieces_gram_counts(pieces, max(orders, default=0))
    seen = [token for piece in pieces for token in dict.fromkeys(piece)]
    history = list(before[-max(orders, default=1):])
    return {f"{n}-gram": KneserNey(seen, n, vocabulary, grams=grams).perplexity(history, held_out) for n in orders}
