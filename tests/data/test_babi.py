from pathlib import Path

import pytest
import torch

from synaptorch.data.babi import (
    BabiLayout,
    Vocabulary,
    babi_files,
    encode_samples,
    load_babi,
    parse_babi,
    read_babi_file,
    split_validation,
    task_file_name,
    tokenize,
)
from synaptorch.errors import ConfigError, DataError

# A space before the first tab, as some published files have; a question between statements.
TWO_STORIES = (
    "1 Mary moved to the bathroom.\n"
    "2 John went to the hallway.\n"
    "3 Where is Mary? \tbathroom\t1\n"
    "4 Daniel went back to the hallway.\n"
    "5 Where is Daniel?\thallway\t4\n"
    "1 Sandra journeyed to the garden.\n"
    "2 Where is Sandra? \tgarden\t1\n"
)
LISTS = (
    "1 Mary picked up the apple there.\n"
    "2 Mary grabbed the football there.\n"
    "3 What is Mary carrying?\tapple,football\t1 2\n"
    "4 Mary dropped the apple.\n"
    "5 Mary discarded the football.\n"
    "6 What is Mary carrying?\tnothing\t4 5\n"
    "1 The kitchen is north of the hallway.\n"
    "2 The garden is west of the kitchen.\n"
    "3 How do you go from the hallway to the garden?\tn,w\t1 2\n"
)
DEDUCTION = "1 Mice are afraid of cats.\n2 Emily is a mouse.\n3 What is emily afraid of?\tcat\t2 1\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_questions_stay_in_their_story_keep_their_ids_and_are_not_statements():
    first, second, third = parse_babi(TWO_STORIES)
    assert first.story == (("mary", "moved", "to", "the", "bathroom"), ("john", "went", "to", "the", "hallway"))
    assert first.story_ids == (1, 2)
    assert (first.question, first.answer, first.supporting_ids) == (("where", "is", "mary"), "bathroom", (1,))
    # The later question sees every statement before it, and not the question on line 3.
    assert second.story_ids == (1, 2, 4)
    assert second.story[-1] == ("daniel", "went", "back", "to", "the", "hallway")
    assert (second.question_id, second.answer, second.supporting_ids) == (5, "hallway", (4,))
    # An ID of 1 starts a new story that sees nothing of the one before.
    assert third.story == (("sandra", "journeyed", "to", "the", "garden"),)
    assert (third.question_id, third.answer) == (2, "garden")
    assert first.task is None
    assert first.source == "<text>:3"


def test_list_answers_and_nothing_are_one_token():
    samples = parse_babi(LISTS)
    assert [s.answer for s in samples] == ["apple,football", "nothing", "n,w"]
    assert [s.supporting_ids for s in samples] == [(1, 2), (4, 5), (1, 2)]
    vocabulary = Vocabulary.from_samples(samples)
    assert "apple,football" in vocabulary and "n,w" in vocabulary
    encoded = encode_samples(samples, vocabulary)
    assert vocabulary.words[encoded.answers[0]] == "apple,football"
    assert encoded.n_unknown == 0


def test_tokens_are_lower_case_words_without_the_final_mark():
    assert tokenize("Where is the football? ") == ("where", "is", "the", "football")
    assert tokenize("Mary went to the Kitchen.") == ("mary", "went", "to", "the", "kitchen")
    assert tokenize("It is 5 o'clock.") == ("it", "is", "5", "o", "'", "clock")


def test_the_task_comes_from_a_published_file_name(tmp_path):
    path = write(tmp_path / task_file_name(15, "train"), DEDUCTION)
    assert path.name == "qa15_basic-deduction_train.txt"
    [sample] = read_babi_file(path)
    assert sample.task == 15
    assert sample.source == f"{path}:3"
    other = write(tmp_path / "stories.txt", DEDUCTION)
    assert read_babi_file(other)[0].task is None
    assert read_babi_file(other, task=15)[0].task == 15
    assert load_babi(other)[0].answer == "cat"  # a single file, whatever its name


