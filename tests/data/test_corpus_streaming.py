"""Corpora are streamed: read in pieces, hashed and tokenized with bounded memory, giving what the
whole corpus read into memory at once gives."""

import hashlib
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synaptorch.data import corpus as corpus_module
from synaptorch.data.corpus import iter_corpus, load_corpus, read_corpus
from synaptorch.data.tokenizer import ByteTokenizer, HFTokenizer
from synaptorch.errors import DataError

# Multi-byte characters of every UTF-8 length, and each kind of line break `str.splitlines` knows.
WORDS = ("the", "héllo", "wörld", "✓", "🧠", "neuron")
TEXT = "the héllo wörld ✓\r\n🧠 neuron\rthe\u2028wörld🧠\x85héllo\n\n✓ ✓ the\x0cneuron " * 7


def in_memory_pieces(text: str, size: int) -> list[str]:
    """The text pieces of the corpus read whole, as `load_corpus` cut them before it streamed."""
    pieces, current, n = [], [], 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        n += len(line)
        if n >= size:
            pieces.append("".join(current))
            current, n = [], 0
    if current:
        pieces.append("".join(current))
    return pieces


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.fixture
def folder(tmp_path):
    """A folder corpus whose files split multi-byte characters and "\\r\\n" at many offsets."""
    root = tmp_path / "corpus"
    for i, name in enumerate(["b.txt", "a.txt", "sub/c.txt", ".hidden/d.txt", "sub/.e.txt"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        # Leading spaces move the characters to other offsets of the pieces the file is read in.
        (root / name).write_bytes((" " * i + TEXT).encode() + b"\xe2\x9c")  # ending in half a character
    return root


def joined(folder) -> bytes:
    return b"\n".join((folder / name).read_bytes() for name in ("a.txt", "b.txt", "sub/c.txt"))


@given(
    data=st.lists(st.sampled_from([*TEXT, "\ufffd", "\x1c", "\u2029"]), max_size=60).map("".join).map(str.encode)
    | st.binary(max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=8),
    size=st.integers(1, 20),
)
def test_text_pieces_are_those_of_the_whole_text_wherever_it_is_cut(data, cuts, size):
    text = data.decode("utf-8", errors="replace")
    assert list(corpus_module._lines(cut(data, cuts))) == text.splitlines(keepends=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corpus_module, "TEXT_CHARS", size)
        assert list(corpus_module._text_pieces(cut(data, cuts))) == in_memory_pieces(text, size)


@pytest.mark.parametrize("read_bytes", [1, 7, 1 << 20])
def test_folder_streamed_in_small_pieces_gives_the_joined_files(folder, monkeypatch, read_bytes):
    monkeypatch.setattr(corpus_module, "READ_BYTES", read_bytes)
    data = joined(folder)
    pieces = list(iter_corpus(folder))
    assert b"".join(pieces) == data
    assert max(map(len, pieces)) <= read_bytes
    corpus = load_corpus(folder, ByteTokenizer())
    assert (corpus.sha256, corpus.n_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    assert corpus.tokens.tobytes() == data


@pytest.mark.parametrize("read_bytes", [1, 7])
def test_tokenizer_json_ids_do_not_depend_on_where_the_corpus_is_cut(
    folder, tmp_path, monkeypatch, make_word_tokenizer, read_bytes
):
    tokenizer = HFTokenizer(make_word_tokenizer(tmp_path / "tok.json", words=WORDS))
    text = joined(folder).decode("utf-8", errors="replace")
    expected = tokenizer.encode(text)
    assert expected.count(0) == 3  # only the half characters ending the files are unknown
    monkeypatch.setattr(corpus_module, "READ_BYTES", read_bytes)
    monkeypatch.setattr(corpus_module, "TEXT_CHARS", 50)  # many pieces, encoded in several batches
    monkeypatch.setattr(corpus_module, "ENCODE_BATCH", 3)
    assert len(in_memory_pieces(text, 50)) > 2 * 3
    corpus = load_corpus(folder, tokenizer)
    assert corpus.tokens.tolist() == expected
    assert corpus.sha256 == hashlib.sha256(joined(folder)).hexdigest()


def test_named_corpus_streams_whole(monkeypatch):
    monkeypatch.setattr(corpus_module, "READ_BYTES", 7)
    assert b"".join(iter_corpus("pydoc")) == corpus_module.pydoc_text()


def test_whitespace_split_over_many_pieces_is_an_empty_corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module, "READ_BYTES", 3)
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(b" \t\r\n \x0b\x0c" * 5)
    with pytest.raises(DataError, match=f"corpus {tmp_path} is empty"):
        load_corpus(tmp_path, ByteTokenizer())
    (tmp_path / "b.txt").write_bytes(b" \t\r\n x")
    assert read_corpus(tmp_path).endswith(b"x")


def test_without_build_a_missing_cache_is_refused_and_a_built_one_read(corpus, cache_dir, monkeypatch):
    with pytest.raises(DataError, match=r"token cache of corpus .* is not built yet"):
        load_corpus(corpus, ByteTokenizer(), build=False)
    assert not (cache_dir / "tokens").exists()
    built = load_corpus(corpus, ByteTokenizer())
    monkeypatch.setattr(corpus_module, "_tokenize", lambda *args: pytest.fail("tokenized again"))
    read = load_corpus(corpus, ByteTokenizer(), 0.3, build=False)
    assert read.tokens.tobytes() == built.tokens.tobytes() == corpus.read_bytes()
    assert (read.sha256, read.n_bytes, read.val_fraction) == (built.sha256, built.n_bytes, 0.3)


def test_without_build_a_damaged_cache_is_refused(corpus, cache_dir):
    load_corpus(corpus, ByteTokenizer())
    [cached] = (cache_dir / "tokens").iterdir()
    cached.write_bytes(cached.read_bytes()[:-1])
    with pytest.raises(DataError, match="not built yet"):
        load_corpus(corpus, ByteTokenizer(), build=False)


def test_cache_is_written_with_its_count_and_no_temporary_file_left(corpus, cache_dir):
    tokens = load_corpus(corpus, ByteTokenizer()).tokens
    [cached] = (cache_dir / "tokens").iterdir()
    data = cached.read_bytes()
    assert data[: corpus_module.COUNT_BYTES] == np.uint64(len(tokens)).tobytes()
    assert data[corpus_module.COUNT_BYTES :] == corpus.read_bytes()


def test_a_corpus_changed_between_hashing_and_tokenizing_is_not_cached(corpus, cache_dir, monkeypatch):
    n_bytes = corpus.stat().st_size
    monkeypatch.setattr(corpus_module, "_digest", lambda spec: (hashlib.sha256(b"before").hexdigest(), n_bytes))
    with pytest.raises(DataError, match="changed while it was being tokenized"):
        load_corpus(corpus, ByteTokenizer())
    assert list((cache_dir / "tokens").iterdir()) == []


def test_a_crashed_builds_temporary_file_is_removed_by_the_next_build(corpus, cache_dir):
    load_corpus(corpus, ByteTokenizer())
    [cached] = (cache_dir / "tokens").iterdir()
    cached.unlink()
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    leftover = cached.with_name(f".{cached.name}.tmp{dead.pid}")
    leftover.write_bytes(b"half a cache")
    load_corpus(corpus, ByteTokenizer())
    assert list((cache_dir / "tokens").iterdir()) == [cached]


def test_progress_is_shown_only_for_a_large_corpus(corpus, cache_dir, capsys, monkeypatch):
    load_corpus(corpus, ByteTokenizer())
    assert capsys.readouterr() == ("", "")
    [cached] = (cache_dir / "tokens").iterdir()
    cached.unlink()
    monkeypatch.setattr(corpus_module, "PROGRESS_BYTES", corpus.stat().st_size - 1)
    load_corpus(corpus, ByteTokenizer())
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{corpus.stat().st_size / 1000:.2f}k/{corpus.stat().st_size / 1000:.2f}k" in err
    assert "tokenizing: 100%" in err


# ru_maxrss would not do: Linux carries it over an exec, so a child of pytest starts at pytest's
# peak. VmHWM is the peak of the process's own address space, in KiB.
MEASURE = """
import re, sys
from pathlib import Path
from synaptorch.data.corpus import load_corpus
from synaptorch.data.tokenizer import ByteTokenizer

def peak():
    return int(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text()).group(1))

imported = peak()
corpus = load_corpus(sys.argv[1], ByteTokenizer())
print(imported, peak(), corpus.n_bytes, len(corpus.tokens), corpus.sha256)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux's /proc")
def test_a_large_corpus_is_tokenized_with_bounded_memory(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    block = "".join(f"line {i} of a corpus too large to hold in memory twice, ✓\n" for i in range(16_000)).encode()
    sha = hashlib.sha256()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        with open(root / name, "wb") as f:
            for _ in range((50 << 20) // len(block)):
                f.write(block)
                sha.update(block)
        if name != "d.txt":
            sha.update(b"\n")
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(root)],
        env={**os.environ, "SYNAPTORCH_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        check=True,
    )
    imported, peak, n_bytes, n_tokens, digest = result.stdout.split()
    print(f"{time.monotonic() - start:.1f} s, peak RSS {int(imported) // 1024} MiB imported, {int(peak) // 1024} MiB")
    assert "tokenizing: 100%" in result.stderr  # 200 MiB is above the progress bar's threshold
    assert n_bytes == n_tokens
    assert int(n_bytes) > 190 << 20
    assert digest == sha.hexdigest()
    # Measured on torch 2.13 CPU, Python 3.11: 218 MiB once synaptorch.io has imported torch, 234 MiB
    # at the peak of tokenizing these 200 MiB (the corpus read into memory at once, as before, peaked
    # at 814 MiB). What is bounded is the growth, not the size of the torch import.
    assert (int(peak) - int(imported)) / 1024 < 100
