import dataclasses
from collections import Counter
from itertools import pairwise

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.cli.babi import babi_command
from synaptorch.data.babi import BabiSample, load_babi, parse_babi, read_babi_file
from synaptorch.data.babi_generator import (
    COLOURS,
    GENERATED_TASKS,
    LOCATIONS,
    PLURALS,
    check_samples,
    generate_babi,
    write_babi,
)
from synaptorch.errors import ConfigError

QUESTIONS = 5000  # per task: 1,000 stories of tasks 1, 6 and 11, 5,000 of task 16
ANSWERS = {1: LOCATIONS, 2: LOCATIONS, 3: LOCATIONS, 6: ("yes", "no"), 11: LOCATIONS, 15: tuple(PLURALS), 16: COLOURS}


@pytest.fixture(scope="module")
def generated() -> dict[int, list[BabiSample]]:
    return {task: parse_babi(generate_babi(task, QUESTIONS, seed=3), f"qa{task}", task) for task in GENERATED_TASKS}


def stories(samples: list[BabiSample]) -> list[list[BabiSample]]:
    """The questions of each story: a story's questions see a growing prefix of the same statements."""
    grouped: list[list[BabiSample]] = []
    for sample in samples:
        last = grouped[-1][-1] if grouped else None
        continues = last is not None and sample.story[: len(last.story)] == last.story
        if continues and sample.question_id > last.question_id:
            grouped[-1].append(sample)
        else:
            grouped.append([sample])
    return grouped


@pytest.mark.parametrize("task", GENERATED_TASKS)
def test_every_generated_answer_and_support_is_what_the_story_tells(generated, task):
    samples = generated[task]
    assert len(samples) == QUESTIONS
    assert check_samples(samples) == []
    assert all(sample.answer in ANSWERS[task] for sample in samples)
    assert len(stories(samples)) >= 1000


@pytest.mark.parametrize(
    ("task", "question_ids", "statements"),
    [
        (1, [3, 6, 9, 12, 15], 10),
        (6, [3, 6, 9, 12, 15], 10),
        (11, [3, 6, 9, 12, 15], 10),
        (15, [9, 10, 11, 12], 8),
        (16, [10], 9),
    ],
)
def test_stories_have_the_published_shape(generated, task, question_ids, statements):
    for story in stories(generated[task]):
        assert [sample.question_id for sample in story] == question_ids
        assert len(story[-1].story) == statements


@pytest.mark.parametrize("task", [2, 3])
def test_carrying_stories_ask_five_questions_two_statements_apart(generated, task):
    grouped = stories(generated[task])
    assert all(len(story) == 5 for story in grouped[:-1])
    for story in grouped:
        ids = [0] + [sample.question_id for sample in story]
        assert min(b - a for a, b in pairwise(ids)) >= 3
    lengths = [story[-1].question_id for story in grouped]
    assert 15 < sum(lengths) / len(lengths) < 80
    if task == 3:
        assert max(lengths) > 50  # longer than a 50-sentence memory, as the published task 3 is


def test_yes_and_no_are_asked_about_equally(generated):
    counts = Counter(sample.answer for sample in generated[6])
    assert abs(counts["yes"] - counts["no"]) < 0.06 * QUESTIONS


def test_task_16_has_one_peer_of_the_asked_species(generated):
    for sample in generated[16][:500]:
        kinds = {words[0]: words[3] for words in sample.story if words[2] == "a"}
        asked = sample.question[-1]
        assert sum(kind == kinds[asked] for kind in kinds.values()) == 2


