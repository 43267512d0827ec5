import hashlib
import io
import itertools
import urllib.error
import urllib.request

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synaptorch.data import corpus as corpus_module
from synaptorch.data.corpus import Corpus, _tokens_dtype, iter_corpus, load_corpus, read_corpus
from synaptorch.data.tokenizer import ByteTokenizer, HFTokenizer
from synaptorch.errors import DataError


def cached_token_files(cache_dir):
    return sorted((cache_dir / "tokens").iterdir())


def test_byte_tokens_are_the_files_bytes(tmp_path):
    data = "héllo, wörld ✓\n".encode() * 20 + bytes(range(256))
    (tmp_path / "c.txt").write_bytes(data)
    corpus = load_corpus(tmp_path / "c.txt", ByteTokenizer())
    assert corpus.tokens.tobytes() == data
    assert corpus.n_bytes == len(data)
    assert corpus.tokens_per_byte == 1
    assert corpus.sha256 == hashlib.sha256(data).hexdigest()


@given(n=st.integers(2, 10_000), val_fraction=st.floats(0.0, 0.99))
def test_split_is_contiguous_and_follows_val_fraction(n, val_fraction):
    corpus = Corpus("c", np.arange(n), n, "sha", val_fraction)
    train, val = corpus.split("train"), corpus.split("val")
    assert np.array_equal(np.concatenate([train, val]), corpus.split("all"))
    assert len(val) == round(n * val_fraction)
    if len(val):
        assert val[-1] == n - 1  # validation is the end of the corpus


def test_split_is_the_same_on_every_load(corpus, cache_dir):
    a, b = load_corpus(corpus, ByteTokenizer(), 0.2), load_corpus(corpus, ByteTokenizer(), 0.2)
    assert np.array_equal(a.split("val"), b.split("val"))
    assert a.split("val").tobytes() == corpus.read_bytes()[-len(a.split("val")) :]


def test_folder_corpus_joins_sorted_files_and_skips_hidden_ones(tmp_path):
    files = {"b.txt": "B", "a.txt": "A", "sub/c.txt": "C", ".hidden.txt": "H", ".git/config": "G", "sub/.d": "D"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert read_corpus(tmp_path) == b"A\nB\nC"


def test_token_cache_is_reused(corpus, cache_dir, monkeypatch):
    first = load_corpus(corpus, ByteTokenizer())
    [cached] = cached_token_files(cache_dir)
    mtime = cached.stat().st_mtime_ns

    def no_tokenizing(*args):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(corpus_module, "_tokenize", no_tokenizing)
    second = load_corpus(corpus, ByteTokenizer())
    assert np.array_equal(first.tokens, second.tokens)
    assert cached_token_files(cache_dir) == [cached]
    assert cached.stat().st_mtime_ns == mtime


def test_token_cache_is_keyed_by_content_and_tokenizer(tmp_path, cache_dir, make_word_tokenizer):
    path = tmp_path / "c.txt"
    path.write_text("the neuron fires\n")
    before = load_corpus(path, ByteTokenizer()).tokens.tobytes()
    path.write_text("the neuron rests\n")
    after = load_corpus(path, ByteTokenizer()).tokens.tobytes()
    assert (before, after) == (b"the neuron fires\n", b"the neuron rests\n")
    words = load_corpus(path, HFTokenizer(make_word_tokenizer(tmp_path / "tok.json")))
    assert words.tokens.tolist() == [1, 2, 0]
    assert len(cached_token_files(cache_dir)) == 3


def test_tokenizer_json_corpus_gives_the_tokenizers_ids(tmp_path, make_text, make_word_tokenizer):
    text = make_text(300)
    (tmp_path / "c.txt").write_text(text)
    tokenizer = HFTokenizer(make_word_tokenizer(tmp_path / "tok.json", words=text.split()[:6]))
    corpus = load_corpus(tmp_path / "c.txt", tokenizer)
    assert corpus.tokens.dtype == np.uint8
    assert corpus.tokens.tolist() == tokenizer.encode(text)
    assert corpus.tokens_per_byte == len(corpus.tokens) / len(text.encode())


@pytest.mark.parametrize(
    ("vocab_size", "dtype"),
    [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)],
)
def test_token_dtype_is_the_smallest_that_fits(vocab_size, dtype):
    assert _tokens_dtype(vocab_size) == np.dtype(dtype)


