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
