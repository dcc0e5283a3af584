"""Corpus text, vocabulary, splits and minibatch iterators, on literal data with known answers."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest
import torch

import harness.cell.corpus as corpus_module
from harness.cell.corpus import (EMBEDDED_DIR, Vocab, clean_lines, read_clean_text, read_corpus_lines,
                                 strip_gutenberg_boilerplate, tokenize_chars)
from harness.cell.batches import load_corpus, random_batches, sequential_batches
from harness.errors import HarnessError

# --- cleaning and vocabulary ----------------------------------------------------------------------------


def test_clean_lines_replaces_non_letters_strips_lowers_and_drops_empty_lines():
    lines = ["  It's 1895 -- the Time-Traveller!  ", "", "   ", "1234 5678", "\ufeffHello,\tWorld\n"]
    assert clean_lines(lines) == ["it s the time traveller", "hello world"]


def test_tokenize_chars_flattens_lines_without_a_separator():
    assert tokenize_chars(["ab c", "de"]) == ["a", "b", " ", "c", "d", "e"]


def test_vocab_orders_by_descending_frequency_then_alphabetically_with_unk_first():
    tokens = tokenize_chars(clean_lines(["Hello, World!", "", "  abc 123 ab"]))
    # counts: l 3; space, a, b, o 2 each; c, d, e, h, r, w 1 each
    vocab = Vocab(tokens)
    assert vocab.idx_to_token == ["<unk>", "l", " ", "a", "b", "o", "c", "d", "e", "h", "r", "w"]
    assert len(vocab) == 12
    assert vocab.token_to_idx["<unk>"] == 0
    assert vocab.encode(list("hello")) == [9, 8, 1, 1, 5]
    assert vocab.encode(["z", "?"]) == [0, 0]  # unknown tokens map to <unk>
    assert vocab.decode([9, 8, 1, 1, 5]) == "hello"


def test_vocab_tie_order_does_not_depend_on_first_appearance():
    assert Vocab(list("ba")).idx_to_token == Vocab(list("ab")).idx_to_token == ["<unk>", "a", "b"]


def _seed_pipeline(path: Path) -> list[str]:
    """The seed's read_time_machine + tokenize(..., 'char') + flatten, verbatim."""
    with open(path, "r", encoding="utf-8") as f:
        lines = f.readlines()
    cleaned_lines = [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in lines]
    lines = [line for line in cleaned_lines if line]
    return [token for line in [list(line) for line in lines] for token in line]


def test_load_corpus_without_stripping_tokenizes_exactly_as_the_seed(tmp_path):
    # Windows and old-Mac line ends, a form feed and a line separator inside lines, a byte-order mark.
    text = "\ufeffThe Time\r\nMachine, by H.G.\x0cWells\rChapter 1\n\nx\u2028y  \n  Zz\n"
    path = tmp_path / "book.txt"
    path.write_bytes(text.encode("utf-8"))
    corpus = load_corpus(str(path), strip_boilerplate=False, max_tokens=5, val_tokens=5)
    expected = _seed_pipeline(path)
    assert "".join(expected) == "the timemachine by h g wellschapterx yzz"
    assert corpus.vocab.decode(corpus.tokens.tolist()) == "".join(expected)


def test_load_corpus_rejects_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 ".encode("latin-1") * 100)
    with pytest.raises(HarnessError, match="not UTF-8"):
        load_corpus(str(path), max_tokens=10, val_tokens=10)


def test_a_text_in_another_script_is_refused_with_what_the_cleaning_keeps(tmp_path):
    path = tmp_path / "ru.txt"
    path.write_text("\u041c\u0430\u0448\u0438\u043d\u0430 \u0432\u0440\u0435\u043c\u0435\u043d\u0438\n" * 50,
                    encoding="utf-8")
    with pytest.raises(HarnessError, match=r"no letters A-Z in it: the cleaning keeps only the letters A-Z "
                                           r"\(lower-cased\) and spaces, so an empty text or one in another script"):
        load_corpus(str(path), max_tokens=10, val_tokens=10)


# --- Gutenberg boilerplate ------------------------------------------------------------------------------

