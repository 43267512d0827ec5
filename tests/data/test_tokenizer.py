import pytest
from hypothesis import given
from hypothesis import strategies as st

from synaptorch.data.tokenizer import ByteTokenizer, HFTokenizer, StreamDecoder, load_tokenizer
from synaptorch.errors import DataError


@given(st.text())
def test_bytes_round_trip(text):
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text


@given(st.text())
def test_stream_decoder_never_splits_a_character(text):
    decoder = StreamDecoder(ByteTokenizer())
    pieces = [decoder.push(b) for b in text.encode("utf-8")]
    assert "".join(pieces) + decoder.flush() == text
    # Half a character would show as a replacement character; only the text's own may appear.
    assert sum(piece.count("\ufffd") for piece in pieces) == text.count("\ufffd")


def test_stream_decoder_waits_for_the_rest_of_a_character():
    decoder = StreamDecoder(ByteTokenizer())
    first, second = "✓".encode()[:1], "✓".encode()[1:]
    assert decoder.push(first[0]) == ""
    assert "".join(decoder.push(b) for b in second) == "✓"


def test_stream_decoder_with_a_tokenizer_json(tmp_path, make_word_tokenizer):
    tokenizer = HFTokenizer(make_word_tokenizer(tmp_path / "tok.json"))
    ids = tokenizer.encode("the neuron fires the neuron")
    decoder = StreamDecoder(tokenizer)
    streamed = "".join(decoder.push(i) for i in ids) + decoder.flush()
    assert streamed == tokenizer.decode(ids)


TRAINING_TEXT = "the neuron fires; the synapse grows. naïve café, 日本語の文章, ✓ ✗ → ∑ 🧠 émigré Ünïcödé\n" * 20


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory) -> HFTokenizer:
    """A byte-level BPE trained on a short text with multi-byte characters, whose merges split some
    characters across tokens, and one special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([TRAINING_TEXT], trainer)
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    tokenizer.save(str(path))
    return HFTokenizer(path)


def streamed(tokenizer, ids: list[int]) -> tuple[list[str], str]:
    decoder = StreamDecoder(tokenizer)
    return [decoder.push(i) for i in ids], decoder.flush()


@given(text=st.text(max_size=40))
def test_bpe_stream_is_the_decoded_text(bpe_tokenizer, text):
    ids = bpe_tokenizer.encode(text)
    decoded = bpe_tokenizer.decode(ids)
    pieces, rest = streamed(bpe_tokenizer, ids)
    assert "".join(pieces) + rest == decoded
    # Half a character would show as a replacement character; only the text's own may appear.
    assert sum(piece.count("\ufffd") for piece in pieces) <= decoded.count("\ufffd")


def test_a_token_is_decoded_without_the_ids_before_it(bpe_tokenizer, monkeypatch):
    decoded_lengths = []
    decode = bpe_tokenizer.decode
    monkeypatch.setattr(bpe_tokenizer, "decode", lambda ids: decoded_lengths.append(len(ids)) or decode(ids))
    ids = bpe_tokenizer.encode(TRAINING_TEXT[:200])
    pieces, rest = streamed(bpe_tokenizer, ids)
    assert decoded_lengths == [len(ids)]  # once, by flush
    assert "".join(pieces) + rest == TRAINING_TEXT[:200]


@given(data=st.data())
def test_bpe_stream_of_any_ids_is_their_decoded_text(bpe_tokenizer, data):
    # Arbitrary ids make invalid UTF-8 and special tokens; the stream still adds up to decode().
    ids = data.draw(st.lists(st.integers(0, bpe_tokenizer.vocab_size - 1), max_size=40))
    pieces, rest = streamed(bpe_tokenizer, ids)
    assert "".join(pieces) + rest == bpe_tokenizer.decode(ids)


def test_bpe_stream_waits_for_the_rest_of_a_character_and_skips_special_tokens(bpe_tokenizer):
    byte_ids = [bpe_tokenizer._tok.token_to_id(pre) for pre in ("â", "ľ", "ĵ")]  # "✓" as its three bytes
    end = bpe_tokenizer._tok.token_to_id("<|end|>")
    pieces, rest = streamed(bpe_tokenizer, [*byte_ids, end, *bpe_tokenizer.encode(" ok")])
    assert pieces[:2] == ["", ""] and pieces[2] == "✓"
    assert "".join(pieces) + rest == "✓ ok"


def test_a_texts_own_replacement_character_is_streamed_by_the_end(bpe_tokenizer):
    ids = bpe_tokenizer.encode("ok \ufffd")
    pieces, rest = streamed(bpe_tokenizer, ids)
    assert "".join(pieces) + rest == "ok \ufffd"


def test_load_tokenizer(tmp_path, make_word_tokenizer):
    assert isinstance(load_tokenizer(None), ByteTokenizer)
    assert isinstance(load_tokenizer("bytes"), ByteTokenizer)
    path = make_word_tokenizer(tmp_path / "tok.json")
    tokenizer = load_tokenizer(path)
    assert tokenizer.vocab_size == 4
    assert tokenizer.encode("the neuron sleeps") == [1, 2, 0]


def test_tokenizer_identity_follows_the_file(tmp_path, make_word_tokenizer):
    a = HFTokenizer(make_word_tokenizer(tmp_path / "a.json"))
    b = HFTokenizer(make_word_tokenizer(tmp_path / "b.json", words=("the", "fires", "neuron")))
    assert a.identity() == HFTokenizer(tmp_path / "a.json").identity()
    assert a.identity() != b.identity()
    assert a.identity() != ByteTokenizer().identity()


@pytest.mark.parametrize("content", [None, "not json", '{"model": 3}'])
def test_unusable_tokenizer_file_is_a_data_error(tmp_path, content):
    path = tmp_path / "tok.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError):
        load_tokenizer(path)
