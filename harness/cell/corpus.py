"""Corpus text: lookup and download of the named corpora, the seed's cleaning and tokenization, and the
vocabulary. Torch-free, so that the report and other read-only commands can read a run's text; the tensors
(splits and minibatches) are ``harness.cell.batches``.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


from harness.errors import DownloadError, HarnessError

DATA_DIR_ENV = "HARNESS_DATA_DIR"
CACHE_DIR_ENV = "HARNESS_CACHE_DIR"


# The named corpora ship with the package (public domain, about 0.4 MB together), so that a machine needs
# neither the network nor a data folder; each copy is checked against its SHA-256 whenever it is read.
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "corpora"


@dataclass(frozen=True)
class CorpusSource:
    name: str
    filename: str
    url: str
    sha1: str | None = None  # a file in $HARNESS_DATA_DIR must match it; None: any copy is accepted there
    sha256: str | None = None  # of the shipped copy; a cached or downloaded copy must match it too
    embedded: bool = False  # shipped in EMBEDDED_DIR


CORPORA = {
    "gutenberg-35": CorpusSource(
        "gutenberg-35", "pg35.txt", "https://www.gutenberg.org/cache/epub/35/pg35.txt",
        sha256="0359cedc583179f3e417605eb36efc1dc97b042a76ea67fac1e8c11109b0e2c9",
        embedded=True,
    ),
    "d2l": CorpusSource(
        "d2l",
        "timemachine.txt",
        "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
        sha1="090b5e7e70c295757f55df93cb0a180b9691891a",
        sha256="8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516",
        embedded=True,
    ),
}


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnn-harness"


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _offline_hint(source: CorpusSource) -> str:
    return f"to run offline, put {source.filename} in a folder and set {DATA_DIR_ENV} to it"


def _verified_cache(path: Path, source: CorpusSource) -> bool:
    if not path.is_file():
        return False
    if source.sha256 is not None:
        return _sha256(path) == source.sha256
    return source.sha1 is None or _sha1(path) == source.sha1


def resolve_corpus(name_or_path: str, cache_dir: Path | None = None, offline: bool = False,
                   **download_options) -> Path:
    """Find a corpus file. A named corpus: $HARNESS_DATA_DIR (an explicit choice, e.g. a newer Gutenberg
    release), then the copy shipped with the package, then the cache folder, then (unless ``offline``) a
    download into the cache. An http(s) URL: the cache, else a download into it. Anything else: a file
    path, or a file of that name in $HARNESS_DATA_DIR.
    ``offline``: a corpus found nowhere is a HarnessError, nothing is fetched."""
    source = CORPORA.get(name_or_path)
    data_dir = os.environ.get(DATA_DIR_ENV)
    if source is None and re.match(r"https?://", name_or_path):
        return _resolve_url(name_or_path, cache_dir, offline, **download_options)
    if source is None:
        path = Path(name_or_path).expanduser()
        if not path.is_file() and data_dir and not path.is_absolute() and (Path(data_dir) / path).is_file():
            path = Path(data_dir) / path
        if not path.is_file():
            known = ", ".join(CORPORA)
            raise HarnessError(f"corpus {name_or_path!r} is neither a known corpus ({known}) nor a file")
        return path
    if data_dir:
        candidate = Path(data_dir) / source.filename
        if candidate.is_file():
            if source.sha1 and _sha1(candidate) != source.sha1:
                raise HarnessError(
                    f"{candidate}: SHA-1 {_sha1(candidate)} does not match {source.sha1} for corpus {source.name}"
                )
            return candidate
    if source.embedded:
        shipped = EMBEDDED_DIR / source.filename
        if shipped.is_file():
            if source.sha256 and _sha256(shipped) != source.sha256:
                raise HarnessError(f"{shipped}: SHA-256 {_sha256(shipped)} does not match {source.sha256} for "
                                   f"corpus {source.name}: the installed package is damaged; reinstall it")
            return shipped
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache / source.filename
    if _verified_cache(cached, source):
        return cached
    if offline:
        raise HarnessError(f"corpus {source.name}: {source.filename} is neither in ${DATA_DIR_ENV} nor in "
                           f"the cache {cache} (not downloaded)")
    return download(source.url, cached, sha1=None if source.sha256 else source.sha1, sha256=source.sha256,
                    hint=_offline_hint(source), **download_options)


def _resolve_url(url: str, cache_dir: Path | None, offline: bool, **download_options) -> Path:
    """A corpus given by URL: downloaded once into the cache, under a name unique to the URL. There is no
    published checksum to check it against; the SHA-256 of what was used is recorded with every result."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rstrip("/").rsplit("/", 1)[-1])[-60:] or "corpus"
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{tail}"
    if cached.is_file():
        return cached
    if offline:
        raise HarnessError(f"corpus {url}: not in the cache {cache} (not downloaded)")
    hint = f"to run offline, save it as a file and pass its path, or put it in ${DATA_DIR_ENV} and name it"
    return download(url, cached, hint=hint, **download_options)