@pytest.mark.parametrize("task", GENERATED_TASKS)
def test_the_checker_catches_a_wrong_answer_or_wrong_support(generated, task):
    samples = generated[task][:400]
    # Samples with a statement outside their support, early, midway and late.
    free = [k for k, sample in enumerate(samples) if len(sample.story) > len(sample.supporting_ids)]
    for k in (free[0], free[len(free) // 2], free[-1]):
        original = samples[k]
        wrong = next(answer for answer in ANSWERS[task] if answer != original.answer)
        other = next(i for i in original.story_ids if i not in original.supporting_ids)
        corrupted = [
            dataclasses.replace(original, answer=wrong),
            dataclasses.replace(original, supporting_ids=(other, *original.supporting_ids[1:])),
            dataclasses.replace(original, supporting_ids=original.supporting_ids[:-1]),
        ]
        if len(original.supporting_ids) > 1:
            corrupted.append(dataclasses.replace(original, supporting_ids=original.supporting_ids[::-1]))
        for bad in corrupted:
            problems = check_samples([*samples[:k], bad, *samples[k + 1 :]])
            assert len(problems) == 1, (bad, problems)
            assert problems[0].startswith(f"{original.source}: ")


HAND_WRITTEN = """\
1 Daniel moved to the garden.
2 Daniel took the football.
3 Daniel went to the bathroom.
4 Daniel travelled to the garden.
5 Mary went back to the office.
6 Daniel moved to the hallway.
7 Daniel put down the football there.
8 Where was the football before the garden?\tbathroom\t7 4 3
9 Where was the football before the bathroom?\tgarden\t7 3 1
10 Where is the football?\thallway\t7 6
11 Mary picked up the milk there.
12 Mary journeyed to the kitchen.
13 Where is the milk?\tkitchen\t11 12
14 Sandra went to the bedroom.
15 Afterwards she went back to the kitchen.
16 Is Sandra in the kitchen?\tyes\t14 15
17 Where is Daniel?\thallway\t6
1 Sheep are afraid of wolves.
2 Gertrude is a sheep.
3 What is gertrude afraid of?\twolf\t2 1
1 Lily is a swan.
2 Greg is a swan.
3 Lily is white.
4 What color is Greg?\twhite\t2 1 3
"""


def test_the_checker_reads_stories_it_did_not_generate():
    assert check_samples(parse_babi(HAND_WRITTEN)) == []


@pytest.mark.parametrize(
    ("story", "fragment"),
    [
        ("1 Mary dropped the milk.\n2 Where is the milk?\tkitchen\t1\n", "without carrying it"),
        ("1 Mary went to the office.\n2 Where is John?\toffice\t1\n", "never told"),
        ("1 Then she went to the office.\n2 Where is Mary?\toffice\t1\n", "refers to no one"),
        ("1 John went to the office.\n2 Then she went home.\n3 Where is John?\toffice\t1\n", "cannot refer"),
        ("1 Mary sang in the office.\n2 Where is Mary?\toffice\t1\n", "unrecognised statement"),
        ("1 Mary went to the office.\n2 Who is Mary?\toffice\t1\n", "no rule"),
        ("1 Lily is a swan.\n2 Greg is a swan.\n3 What color is Greg?\twhite\t2 1\n", "0 colours"),
        ("1 Mary went to the office.\n2 Mary went to the hallway.\n3 Where is Mary?\toffice\t1\n", "is hallway"),
    ],
)
def test_the_checker_explains_what_is_wrong(story, fragment):
    [problem] = check_samples(parse_babi(story))
    assert fragment in problem
    assert "\n" not in problem


def test_a_seed_gives_the_same_files_and_streams_differ():
    text = generate_babi(2, 300, seed=11)
    assert generate_babi(2, 300, seed=11) == text
    assert generate_babi(2, 300, seed=12) != text
    assert generate_babi(2, 300, seed=11, split="test") != text
    assert generate_babi(2, 3000, seed=11).startswith(text)  # a smaller set is the start of a larger one


def test_a_seed_names_the_same_story_on_every_python():
    # Drawn with random() alone, which Python keeps the same from one version to the next.
    assert generate_babi(16, 1, seed=0) == (
        "1 Bernhard is a rhino.\n2 Brian is a frog.\n3 Julius is a rhino.\n4 Lily is a lion.\n5 Greg is a swan.\n"
        "6 Brian is yellow.\n7 Greg is green.\n8 Lily is yellow.\n9 Bernhard is gray.\n"
        "10 What color is Julius?\tgray\t3 1 9\n"
    )


@settings(max_examples=40, deadline=None)
@given(task=st.sampled_from(GENERATED_TASKS), seed=st.integers(0, 2**64), n_questions=st.integers(1, 40))
def test_any_seed_gives_stories_the_checker_accepts(task, seed, n_questions):
    samples = parse_babi(generate_babi(task, n_questions, seed))
    assert len(samples) == n_questions
    assert check_samples(samples) == []


def generate(*args: str):
    return CliRunner().invoke(babi_command, ["generate", *args])


def test_babi_generate_writes_the_published_file_names(tmp_path):
    result = generate("--task", "15", "--seed", "5", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["qa15_basic-deduction_test.txt", "qa15_basic-deduction_train.txt"]  # no temporary file left
    train, test = load_babi(tmp_path / "out"), load_babi(tmp_path / "out", split="test")
    assert (len(train), len(test)) == (1000, 1000)
    assert {sample.task for sample in train + test} == {15}
    assert check_samples(train + test) == []
    assert result.stdout.splitlines() == [
        f"wrote {tmp_path / 'out' / names[1]}: 1,000 questions",
        f"wrote {tmp_path / 'out' / names[0]}: 1,000 questions",
    ]
    again = generate("--task", "15", "--seed", "5", "--out", str(tmp_path / "again"))
    assert again.exit_code == 0
    assert (tmp_path / "again" / names[1]).read_text() == (tmp_path / "out" / names[1]).read_text()


def test_the_10k_size_has_ten_thousand_training_questions_and_the_same_test(tmp_path):
    write_babi(16, "10k", 0, tmp_path / "big")
    write_babi(16, "1k", 0, tmp_path / "small")
    big = read_babi_file(tmp_path / "big" / "qa16_basic-induction_train.txt")
    assert len(big) == 10_000
    assert len({sample.story for sample in big}) > 9000
    name = "qa16_basic-induction_test.txt"
    assert (tmp_path / "big" / name).read_text() == (tmp_path / "small" / name).read_text()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--task", "4"], "task 4 cannot be generated"),
        (["--task", "one"], "not a task number"),
        (["--task", "1", "--size", "5k"], "unknown bAbI size '5k'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, assert_user_error, args, fragment):
    result = generate(*args, "--out", str(tmp_path / "out"))
    assert_user_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_the_library_refuses_what_it_cannot_generate(tmp_path):
    with pytest.raises(ConfigError, match="cannot be generated"):
        generate_babi(20, 10)
    with pytest.raises(ConfigError, match="at least 1"):
        generate_babi(1, 0)
    with pytest.raises(ConfigError, match="split"):
        generate_babi(1, 10, split="valid")
    with pytest.raises(ConfigError, match="size"):
        write_babi(1, "100", 0, tmp_path)