MINI_GUTENBERG = """\ufeffThe Project Gutenberg eBook of The Mini Machine
This ebook is for the use of anyone anywhere.
*** START OF THE PROJECT GUTENBERG EBOOK THE MINI MACHINE ***
The Mini Machine
Body two, with words.
*** END OF THE PROJECT GUTENBERG EBOOK THE MINI MACHINE ***
Updated editions will replace the previous one.
START: FULL LICENSE
"""


def test_strip_boilerplate_keeps_only_the_lines_between_the_markers():
    assert strip_gutenberg_boilerplate(MINI_GUTENBERG.splitlines()) == ["The Mini Machine", "Body two, with words."]


def test_strip_boilerplate_accepts_the_this_variant_without_a_space():
    lines = ["header", "***START OF THIS PROJECT GUTENBERG EBOOK X ***", "body", "*** END OF THIS PROJECT GUTENBERG"]
    assert strip_gutenberg_boilerplate(lines) == ["body"]


def test_strip_boilerplate_leaves_text_without_markers_unchanged():
    lines = ["The Time Machine", "An Invention", "", "by H. G. Wells"]
    assert strip_gutenberg_boilerplate(lines) == lines
    end_only = ["body", "*** END OF THE PROJECT GUTENBERG EBOOK X ***", "licence"]
    assert strip_gutenberg_boilerplate(end_only) == end_only


def test_load_corpus_strips_boilerplate_only_when_asked(tmp_path):
    path = tmp_path / "mini.txt"
    path.write_text(MINI_GUTENBERG, encoding="utf-8")
    stripped = load_corpus(str(path), strip_boilerplate=True, max_tokens=10, val_tokens=10)
    assert stripped.vocab.decode(stripped.tokens.tolist()) == "the mini machinebody two with words"
    whole = load_corpus(str(path), strip_boilerplate=False, max_tokens=10, val_tokens=10)
    text = whole.vocab.decode(whole.tokens.tolist())
    assert text.startswith("the project gutenberg ebook of the mini machinethis ebook")
    assert text.endswith("start full license")


# --- a large corpus, read whole ------------------------------------------------------------------------

LITERAL_TEXTS = [
    "",
    "\n\n  \r\n",
    "\ufeffThe Time\r\nMachine, by H.G.\x0cWells\rChapter 1\n\nx\u2028y  \n  Zz\n",
    "  lead and trail  ",
    "caf\u00e9 na\u00efve \u0436\u0443\u043a -- 42\n\t\u00c9t\u00e9\n",
    "\u0416\u0443\u043a \u4e2d\u6587\n",  # nothing the cleaning keeps
    MINI_GUTENBERG,
    MINI_GUTENBERG.replace("\n", "\r\n"),
    "x\n*** END OF THE PROJECT GUTENBERG X\ny\n*** START OF THE PROJECT GUTENBERG X\nbody\nmore",
    "h\n\ufeff\ufeff***START OF THIS PROJECT GUTENBERG\n*** END OF THIS PROJECT GUTENBERG\nafter",
    "h\n*** START OF THE PROJECT GUTENBERG X",
    "*** start of the project gutenberg x\nlower case markers\n*** end of the project gutenberg\n",
]


def _line_path(path: Path, strip: bool) -> list[str]:
    """Tokens as the seed's line by line cleaning gives them (the reference)."""
    return tokenize_chars(clean_lines(read_corpus_lines(path, strip)))


@pytest.mark.parametrize("block", [corpus_module.CLEAN_BLOCK, 1, 7])
def test_the_whole_text_path_gives_the_seeds_tokens_vocabulary_and_ids(block, tmp_path, monkeypatch):
    # Small blocks put block ends inside every kind of line, as a large file does.
    monkeypatch.setattr(corpus_module, "CLEAN_BLOCK", block)
    paths = []
    for i, text in enumerate(LITERAL_TEXTS):
        paths.append(tmp_path / f"t{i}.txt")
        paths[-1].write_bytes(text.encode("utf-8"))
    for path in paths + sorted(EMBEDDED_DIR.glob("*.txt")):
        for strip in (True, False):
            tokens = _line_path(path, strip)
            text = read_clean_text(path, strip)
            assert text == "".join(tokens), (path.name, strip)
            old, new = Vocab(tokens), Vocab(text)
            assert new.idx_to_token == old.idx_to_token and new.token_freqs == old.token_freqs
            assert list(new.encode_ascii(text)) == old.encode(tokens)