class _Transient(Exception):
    """A failure worth another attempt."""


def download(
    url: str,
    dest: Path,
    sha1: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    hint: str = "",
    sha256: str | None = None,
) -> Path:
    """Stream ``url`` into a temporary file beside ``dest``; rename it into place only when complete and
    verified. Transient failures (connection errors, timeouts, 5xx, truncated bodies) are retried."""
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = f"; {hint}" if hint else ""
    last_error = "no attempt made"
    for attempt in range(1, retries + 1):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = hashlib.sha1()
                digest256 = hashlib.sha256()
                received = 0
                with requests.get(url, stream=True, timeout=timeout) as response:
                    if response.status_code >= 400:
                        last_error = f"HTTP {response.status_code} from {url}"
                        if response.status_code < 500:
                            raise DownloadError(f"download failed: {last_error}{suffix}")
                        raise _Transient(last_error)
                    expected = response.headers.get("Content-Length")
                    for chunk in response.iter_content(chunk_size=1 << 16):
                        out.write(chunk)
                        digest.update(chunk)
                        digest256.update(chunk)
                    # Content-Length counts the bytes on the wire, which are compressed when the
                    # server sends Content-Encoding: gzip; the chunks above are already decoded.
                    received = response.raw.tell()
                if expected is not None and received != int(expected):
                    raise _Transient(f"truncated body from {url}: {received} of {expected} bytes")
                if sha1 is not None and digest.hexdigest() != sha1:
                    raise DownloadError(
                        f"download failed: checksum mismatch for {url}: SHA-1 {digest.hexdigest()}, "
                        f"expected {sha1}{suffix}"
                    )
                if sha256 is not None and digest256.hexdigest() != sha256:
                    raise DownloadError(
                        f"download failed: checksum mismatch for {url}: SHA-256 {digest256.hexdigest()}, "
                        f"expected {sha256}{suffix}"
                    )
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
            return dest
        except _Transient as exc:
            last_error = str(exc)
        except requests.RequestException as exc:
            last_error = f"{type(exc).__name__} fetching {url}: {exc}"
        finally:
            if tmp.exists():
                tmp.unlink()
        if attempt < retries:
            time.sleep(backoff * attempt)
    raise DownloadError(f"download failed after {retries} attempts: {last_error}{suffix}")


# --- text ---------------------------------------------------------------------------------------------

_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG", re.IGNORECASE)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG", re.IGNORECASE)


def strip_gutenberg_boilerplate(lines: list[str]) -> list[str]:
    """Keep the lines between Gutenberg's START and END markers; text without markers is returned as is."""
    start = next((i for i, line in enumerate(lines) if _START.match(line.lstrip("\ufeff"))), None)
    end = next((i for i, line in enumerate(lines) if _END.match(line)), None)
    if start is None:
        return lines
    return lines[start + 1 : end if end is not None and end > start else len(lines)]


def clean_lines(lines: list[str]) -> list[str]:
    """The seed's cleaning: runs of non-letters become one space, strip, lower case, drop empty lines."""
    cleaned = [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in lines]
    return [line for line in cleaned if line]


def tokenize_chars(lines: list[str]) -> list[str]:
    """Character tokens of all lines, flattened (the seed joins lines without a separator)."""
    return [ch for line in lines for ch in line]


# The same cleaning on the whole text at once, for training: lists of lines and of 1-character strings
# cost some 25 times a large file's size. Within a line a run of non-letters is one space; a run that
# holds a line end is nothing, since the seed strips each line and joins the lines without a separator.
_NON_LETTERS = re.compile("[^A-Za-z\n]+")
_LINE_BREAKS = re.compile(" ?\n[ \n]*")


CLEAN_BLOCK = 1 << 20  # characters cleaned at once: re.sub holds a piece per word of its input