def test_the_published_tree_gives_the_size_asked_for(tmp_path):
    tree = tmp_path / "tasks_1-20_v1-2"
    write(tree / "en" / task_file_name(1, "train"), TWO_STORIES)
    write(tree / "en" / task_file_name(1, "test"), DEDUCTION)
    write(tree / "en-10k" / task_file_name(1, "train"), TWO_STORIES + TWO_STORIES)
    small, big = load_babi(tmp_path), load_babi(tree, size="10k")
    assert (len(small), len(big)) == (3, 6)
    assert {s.task for s in small + big} == {1}
    assert [s.answer for s in load_babi(tree, split="test")] == ["cat"]
    assert babi_files(tree / "en") == [tree / "en" / "qa1_single-supporting-fact_train.txt"]


def test_a_folder_of_several_tasks_loads_in_task_order_and_filters(tmp_path):
    write(tmp_path / task_file_name(15, "train"), DEDUCTION)
    write(tmp_path / task_file_name(1, "train"), TWO_STORIES)
    write(tmp_path / task_file_name(8, "train"), LISTS)
    write(tmp_path / task_file_name(8, "test"), TWO_STORIES)
    write(tmp_path / "notes.txt", "not a bAbI file")
    samples = load_babi(tmp_path)
    assert [s.task for s in samples] == [1, 1, 1, 8, 8, 8, 15]
    assert [s.task for s in load_babi(tmp_path, tasks=[15, 8])] == [8, 8, 8, 15]
    assert len(load_babi(tmp_path, split="test")) == 3
    with pytest.raises(DataError, match="task 2"):
        load_babi(tmp_path, tasks=[1, 2])
    # A list of sources is read in its order; a file of several tasks' stories reads too.
    mixed = write(tmp_path / "mixed" / "all.txt", TWO_STORIES + LISTS + DEDUCTION)
    assert [s.answer for s in load_babi([tmp_path / task_file_name(15, "train"), mixed])][:2] == ["cat", "bathroom"]
    assert len(load_babi(mixed)) == 7


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("Mary went to the kitchen.\n", 1, "expected 'ID text'"),
        ("1 Mary went to the kitchen.\n\n3 John went to the hallway.\n", 3, "follows 1"),
        ("2 Mary went to the kitchen.\n", 1, "starts at ID 2"),
        ("1 Mary went to the kitchen.\n2 Where is Mary?\t\t1\n", 2, "an answer"),
        ("1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\t5\n", 2, "supporting ID 5"),
        ("1 Where is Mary?\tkitchen\t1\n", 1, "supporting ID 1"),
        ("1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\tone\n", 2, "'one' is not a number"),
        ("1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\t1\tx\n", 2, "3 tab-separated fields"),
        ("1 \n", 1, "expected 'ID text'"),
    ],
)
def test_a_malformed_file_is_a_one_line_data_error_naming_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path / "qa1_single-supporting-fact_train.txt", text)
    with pytest.raises(DataError) as caught:
        read_babi_file(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: ")
    assert fragment in message


def test_unreadable_sources_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_babi_file(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="no questions"):
        read_babi_file(write(tmp_path / "statements.txt", "1 Mary went to the kitchen.\n"))
    (tmp_path / "latin1.txt").write_bytes("1 Jos\xe9 went to the kitchen.\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_babi_file(tmp_path / "latin1.txt")
    with pytest.raises(DataError, match="no bAbI train files"):
        load_babi(tmp_path)
    with pytest.raises(ConfigError, match="size"):
        load_babi(tmp_path, size="100k")
    with pytest.raises(ConfigError, match="split"):
        load_babi(tmp_path, split="valid")


def test_words_missing_from_the_vocabulary_are_the_unknown_index_and_counted():
    train = parse_babi(TWO_STORIES)
    vocabulary = Vocabulary.from_samples(train)
    assert vocabulary.words[:2] == [Vocabulary.PAD, Vocabulary.UNKNOWN]
    assert vocabulary.index("mary") > 1
    test = parse_babi("1 Mary went to the cellar.\n2 Where is Bob?\tcellar\t1\n")
    encoded = encode_samples(test, vocabulary)
    assert encoded.unknown_words == {"cellar": 2, "bob": 1}  # the answer counts too
    assert encoded.n_unknown == 3
    assert encoded.answers.tolist() == [1]
    assert encoded.questions[0, 2].item() == 1
    assert encoded.stories[0, 0, 4].item() == 1


def test_stories_get_time_words_newest_smallest_in_the_last_slot():
    samples = parse_babi(TWO_STORIES)
    vocabulary = Vocabulary.from_samples(samples)
    encoded = encode_samples(samples, vocabulary)
    # Word slots: the longest sentence (6 words) + its time word; memory rows: the longest story.
    assert encoded.layout == BabiLayout(n_sentences=3, n_words=7, time_words=True)
    assert encoded.stories.shape == (3, 3, 7)
    assert encoded.questions.shape == (3, 7)
    assert encoded.stories.dtype == torch.long
    v = len(vocabulary)
    assert encoded.stories[1, :, -1].tolist() == [v + 2, v + 1, v]  # three sentences, the newest is v
    assert encoded.stories[0, :, -1].tolist() == [v + 1, v, 0]  # two sentences and a padding row
    assert encoded.stories[0, 2].tolist() == [0] * 7
    assert encoded.stories[0, 0, :5].tolist() == vocabulary.encode(["mary", "moved", "to", "the", "bathroom"])
    assert encoded.stories[0, 0, 5].item() == 0
    assert encoded.n_embeddings == v + 3
    assert int(encoded.stories.max()) < encoded.n_embeddings
    assert encoded.answers.tolist() == vocabulary.encode(["bathroom", "hallway", "garden"])
    assert encoded.tasks.tolist() == [0, 0, 0]


def test_only_the_most_recent_sentences_are_kept():
    samples = parse_babi(TWO_STORIES)
    vocabulary = Vocabulary.from_samples(samples)
    layout = BabiLayout.fit(samples, max_sentences=2)
    assert layout.n_sentences == 2
    encoded = encode_samples(samples, vocabulary, layout)
    assert encoded.stories[1, 0, :5].tolist() == vocabulary.encode(["john", "went", "to", "the", "hallway"])
    assert encoded.stories[1, :, -1].tolist() == [len(vocabulary) + 1, len(vocabulary)]
    plain = encode_samples(samples, vocabulary, BabiLayout.fit(samples, time_words=False))
    assert plain.layout.n_words == 6
    assert plain.n_embeddings == len(vocabulary)
    assert int(plain.stories.max()) < len(vocabulary)
    with pytest.raises(ConfigError):
        BabiLayout.fit(samples, max_sentences=0)


def test_a_layout_fitted_on_other_samples_refuses_what_does_not_fit():
    short = parse_babi("1 Mary went.\n2 Where is Mary?\tx\t1\n")
    long = parse_babi("1 Mary went back to the big kitchen.\n2 Where is Mary?\tkitchen\t1\n")
    vocabulary = Vocabulary.from_samples(short + long)
    with pytest.raises(DataError, match="does not fit"):
        encode_samples(long, vocabulary, BabiLayout.fit(short))
    both = BabiLayout.fit(short, long)
    assert encode_samples(short, vocabulary, both).stories.shape == encode_samples(long, vocabulary, both).stories.shape


def test_validation_is_the_last_tenth():
    samples = parse_babi(TWO_STORIES) * 10
    train, validation = split_validation(samples)
    assert (len(train), len(validation)) == (27, 3)
    assert train + validation == samples
    assert validation == samples[-3:]
    assert split_validation(samples, 0.0) == (samples, [])
    with pytest.raises(ConfigError):
        split_validation(samples, 1.0)


def test_file_names_are_the_published_ones():
    assert task_file_name(1, "test") == "qa1_single-supporting-fact_test.txt"
    assert task_file_name(19, "train") == "qa19_path-finding_train.txt"
    with pytest.raises(ConfigError):
        task_file_name(21, "train")
