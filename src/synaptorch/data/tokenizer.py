"""Tokenizers: raw bytes by default, or a Hugging Face `tokenizer.json`."""

from __future__ import annotations

import codecs
import hashlib
from pathlib import Path
from typing import Protocol

from synaptorch.errors import DataError

BYTES = "bytes"
# Special tokens (end of text, chat markers) are dropped from decoded text, streamed or not.
SKIP_SPECIAL_TOKENS = True


class Tokenizer(Protocol):
    name: str  # "bytes" or "tokenizer.json"; recorded in checkpoints
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def identity(self) -> str:
        """A string that changes whenever the mapping of text to ids changes."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: 256 symbols, any file works, nothing is unknown."""

    name = BYTES
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        return list(data)

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def identity(self) -> str:
        return BYTES


class HFTokenizer:
    """A `tokenizers` tokenizer loaded from a tokenizer.json file."""

    name = "tokenizer.json"

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer as _Tokenizer

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"tokenizer file not found: {self.path}")
        try:
            self._tok = _Tokenizer.from_file(str(self.path))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise DataError(f"cannot read tokenizer {self.path}: {exc}") from None
        self.vocab_size = self._tok.get_vocab_size()
        self._identity = "sha256:" + hashlib.sha256(self.path.read_bytes()).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The ids and, for each, the span [start, end) of characters of text it was cut from."""
        encoding = self._tok.encode(text)
        return encoding.ids, encoding.offsets

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=SKIP_SPECIAL_TOKENS)

    def identity(self) -> str:
        return self._identity


def load_tokenizer(spec: str | Path | None) -> ByteTokenizer | HFTokenizer:
    """`None` or "bytes" gives the byte tokenizer; anything else is a path to tokenizer.json."""
    if spec is None or str(spec) == BYTES:
        return ByteTokenizer()
    return HFTokenizer(spec)


class StreamDecoder:
    """Turns ids into text as they arrive, never printing half a UTF-8 character or BPE merge.

    Bytes go through an incremental UTF-8 decoder. A tokenizer.json goes through `tokenizers`'
    DecodeStream, which decodes only the ids since its last complete piece of text, so a token
    costs the same however long the stream; it holds back text that ends in a replacement
    character, which may be half a character, until the next id. `flush` gives what is still held
    back at the end (the text's own replacement characters among it), from one decode of all ids.
    """

    def __init__(self, tokenizer: ByteTokenizer | HFTokenizer) -> None:
        self.tokenizer = tokenizer
        if isinstance(tokenizer, ByteTokenizer):
            self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        else:
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(skip_special_tokens=SKIP_SPECIAL_TOKENS)
            self._ids: list[int] = []
            self._emitted = 0

    def push(self, token: int) -> str:
        if isinstance(self.tokenizer, ByteTokenizer):
            return self._utf8.decode(bytes([token]))
        self._ids.append(token)
        text = self._stream.step(self.tokenizer._tok, token) or ""
        self._emitted += len(text)
        return text

    def flush(self) -> str:
        if isinstance(self.tokenizer, ByteTokenizer):
            return self._utf8.decode(b"", final=True)
        return self.tokenizer.decode(self._ids)[self._emitted :]
