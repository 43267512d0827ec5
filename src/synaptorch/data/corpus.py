"""Corpora: named ones, files and folders, tokenized once into a memory-mapped cache.

Names:
    pydoc        the Python reference text shipped with CPython (`pydoc_data.topics`); works
                 offline everywhere, the embedded default.
    shakespeare  tiny Shakespeare, downloaded once into the cache with its sha256 checked.
Anything else is a path to a text file or to a folder of text files (all files below it, in
sorted order, hidden ones skipped, joined by newlines).

Split: the first `1 - val_fraction` of the tokens train, the rest validate. Nothing is shuffled,
so the split only depends on the corpus, the tokenizer and the fraction.
"""

from __future__ import annotations

import hashlib
import os
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synaptorch.data.tokenizer import ByteTokenizer, HFTokenizer
from synaptorch.errors import DataError
from synaptorch.io import atomic_write_bytes

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
NAMED_CORPORA = ("pydoc", "shakespeare")
COUNT_FORMAT = "<Q"  # the little-endian uint64 token count heading a cache file
COUNT_BYTES = struct.calcsize(COUNT_FORMAT)


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


def read_corpus(spec: str | Path) -> bytes:
    """The raw bytes of a named corpus, a file, or a folder of text files."""
    if str(spec) == "pydoc":
        data = pydoc_text()
    elif str(spec) == "shakespeare":
        data = shakespeare_text()
    else:
        path = Path(spec)
        if path.is_file():
            data = path.read_bytes()
        elif path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            data = b"\n".join(p.read_bytes() for p in files)
        else:
            raise DataError(f"corpus not found: {spec} (a file, a folder, or one of {', '.join(NAMED_CORPORA)})")
    if not data.strip():
        raise DataError(f"corpus {spec} is empty")
    return data


def _tokens_dtype(vocab_size: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise DataError(f"vocabulary of {vocab_size} symbols is too large")


def _tokenize(data: bytes, tokenizer: ByteTokenizer | HFTokenizer, dtype: np.dtype) -> np.ndarray:
    if isinstance(tokenizer, ByteTokenizer):
        return np.frombuffer(data, dtype=np.uint8)
    text = data.decode("utf-8", errors="replace")
    # Chunks end at line breaks so no word is cut, and memory stays bounded on large corpora.
    lines = text.splitlines(keepends=True)
    chunks, current, size = [], [], 0
    for line in lines:
        current.append(line)
        size += len(line)
        if size >= 1 << 20:
            chunks.append("".join(current))
            current, size = [], 0
    if current:
        chunks.append("".join(current))
    ids = [np.asarray(chunk_ids, dtype=dtype) for chunk_ids in tokenizer.encode_batch(chunks)]
    return np.concatenate(ids) if ids else np.zeros(0, dtype=dtype)


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


def load_corpus(spec: str | Path, tokenizer: ByteTokenizer | HFTokenizer, val_fraction: float = 0.1) -> Corpus:
    """Read, tokenize (once, cached by content and tokenizer) and memory-map a corpus."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    data = read_corpus(spec)
    digest = hashlib.sha256(data).hexdigest()
    dtype = _tokens_dtype(tokenizer.vocab_size)
    key = hashlib.sha256(f"{digest}|{tokenizer.identity()}".encode()).hexdigest()[:32]
    path = cache_dir() / "tokens" / f"{key}.{dtype.name}"
    # The file starts with its token count: a cache whose size disagrees with it (a crash, a full
    # disk, a truncated copy) is built again rather than read as a shorter corpus.
    if _cached_count(path, dtype) is None:
        tokens = _tokenize(data, tokenizer, dtype)
        atomic_write_bytes(path, struct.pack(COUNT_FORMAT, len(tokens)) + tokens.tobytes())
    if _cached_count(path, dtype) == 0:
        raise DataError(f"corpus {spec} gives no tokens")
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=COUNT_BYTES)
    return Corpus(str(spec), tokens, len(data), digest, val_fraction)
