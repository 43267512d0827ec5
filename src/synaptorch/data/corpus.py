"""Corpora: named ones, files and folders, tokenized once into a memory-mapped cache.

Names:
    pydoc        the Python reference text shipped with CPython (`pydoc_data.topics`); works
                 offline everywhere, the embedded default.
    pystdlib     the Python source of CPython's own standard library (its .py files, tests and
                 site-packages left out, in sorted order); offline everywhere too, about 12 MB.
    shakespeare  tiny Shakespeare, downloaded once into the cache with its sha256 checked.
Anything else is a path to a text file or to a folder of text files (all files below it, in
sorted order, hidden ones skipped, joined by newlines).

A corpus is streamed, never held in memory: one pass hashes it (the cache key needs the
digest), and a second pass, only when its cache is missing or damaged, tokenizes it into the
cache file. Memory stays bounded whatever the corpus's size.

Split: the first `1 - val_fraction` of the tokens train, the rest validate. Nothing is shuffled,
so the split only depends on the corpus, the tokenizer and the fraction.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import struct
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synaptorch.data.tokenizer import ByteTokenizer, HFTokenizer
from synaptorch.errors import DataError
from synaptorch.io import atomic_file, atomic_write_bytes, recover_folder

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
NAMED_CORPORA = ("pydoc", "pystdlib", "shakespeare")
# Folders of the standard library that are not its source: its test suites and installed packages.
STDLIB_SKIPPED = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__"})
COUNT_FORMAT = "<Q"  # the little-endian uint64 token count heading a cache file
COUNT_BYTES = struct.calcsize(COUNT_FORMAT)
READ_BYTES = 8 << 20  # a corpus file is read in pieces of this size
# A tokenizer.json sees text in pieces that end at line breaks, so no word is cut, and encodes a
# few pieces at once, in parallel. Each piece in flight costs `tokenizers` some 200 MB: four keep
# the peak near 1 GiB however large the corpus.
TEXT_CHARS = 1 << 20
ENCODE_BATCH = 4
PROGRESS_BYTES = 64 << 20  # a smaller corpus tokenizes in seconds: no progress bar
# Every line boundary of `str.splitlines`: a decoded chunk with none of them is held back without
# splitting again the text held back before it.
LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def cache_dir() -> Path:
    """`$SYNAPTORCH_CACHE`, else `$XDG_CACHE_HOME/synaptorch`, else `~/.cache/synaptorch`."""
    if os.environ.get("SYNAPTORCH_CACHE"):
        return Path(os.environ["SYNAPTORCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synaptorch"


def corpus_location(spec: str | Path) -> str:
    """How a run records its corpus: a named corpus by name, a path as an absolute path."""
    return str(spec) if str(spec) in NAMED_CORPORA else str(Path(spec).resolve())


def pydoc_text() -> bytes:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics)).encode("utf-8")


def stdlib_source_files() -> list[Path]:
    """The .py files of the running Python's standard library, in sorted order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if not STDLIB_SKIPPED.intersection(p.relative_to(root).parts[:-1]))


def shakespeare_text() -> bytes:
    path = cache_dir() / "tinyshakespeare.txt"
    if not path.exists():
        try:
            with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(
                f"cannot download tiny Shakespeare ({exc}); offline? pass a local copy with --data PATH"
            ) from None
        if hashlib.sha256(data).hexdigest() != SHAKESPEARE_SHA256:
            raise DataError("downloaded tiny Shakespeare has the wrong sha256; not cached")
        atomic_write_bytes(path, data)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != SHAKESPEARE_SHA256:
        raise DataError(f"cached {path} has the wrong sha256; delete it to download again")
    return data