@pytest.mark.parametrize("content", [b"", b"  \n\t \r\n"])
def test_empty_corpus_is_refused(tmp_path, content):
    (tmp_path / "c.txt").write_bytes(content)
    with pytest.raises(DataError, match="empty"):
        load_corpus(tmp_path / "c.txt", ByteTokenizer())


def test_missing_corpus_is_refused(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_corpus(tmp_path / "missing.txt", ByteTokenizer())


def test_pydoc_corpus_is_embedded(monkeypatch):
    from pydoc_data.topics import topics

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data = read_corpus("pydoc")
    assert all(topics[name].encode() in data for name in ("assert", "for", "while"))
    assert load_corpus("pydoc", ByteTokenizer()).tokens.tobytes() == data


# --- shakespeare: downloaded once, checked against its sha256 --------------------------------------


def offline(*args, **kwargs):
    raise urllib.error.URLError("no network")


def serving(data: bytes):
    return lambda *args, **kwargs: io.BytesIO(data)


def test_shakespeare_offline_points_to_a_local_copy(monkeypatch, cache_dir):
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="--data PATH"):
        read_corpus("shakespeare")
    assert not (cache_dir / "tinyshakespeare.txt").exists()


def test_shakespeare_download_is_checked_and_cached(monkeypatch, cache_dir):
    data = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    monkeypatch.setattr(corpus_module, "SHAKESPEARE_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(urllib.request, "urlopen", serving(data))
    assert read_corpus("shakespeare") == data
    assert (cache_dir / "tinyshakespeare.txt").read_bytes() == data
    monkeypatch.setattr(urllib.request, "urlopen", offline)  # the second read needs no network
    assert read_corpus("shakespeare") == data


def test_shakespeare_download_with_the_wrong_sha256_is_not_cached(monkeypatch, cache_dir):
    monkeypatch.setattr(urllib.request, "urlopen", serving(b"not shakespeare"))
    with pytest.raises(DataError, match="sha256"):
        read_corpus("shakespeare")
    assert not (cache_dir / "tinyshakespeare.txt").exists()


def test_cached_shakespeare_with_the_wrong_sha256_is_refused(monkeypatch, cache_dir):
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    (cache_dir / "tinyshakespeare.txt").write_bytes(b"tampered")
    with pytest.raises(DataError, match="wrong sha256"):
        read_corpus("shakespeare")


@pytest.mark.parametrize("damage", ["truncated", "emptied", "header only"])
def test_a_damaged_token_cache_is_rebuilt_not_read_as_a_shorter_corpus(corpus, cache_dir, damage):
    first = np.array(load_corpus(corpus, ByteTokenizer()).tokens)
    [cached] = cached_token_files(cache_dir)
    data = cached.read_bytes()
    cut = {"truncated": len(data) // 2, "emptied": 0, "header only": corpus_module.COUNT_BYTES}[damage]
    cached.write_bytes(data[:cut])
    again = load_corpus(corpus, ByteTokenizer())
    assert np.array_equal(np.array(again.tokens), first)
    assert cached.read_bytes() == data


def test_the_standard_library_corpus_is_its_source_without_tests():
    from synaptorch.data.corpus import stdlib_source_files

    files = stdlib_source_files()
    names = {p.name for p in files}
    assert {"os.py", "functools.py", "__init__.py"} <= names
    assert files == sorted(files)
    assert not any(part in ("test", "site-packages") for p in files for part in p.parts[-3:-1])
    head = b"".join(itertools.islice(iter_corpus("pystdlib"), 3))
    assert head.startswith(files[0].read_bytes()[:100])