def test_gutenberg_35_loads_the_vocabulary_and_ids_the_committed_results_used():
    tokens = _line_path(EMBEDDED_DIR / "pg35.txt", True)
    vocab = Vocab(tokens)
    corpus = load_corpus("gutenberg-35", max_tokens=10_000, val_tokens=5_000)
    assert corpus.vocab.idx_to_token == vocab.idx_to_token
    assert torch.equal(corpus.tokens, torch.tensor(vocab.encode(tokens), dtype=torch.long))
    assert corpus.vocab.idx_to_token[:6] == ["<unk>", " ", "e", "t", "a", "i"]


def test_a_large_corpus_is_read_in_a_few_times_its_size(tmp_path):
    import tracemalloc

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzTHE") for _ in range(rng.randint(1, 9)))
             for _ in range(400)]
    lines = [" ".join(rng.choices(words, k=rng.randint(0, 12))) + rng.choice([".", ",", "", "!"])
             for _ in range(110_000)]
    path = tmp_path / "large.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    size = path.stat().st_size
    assert size > 4_000_000
    tracemalloc.start()
    try:
        corpus = load_corpus(str(path), max_tokens=10_000, val_tokens=5_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Lists of lines and of 1-character tokens took some 15 times the file here; the text read whole, about 4.
    assert peak < 8 * size, f"peak {peak / size:.1f} times the file"
    assert len(corpus.tokens) > 0.9 * size


# --- splits ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_book(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 10, encoding="utf-8")  # 430 tokens
    return path


def test_train_and_val_splits_are_disjoint_and_adjacent(small_book):
    corpus = load_corpus(str(small_book), max_tokens=100, val_tokens=50)
    assert len(corpus.tokens) == 430
    assert torch.equal(corpus.train, corpus.tokens[:100])
    assert torch.equal(corpus.val, corpus.tokens[100:150])
    assert torch.equal(torch.cat([corpus.train, corpus.val]), corpus.tokens[:150])
    assert corpus.train.dtype == corpus.val.dtype == torch.long
    assert corpus.sha256 == hashlib.sha256(small_book.read_bytes()).hexdigest()


def test_a_corpus_too_small_for_the_splits_is_an_error(small_book):
    load_corpus(str(small_book), max_tokens=400, val_tokens=30)  # exactly fits
    with pytest.raises(HarnessError, match="430 tokens"):
        load_corpus(str(small_book), max_tokens=400, val_tokens=31)


def test_an_unknown_corpus_name_is_an_error():
    with pytest.raises(HarnessError, match="neither a known corpus"):
        load_corpus("no-such-corpus-or-file.txt")


# --- minibatch iterators --------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("length, batch_size, num_steps", [(53, 2, 5), (1000, 4, 7), (200, 3, 35)])
def test_sequential_batches_shapes_offsets_and_continuity(length, batch_size, num_steps):
    data = torch.arange(length)
    offsets = set()
    for seed in range(20 * (num_steps + 1)):
        xs, ys = sequential_batches(data, batch_size, num_steps, _gen(seed))
        offset = int(xs[0, 0, 0])
        offsets.add(offset)
        assert 0 <= offset <= num_steps
        row_length = (length - offset - 1) // batch_size
        num_batches = row_length // num_steps
        assert xs.shape == ys.shape == (num_batches, batch_size, num_steps)
        assert torch.equal(ys, xs + 1)  # targets are the inputs shifted by one
        for b in range(batch_size):
            # row b is one contiguous stretch of text, continued from batch to batch
            row_start = offset + b * row_length
            expected = torch.arange(row_start, row_start + num_batches * num_steps).reshape(num_batches, num_steps)
            assert torch.equal(xs[:, b, :], expected)
        assert int(ys.max()) < length
    assert offsets == set(range(num_steps + 1))  # both ends of [0, num_steps] occur


@pytest.mark.parametrize("length, batch_size, num_steps", [(53, 2, 5), (1000, 4, 7)])
def test_random_batches_are_aligned_to_one_offset_and_never_overlap(length, batch_size, num_steps):
    data = torch.arange(length)
    offsets, shuffled = set(), False
    for seed in range(20 * num_steps):
        xs, ys = random_batches(data, batch_size, num_steps, _gen(seed))
        starts = xs[:, :, 0].reshape(-1)
        offset = int(starts.min()) % num_steps
        offsets.add(offset)
        num_batches = ((length - offset - 1) // num_steps) // batch_size
        assert xs.shape == ys.shape == (num_batches, batch_size, num_steps)
        assert torch.equal(ys, xs + 1)
        # each subsequence is a contiguous run starting at offset + k * num_steps
        assert torch.equal(xs, xs[:, :, :1] + torch.arange(num_steps))
        assert bool(((starts - offset) % num_steps == 0).all())
        assert len(set(starts.tolist())) == len(starts)  # no subsequence is used twice, none overlap
        assert int(ys.max()) < length
        shuffled |= starts.tolist() != sorted(starts.tolist())
    assert offsets == set(range(num_steps))  # [0, num_steps - 1]
    assert shuffled


@pytest.mark.parametrize("batcher", [sequential_batches, random_batches])
def test_batches_depend_on_the_generator_seed_only(batcher):
    data = torch.arange(2000)
    torch.manual_seed(1)
    random.seed(1)
    first = batcher(data, 4, 7, _gen(123))
    torch.manual_seed(99)
    random.seed(99)
    torch.rand(17)  # move the global generator on
    second = batcher(data, 4, 7, _gen(123))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    others = [batcher(data, 4, 7, _gen(seed))[0] for seed in range(5)]
    assert any(x.shape != first[0].shape or not torch.equal(x, first[0]) for x in others)


def test_one_generator_gives_a_new_order_each_epoch():
    generator = _gen(0)
    epochs = [random_batches(torch.arange(2000), 4, 7, generator)[0] for _ in range(3)]
    assert not (torch.equal(epochs[0], epochs[1]) and torch.equal(epochs[1], epochs[2]))


# --- the real corpora -----------------------------------------------------------------------------------

# The copies shipped with the package (harness/corpora/), checked against these published checksums.
D2L_SHA256 = "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516"
PG35_SHA256 = "0359cedc583179f3e417605eb36efc1dc97b042a76ea67fac1e8c11109b0e2c9"


def test_the_d2l_corpus_loads_as_in_the_book():
    corpus = load_corpus("d2l", max_tokens=10_000, val_tokens=5_000)
    assert Path(corpus.path) == EMBEDDED_DIR / "timemachine.txt"
    # Dive into Deep Learning, section 8.2: 170,580 character tokens, a vocabulary of 28
    assert len(corpus.tokens) == 170_580
    assert corpus.vocab.idx_to_token[:3] == ["<unk>", " ", "e"]
    assert len(corpus.vocab) == 28
    assert corpus.sha256 == hashlib.sha256(Path(corpus.path).read_bytes()).hexdigest() == D2L_SHA256
    # lines are joined without a separator, as in the seed
    assert corpus.vocab.decode(corpus.train[:33].tolist()) == "the time machine by h g wellsithe"


def test_the_gutenberg_corpus_loads_with_and_without_its_boilerplate():
    stripped = load_corpus("gutenberg-35", strip_boilerplate=True)
    whole = load_corpus("gutenberg-35", strip_boilerplate=False)
    assert Path(whole.path) == EMBEDDED_DIR / "pg35.txt"
    assert whole.sha256 == stripped.sha256 == hashlib.sha256(Path(whole.path).read_bytes()).hexdigest() == PG35_SHA256
    assert len(stripped.vocab) == len(whole.vocab) == 28
    assert len(stripped.tokens) < len(whole.tokens)
    # off reproduces the seed: its first 10,000 characters include Gutenberg's header
    assert whole.vocab.decode(whole.train[:50].tolist()).startswith("the project gutenberg ebook of the time machine")
    assert "gutenberg" in whole.vocab.decode(whole.train.tolist())
    assert "gutenberg" not in stripped.vocab.decode(stripped.train.tolist())
    assert whole.vocab.decode(whole.tokens.tolist()) == "".join(_seed_pipeline(Path(whole.path)))
