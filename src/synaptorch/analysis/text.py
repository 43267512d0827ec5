"""A text as tokens that remember where they came from, and concepts as sets of its tokens.

Every token keeps the span of characters it was cut from, so a concept given as words or a
regular expression over the text marks exactly the tokens that overlap a match, for byte-level
and BPE tokenizers alike, and snippets around a token are cut from the text itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from synaptorch.data.tokenizer import ByteTokenizer, HFTokenizer
from synaptorch.errors import ConfigError, DataError

# Sentences end at . ! ? followed by white space, and at line ends: in wrapped prose a line is
# about a sentence long, and lists, code and verse have no full stops.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


@dataclass
class EncodedText:
    text: str
    ids: np.ndarray  # (n,) int64
    starts: np.ndarray  # (n,) first character of each token
    ends: np.ndarray  # (n,) one past its last character

    def __len__(self) -> int:
        return len(self.ids)

    def snippet(self, position: int, width: int = 24) -> str:
        """The text around token `position`, the token itself in brackets, on one line."""
        start, end = int(self.starts[position]), int(self.ends[position])
        left = self.text[max(0, start - width) : start]
        right = self.text[end : end + width]
        return _one_line(f"{left}[{self.text[start:end]}]{right}")


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def encode_text(tokenizer: ByteTokenizer | HFTokenizer, text: str) -> EncodedText:
    if not text.strip():
        raise DataError("the text is empty")
    if isinstance(tokenizer, ByteTokenizer):
        # A character of k UTF-8 bytes gives k tokens that all point back to it.
        widths = np.fromiter((len(ch.encode("utf-8")) for ch in text), dtype=np.int64, count=len(text))
        starts = np.repeat(np.arange(len(text), dtype=np.int64), widths)
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        return EncodedText(text, ids, starts, starts + 1)
    ids, offsets = tokenizer.encode_with_offsets(text)
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    return EncodedText(text, np.asarray(ids, dtype=np.int64), spans[:, 0], spans[:, 1])


def concept_pattern(words: list[str] | None = None, regex: str | None = None) -> re.Pattern:
    """A concept is a list of whole words (matched case-insensitively) or one regular expression."""
    if bool(words) == bool(regex):
        raise ConfigError("give a concept as words or as a regular expression, not both and not neither")
    if words:
        words = [w.strip() for w in words if w.strip()]
        if not words:
            raise ConfigError("the concept has no words")
        return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    try:
        return re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"bad concept regex {regex!r}: {exc}") from None


def concept_mask(encoded: EncodedText, pattern: re.Pattern) -> np.ndarray:
    """(n,) bool: the tokens that overlap a match of pattern."""
    covered = np.zeros(len(encoded.text) + 1, dtype=np.int64)
    for match in pattern.finditer(encoded.text):
        covered[match.start() + 1 : match.end() + 1] = 1
    prefix = np.cumsum(covered)  # prefix[c] = matched characters before character c
    return prefix[encoded.ends] > prefix[encoded.starts]


def split_held_out(text: str, holdout: float, blocks: int = 20) -> tuple[str, str]:
    """The text cut at line ends into about `blocks` blocks, and spread over them, a share holdout of
    the blocks set aside: (the rest joined, the held-out blocks joined). Spreading them keeps a
    concept that is frequent in one part of the text from landing on one side only."""
    block_chars = max(1, len(text) // blocks)
    pieces, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        size += len(line)
        if size >= block_chars:
            pieces.append("".join(current))
            current, size = [], 0
    if current:
        pieces.append("".join(current))
    held = [math.floor((i + 1) * holdout) > math.floor(i * holdout) for i in range(len(pieces))]
    kept = "".join(p for p, h in zip(pieces, held, strict=True) if not h)
    return kept, "".join(p for p, h in zip(pieces, held, strict=True) if h)


def sentence_spans(encoded: EncodedText, max_tokens: int) -> list[tuple[int, int]]:
    """Token ranges [a, b) of the sentences of the text, each cut to at most max_tokens tokens."""
    bounds, start = [], 0
    for match in SENTENCE_END.finditer(encoded.text):
        bounds.append((start, match.start()))
        start = match.end()
    bounds.append((start, len(encoded.text)))
    spans = []
    for char_start, char_end in bounds:
        # A BPE token often starts with the white space before a sentence (" fires"): it belongs to
        # the sentence that holds its last character.
        a = int(np.searchsorted(encoded.ends, char_start, side="right"))
        b = int(np.searchsorted(encoded.ends, char_end, side="right"))
        if b - a >= 2 and encoded.text[char_start:char_end].strip():
            spans.append((a, min(b, a + max_tokens)))
    return spans