def clean_text(text: str) -> str:
    """``"".join(clean_lines(text.split("\n")))``, as one string: the tokens of the text, in order. The
    text is cleaned in blocks of whole lines, which the seed's per-line cleaning makes exact."""
    pieces, start = [], 0
    while start < len(text):
        stop = text.find("\n", start + CLEAN_BLOCK)
        stop = len(text) if stop == -1 else stop + 1
        block = _NON_LETTERS.sub(" ", text[start:stop])
        pieces.append(_LINE_BREAKS.sub("", block).strip(" ").lower())
        start = stop
    return "".join(pieces)


class Vocab:
    """Tokens by descending frequency, ties in alphabetical order; index 0 is ``<unk>``."""

    UNK = "<unk>"

    def __init__(self, tokens: list[str] | str):
        # A string of tokens is counted by str.count, one pass per distinct character, in C.
        counts = ({t: tokens.count(t) for t in set(tokens)} if isinstance(tokens, str)
                  else collections.Counter(tokens))
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        self.idx_to_token = [self.UNK] + [token for token, _ in ordered]
        self.token_to_idx = {token: i for i, token in enumerate(self.idx_to_token)}
        self.token_freqs = ordered

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def encode(self, tokens) -> list[int]:
        return [self.token_to_idx.get(t, 0) for t in tokens]

    def encode_ascii(self, text: str) -> bytearray:
        """``encode(text)`` as one byte per token (for a vocabulary of at most 256 entries), in C:
        the cleaned text is ASCII, and its bytes are translated to their ids."""
        if len(self) > 256 or not text.isascii():
            raise ValueError("encode_ascii needs ASCII text and at most 256 tokens")
        table = bytearray(256)  # 0: <unk>
        for token, index in self.token_to_idx.items():
            if len(token) == 1 and token.isascii():
                table[ord(token)] = index
        return bytearray(text, "ascii").translate(table)

    def decode(self, indices) -> str:
        return "".join(self.idx_to_token[i] for i in indices)


def _read_text(path: Path) -> str:
    """A corpus file's text with every line end as \\n: UTF-8, lines as the seed's readlines() splits them
    (only \\n, \\r\\n and \\r end a line; str.splitlines also splits at form feeds and other separators,
    which the seed's cleaning turns into a space inside a line instead)."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessError(f"corpus {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    del raw
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_corpus_lines(path: Path, strip_boilerplate: bool) -> list[str]:
    """The lines of a corpus file as training reads them (before cleaning): UTF-8, split as the seed's
    readlines() splits, Gutenberg's header and footer left out when ``strip_boilerplate``."""
    lines = _read_text(path).split("\n")
    return strip_gutenberg_boilerplate(lines) if strip_boilerplate else lines


_START_LINE = re.compile("^\ufeff*" + _START.pattern[1:], re.IGNORECASE | re.MULTILINE)
_END_LINE = re.compile(_END.pattern, re.IGNORECASE | re.MULTILINE)


def read_clean_text(path: Path, strip_boilerplate: bool) -> str:
    """``"".join(clean_lines(read_corpus_lines(path, strip_boilerplate)))`` without the lists: the text
    is cut and cleaned whole, so that a large corpus costs a few times its size."""
    text = _read_text(path)
    start = _START_LINE.search(text) if strip_boilerplate else None
    if start is not None:  # as strip_gutenberg_boilerplate: the lines after START, before the first END
        end = _END_LINE.search(text)
        body_start = text.find("\n", start.end())
        body_end = end.start() if end is not None and end.start() > start.start() else len(text)
        text = text[body_start:body_end] if body_start != -1 else ""
    return clean_text(text)


def training_pieces(tokens: list, max_tokens: int, val_tokens: int, train_text: str = "first",
                    select_tokens: int = 0) -> list[list]:
    """The training text of a split as pieces of ``tokens`` (a list or a tensor; training reads their
    concatenation, the no-learning baselines count each apart): first, the first ``max_tokens``; book, those
    and the whole ``max_tokens`` chunks after the held-out and selection text, so that training never reads
    them; the remainder shorter than a chunk is left out."""
    pieces = [tokens[:max_tokens]]
    if train_text == "book":
        rest = tokens[max_tokens + val_tokens + select_tokens :]
        pieces.append(rest[: (len(rest) // max_tokens) * max_tokens])
    return [piece for piece in pieces if len(piece)]
