import pytest

from synaptorch.analysis.text import concept_mask, concept_pattern, encode_text, sentence_spans, split_held_out
from synaptorch.data.tokenizer import ByteTokenizer, HFTokenizer
from synaptorch.errors import ConfigError, DataError


def test_byte_tokens_point_back_to_their_characters():
    encoded = encode_text(ByteTokenizer(), "né x")
    assert encoded.ids.tolist() == list("né x".encode())
    assert encoded.starts.tolist() == [0, 1, 1, 2, 3]  # both bytes of 'é' belong to character 1
    assert encoded.snippet(2, width=1) == "n[é] "
    assert encoded.snippet(4, width=2) == "é [x]"


def test_concept_words_mark_whole_words_in_any_case():
    encoded = encode_text(ByteTokenizer(), "Class classes class\ndef")
    mask = concept_mask(encoded, concept_pattern(["class", "def"]))
    marked = "".join(ch if m else "." for ch, m in zip(encoded.text, mask, strict=True))
    assert marked == "Class.........class.def"


def test_concept_regex_marks_every_token_it_overlaps():
    encoded = encode_text(ByteTokenizer(), "a é b")
    mask = concept_mask(encoded, concept_pattern(regex="é"))
    assert mask.tolist() == [False, False, True, True, False, False]


def test_concept_needs_exactly_one_form():
    with pytest.raises(ConfigError):
        concept_pattern(["a"], "b")
    with pytest.raises(ConfigError):
        concept_pattern()
    with pytest.raises(ConfigError, match="regex"):
        concept_pattern(regex="(")
    with pytest.raises(ConfigError):
        concept_pattern([" ", ""])


def test_sentences_split_at_stops_and_line_ends():
    text = "One two. Three four!\n\nFive six seven\nstill five. x"
    encoded = encode_text(ByteTokenizer(), text)
    spans = sentence_spans(encoded, max_tokens=100)
    assert [text[a:b] for a, b in spans] == ["One two.", "Three four!", "Five six seven", "still five."]
    assert [b - a for a, b in sentence_spans(encoded, max_tokens=5)] == [5, 5, 5, 5]


def test_bpe_tokens_with_leading_space_belong_to_the_sentence_they_begin(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = "the key. fires grows. cells and neuron"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator([text] * 20, trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet))
    bpe.save(str(tmp_path / "bpe.json"))
    encoded = encode_text(HFTokenizer(tmp_path / "bpe.json"), text)
    assert encoded.starts[3] == 8 and text[encoded.starts[3] : encoded.ends[3]] == " fires"
    sentences = [text[encoded.starts[a] : encoded.ends[b - 1]] for a, b in sentence_spans(encoded, 100)]
    assert sentences == ["the key.", " fires grows.", " cells and neuron"]


def test_empty_text_is_a_user_error():
    with pytest.raises(DataError):
        encode_text(ByteTokenizer(), " \n")


def test_held_out_blocks_are_spread_over_the_text():
    text = "".join(f"line {i:03d}\n" for i in range(100))
    kept, held = split_held_out(text, holdout=0.3, blocks=10)
    assert len(held) == 30 * 9 and len(kept) == 70 * 9
    held_lines = [int(line.split()[1]) for line in held.splitlines()]
    assert held_lines == [*range(30, 40), *range(60, 70), *range(90, 100)]  # every third or fourth block
    assert sorted(kept.splitlines() + held.splitlines()) == text.splitlines()