def _corpus_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _read_file(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(READ_BYTES):
            yield chunk


def _joined(paths: list[Path]) -> Iterator[bytes]:
    for i, path in enumerate(paths):
        if i:
            yield b"\n"
        yield from _read_file(path)


def _corpus_pieces(spec: str | Path) -> Iterator[bytes]:
    if str(spec) == "pydoc":
        yield pydoc_text()
    elif str(spec) == "shakespeare":
        yield shakespeare_text()
    elif str(spec) == "pystdlib":
        yield from _joined(stdlib_source_files())
    elif Path(spec).is_file():
        yield from _read_file(Path(spec))
    elif Path(spec).is_dir():
        yield from _joined(_corpus_files(Path(spec)))
    else:
        raise DataError(f"corpus not found: {spec} (a file, a folder, or one of {', '.join(NAMED_CORPORA)})")


def iter_corpus(spec: str | Path) -> Iterator[bytes]:
    """The raw bytes of a named corpus, a file, or a folder of text files, in pieces of at most
    `READ_BYTES` (a named corpus, a few MB, comes whole). Their concatenation is the corpus.

    A corpus of nothing but whitespace raises DataError once it has been read to its end.
    """
    blank = True
    for chunk in _corpus_pieces(spec):
        blank = blank and not chunk.strip()
        yield chunk
    if blank:
        raise DataError(f"corpus {spec} is empty")


def read_corpus(spec: str | Path) -> bytes:
    """The raw bytes of a named corpus, a file, or a folder of text files, in memory."""
    return b"".join(iter_corpus(spec))


def _tokens_dtype(vocab_size: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise DataError(f"vocabulary of {vocab_size} symbols is too large")


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines, with their line breaks, of the text of `chunks` (UTF-8, errors replaced): those of
    `str.splitlines(keepends=True)` of the whole text decoded at once, wherever the chunks were cut."""
    # The incremental decoder holds back a character cut between chunks. The last line decoded is
    # held back too: the next chunk may continue it, or turn its "\r" into "\r\n".
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    held: list[str] = []
    for chunk in chunks:
        text = decoder.decode(chunk)
        if LINE_BREAK.search(text) is None:
            held.append(text)
            continue
        *lines, last = ("".join(held) + text).splitlines(keepends=True)
        held = [last]
        yield from lines
    yield from ("".join(held) + decoder.decode(b"", final=True)).splitlines(keepends=True)


def _text_pieces(chunks: Iterable[bytes]) -> Iterator[str]:
    """The text of `chunks` in pieces of whole lines, each the fewest lines that reach `TEXT_CHARS`
    characters (the last piece may be shorter)."""
    piece: list[str] = []
    size = 0
    for line in _lines(chunks):
        piece.append(line)
        size += len(line)
        if size >= TEXT_CHARS:
            yield "".join(piece)
            piece, size = [], 0
    if piece:
        yield "".join(piece)


def _tokenize(chunks: Iterable[bytes], tokenizer: ByteTokenizer | HFTokenizer, dtype: np.dtype) -> Iterator[np.ndarray]:
    """The tokens of the corpus whose bytes are `chunks`, a few at a time."""
    if isinstance(tokenizer, ByteTokenizer):
        for chunk in chunks:
            yield np.frombuffer(chunk, dtype=np.uint8)
        return
    batch: list[str] = []
    for piece in _text_pieces(chunks):
        batch.append(piece)
        if len(batch) == ENCODE_BATCH:
            yield from (np.asarray(ids, dtype=dtype) for ids in tokenizer.encode_batch(batch))
            batch = []
    if batch:
        yield from (np.asarray(ids, dtype=dtype) for ids in tokenizer.encode_batch(batch))


def _cached_count(path: Path, dtype: np.dtype) -> int | None:
    """The token count of a complete cache file, None for a missing or damaged one."""
    try:
        with open(path, "rb") as f:
            (count,) = struct.unpack(COUNT_FORMAT, f.read(COUNT_BYTES))
    except (FileNotFoundError, struct.error):
        return None
    return count if path.stat().st_size == COUNT_BYTES + count * dtype.itemsize else None


@dataclass
class Corpus:
    """Tokens of a corpus in a read-only memory map, with the deterministic split."""

    name: str
    tokens: np.ndarray  # memory-mapped, 1-D
    n_bytes: int
    sha256: str
    val_fraction: float

    @property
    def split_index(self) -> int:
        return len(self.tokens) - round(len(self.tokens) * self.val_fraction)

    def split(self, which: str) -> np.ndarray:
        if which == "train":
            return self.tokens[: self.split_index]
        if which == "val":
            return self.tokens[self.split_index :]
        if which == "all":
            return self.tokens
        raise ValueError(f"unknown split {which!r}")

    @property
    def tokens_per_byte(self) -> float:
        return len(self.tokens) / self.n_bytes


def _digest(spec: str | Path) -> tuple[str, int]:
    """The sha256 and the size in bytes of a corpus."""
    sha = hashlib.sha256()
    n_bytes = 0
    for chunk in iter_corpus(spec):
        sha.update(chunk)
        n_bytes += len(chunk)
    return sha.hexdigest(), n_bytes


def _build_cache(
    path: Path, spec: str | Path, tokenizer: ByteTokenizer | HFTokenizer, dtype: np.dtype, digest: str, n_bytes: int
) -> None:
    """Tokenize the corpus into the cache file `path`, through a fsynced temporary file and a rename."""
    recover_folder(path)  # an earlier build that crashed may have left gigabytes behind
    sha = hashlib.sha256()
    bar = tqdm(
        total=n_bytes, unit="B", unit_scale=True, desc="tokenizing", file=sys.stderr, disable=n_bytes <= PROGRESS_BYTES
    )
    with bar, atomic_file(path) as f:

        def read() -> Iterator[bytes]:
            for chunk in iter_corpus(spec):
                sha.update(chunk)
                bar.update(len(chunk))
                yield chunk

        # The count is known only at the end: its room is kept here and it is written last.
        f.write(bytes(COUNT_BYTES))
        count = 0
        for tokens in _tokenize(read(), tokenizer, dtype):
            f.write(tokens)
            count += len(tokens)
        # The key is the digest of the first pass: a corpus edited since would be cached under
        # the key of content it no longer has.
        if sha.hexdigest() != digest:
            raise DataError(f"corpus {spec} changed while it was being tokenized; run again")
        f.seek(0)
        f.write(struct.pack(COUNT_FORMAT, count))


def load_corpus(
    spec: str | Path, tokenizer: ByteTokenizer | HFTokenizer, val_fraction: float = 0.1, build: bool = True
) -> Corpus:
    """Read, tokenize (once, cached by content and tokenizer) and memory-map a corpus.

    With `build` False a missing or damaged token cache is a DataError instead of being built:
    processes sharing a corpus let one build it while the others wait, then load it this way.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    digest, n_bytes = _digest(spec)
    dtype = _tokens_dtype(tokenizer.vocab_size)
    key = hashlib.sha256(f"{digest}|{tokenizer.identity()}".encode()).hexdigest()[:32]
    path = cache_dir() / "tokens" / f"{key}.{dtype.name}"
    # The file starts with its token count: a cache whose size disagrees with it (a crash, a full
    # disk, a truncated copy) is built again rather than read as a shorter corpus.
    if _cached_count(path, dtype) is None:
        if not build:
            raise DataError(f"token cache of corpus {spec} is not built yet")
        _build_cache(path, spec, tokenizer, dtype, digest, n_bytes)
    if _cached_count(path, dtype) == 0:
        raise DataError(f"corpus {spec} gives no tokens")
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=COUNT_BYTES)
    return Corpus(str(spec), tokens, n_bytes, digest, val_fraction)
