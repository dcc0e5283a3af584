"""A corpus as tensors: the training, held-out and selection splits and the minibatches of an epoch.

Everything random here takes an explicit ``torch.Generator`` so that a cell's data order depends on its
seed alone, never on global random state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from harness.cell.corpus import Vocab, read_clean_text, resolve_corpus, training_pieces
from harness.errors import HarnessError


@dataclass
class Corpus:
    """A tokenized corpus with its training and held-out splits (1-D int64 tensors)."""

    vocab: Vocab
    tokens: torch.Tensor  # the whole cleaned text, encoded
    train: torch.Tensor  # the training text (see ``training_text``)
    val: torch.Tensor  # tokens[max_tokens : max_tokens + val_tokens]
    sha256: str  # of the file's bytes
    path: str
    select: torch.Tensor | None = None  # the selection text: the select_tokens after the held-out text
    chunk_tokens: int = 0  # book: tokens per epoch (max_tokens); 0: every epoch reads all of ``train``

    @property
    def chunks(self) -> int:
        """How many epochs read different text before the first text comes round again."""
        return max(1, len(self.train) // self.chunk_tokens) if self.chunk_tokens else 1

    def epoch_span(self, epoch: int) -> slice:
        """Where in ``train`` epoch ``epoch`` (1-based) reads: all of it, or its chunks in turn."""
        if not self.chunk_tokens:
            return slice(None)
        start = ((epoch - 1) % self.chunks) * self.chunk_tokens
        return slice(start, start + self.chunk_tokens)


def training_text(encoded: torch.Tensor, max_tokens: int, held_out: int, train_text: str) -> torch.Tensor:
    """first: the first ``max_tokens`` tokens (the recipe). book: those, then everything after the
    ``held_out`` tokens that follow them (held-out and selection text), in whole chunks of ``max_tokens``
    (``harness.cell.corpus.training_pieces``)."""
    pieces = training_pieces(encoded, max_tokens, held_out, train_text)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def load_corpus(
    name_or_path: str = "gutenberg-35",
    strip_boilerplate: bool = True,
    max_tokens: int = 10_000,
    val_tokens: int = 5_000,
    select_tokens: int = 0,
    train_text: str = "first",
) -> Corpus:
    path = resolve_corpus(name_or_path)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    text = read_clean_text(path, strip_boilerplate)
    if not text:
        raise HarnessError(f"corpus {path}: no letters A-Z in it: the cleaning keeps only the letters A-Z "
                           "(lower-cased) and spaces, so an empty text or one in another script keeps nothing")
    vocab = Vocab(text)
    # One byte per token, then int64 in one copy: no Python list of the text's tokens.
    encoded = torch.frombuffer(vocab.encode_ascii(text), dtype=torch.uint8).long()
    del text
    held_out = val_tokens + select_tokens
    if max_tokens + held_out > len(encoded):
        names = "max_tokens + val_tokens" + (" + select_tokens" if select_tokens else "")
        raise HarnessError(
            f"corpus {name_or_path}: {names} = {max_tokens + held_out} exceeds its {len(encoded)} tokens"
        )
    return Corpus(
        vocab=vocab,
        tokens=encoded,
        train=training_text(encoded, max_tokens, held_out, train_text),
        val=encoded[max_tokens : max_tokens + val_tokens],
        sha256=sha256,
        path=str(path),
        select=encoded[max_tokens + val_tokens : max_tokens + held_out] if select_tokens else None,
        chunk_tokens=max_tokens if train_text == "book" else 0,
    )


# --- minibatches -------------------------------------------------------------------------------------


def _randint(low: int, high_inclusive: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator))


def sequential_batches(
    corpus: torch.Tensor, batch_size: int, num_steps: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's sequential partition as two tensors of shape (num_batches, batch_size, num_steps).

    A random offset in [0, num_steps] starts the epoch; row b of batch i continues row b of batch i-1,
    which is why the recurrent state may be carried between batches."""
    offset = _randint(0, num_steps, generator)
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    xs = corpus[offset : offset + num_tokens].reshape(batch_size, -1)
    ys = corpus[offset + 1 : offset + 1 + num_tokens].reshape(batch_size, -1)
    num_batches = xs.shape[1] // num_steps
    span = num_batches * num_steps
    shape = (batch_size, num_batches, num_steps)
    return (
        xs[:, :span].reshape(shape).transpose(0, 1),
        ys[:, :span].reshape(shape).transpose(0, 1),
    )


def random_batches(
    corpus: torch.Tensor, batch_size: int, num_steps: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's random sampling: subsequences from a random offset in [0, num_steps-1], shuffled, so
    adjacent batches are not adjacent in the text. Shape (num_batches, batch_size, num_steps)."""
    offset = _randint(0, num_steps - 1, generator)
    corpus = corpus[offset:]
    num_subseqs = (len(corpus) - 1) // num_steps
    starts = torch.arange(0, num_subseqs * num_steps, num_steps)
    starts = starts[torch.randperm(num_subseqs, generator=generator)]
    num_batches = num_subseqs // batch_size
    starts = starts[: num_batches * batch_size].to(corpus.device)
    index = starts[:, None] + torch.arange(num_steps, device=corpus.device)[None, :]
    xs = corpus[index].reshape(num_batches, batch_size, num_steps)
    ys = corpus[index + 1].reshape(num_batches, batch_size, num_steps)
    return xs, ys


BATCHERS = {"sequential": sequential_batches, "random": random_batches}
