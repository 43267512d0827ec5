import json
from pathlib import Path

import pytest

from synaptorch.data.babi import task_file_name
from synaptorch.data.babi_generator import generate_babi
from synaptorch.memory.training import generated_folder

TRAIN_KEYS = {"test_accuracy", "val_accuracy", "epochs", "seconds_per_epoch", "unknown_test_words", "checkpoint"}


def write_task(folder: Path, task: int, n_train: int, n_test: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    train, test = folder / task_file_name(task, "train"), folder / task_file_name(task, "test")
    train.write_text(generate_babi(task, n_train))
    test.write_text(generate_babi(task, n_test, split="test"))
    return train, test


def only_json(result) -> dict:
    """The one line of stdout, a JSON object."""
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    return json.loads(line)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    return write_task(tmp_path_factory.mktemp("babi"), 1, 100, 50)


def test_train_then_eval_gives_the_same_test_accuracy(cli, files, tmp_path):
    train, test = files
    trained = only_json(
        cli(
            "babi",
            "train",
            "--model",
            "memn2n",
            "--train",
            train,
            "--test",
            test,
            "--epochs",
            2,
            "--quiet",
            "--out",
            tmp_path / "run",
        )
    )
    assert TRAIN_KEYS | {"per_task"} <= set(trained)
    assert trained["epochs"] == 2 and trained["per_task"] == {} and trained["unknown_test_words"] == 0
    assert Path(trained["checkpoint"]) == tmp_path / "run" / "checkpoint"
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    result = cli("babi", "eval", "--checkpoint", tmp_path / "run", "--test", test)
    scored = only_json(result)
    assert scored["test_accuracy"] == trained["test_accuracy"] and scored["test_questions"] == 50
    assert scored["val_accuracy"] == trained["val_accuracy"] and scored["model"] == "memn2n"
    assert result.stderr == ""


def test_train_a_generated_task_with_progress_on_stderr(cli, cache_dir, tmp_path):
    result = cli("babi", "train", "--model", "lstm", "--task", 1, "--epochs", 1, "--out", tmp_path / "run")
    record = only_json(result)
    assert record["model"] == "lstm" and 0 <= record["test_accuracy"] <= 1 and record["test_questions"] == 1000
    assert (
        result.stderr.startswith("training lstm (")
        and "900 train / 100 val / 1,000 test questions (task 1)" in result.stderr
    )
    assert "batch/s" in result.stderr  # the progress bar
    assert (generated_folder("1k") / task_file_name(1, "test")).is_file()
    assert generated_folder("1k").parent.parent == cache_dir / "babi"


def test_several_tasks_report_their_accuracy_each(cli, tmp_path):
    write_task(tmp_path / "data", 1, 60, 30)
    write_task(tmp_path / "data", 11, 60, 30)
    data = tmp_path / "data"
    record = only_json(
        cli(
            "babi",
            "train",
            "--model",
            "lstm",
            "--train",
            data,
            "--test",
            data,
            "--epochs",
            1,
            "--quiet",
            "--out",
            tmp_path / "run",
        )
    )
    assert set(record["per_task"]) == {"1", "11"}
    scored = only_json(
        cli("babi", "eval", "--checkpoint", tmp_path / "run", "--test", data / task_file_name(11, "test"))
    )
    assert scored["per_task"] == {} and scored["test_accuracy"] == record["per_task"]["11"]
    both = only_json(
        cli(
            "babi",
            "eval",
            "--checkpoint",
            tmp_path / "run",
            "--test",
            data / task_file_name(1, "test"),
            "--test",
            data / task_file_name(11, "test"),
        )
    )
    assert both["per_task"] == record["per_task"] and both["test_questions"] == 60


def test_eval_counts_words_it_never_saw(cli, files, tmp_path):
    only_json(
        cli(
            "babi",
            "train",
            "--model",
            "lstm",
            "--train",
            files[0],
            "--test",
            files[1],
            "--epochs",
            1,
            "--quiet",
            "--out",
            tmp_path / "run",
        )
    )
    strange = tmp_path / "strange.txt"
    strange.write_text("1 Zelda went to the attic.\n2 Where is Zelda?\tattic\t1\n")
    record = only_json(cli("babi", "eval", "--checkpoint", tmp_path / "run" / "checkpoint", "--test", strange))
    assert record["unknown_test_words"] == 4 and record["test_accuracy"] == 0.0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--model", "gpt", "--task", "1"), "unknown model 'gpt'"),
        (("--model", "hmem"), "give --task N, or --train FILE and --test FILE"),
        (("--model", "hmem", "--train", "TRAIN"), "give --task N, or --train FILE and --test FILE"),
        (("--model", "hmem", "--task", "1", "--train", "TRAIN", "--test", "TEST"), "not both"),
        (("--model", "hmem", "--task", "4"), "task 4 is not one the generator makes"),
        (("--model", "hmem", "--task", "21"), "unknown bAbI task 21"),
        (("--model", "hmem", "--task", "1", "--size", "5k"), "unknown bAbI size '5k'"),
        (("--model", "hmem", "--task", "1", "--data", "MISSING"), "not found"),
        (("--model", "hmem", "--train", "TRAIN", "--test", "TEST", "--data", "MISSING"), "go with --task"),
        (("--model", "hmem", "--train", "MISSING", "--test", "TEST"), "not found"),
        (("--model", "hmem", "--train", "TRAIN", "--test", "TEST", "--epochs", "0"), "epochs must be a positive"),
        (("--model", "bdh", "--train", "TRAIN", "--test", "TEST", "--epochs", "-2"), "epochs must be a positive"),
        (("--model", "hmem", "--task", "x"), "not a valid integer"),
    ],
)
def test_bad_train_input_is_one_line_and_exit_2(cli, assert_user_error, files, tmp_path, args, fragment):
    names = {"TRAIN": str(files[0]), "TEST": str(files[1]), "MISSING": str(tmp_path / "missing")}
    result = cli("babi", "train", *(names.get(a, a) for a in args), "--quiet", "--out", tmp_path / "run")
    assert_user_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_a_run_folder_with_a_checkpoint_is_refused_and_kept(cli, assert_user_error, files, snapshot, tmp_path):
    args = ("babi", "train", "--model", "lstm", "--train", files[0], "--test", files[1], "--epochs", 1, "--quiet")
    only_json(cli(*args, "--out", tmp_path / "run"))
    before = snapshot(tmp_path / "run")
    assert_user_error(cli(*args, "--out", tmp_path / "run"), "already holds a checkpoint")
    assert snapshot(tmp_path / "run") == before
    (tmp_path / "file").write_text("not a folder")
    assert_user_error(cli(*args, "--out", tmp_path / "file"), "is not a folder")
    assert (tmp_path / "file").read_text() == "not a folder"


def test_bad_eval_input_is_one_line_and_exit_2(cli, assert_user_error, files, tmp_path):
    assert_user_error(cli("babi", "eval", "--checkpoint", tmp_path / "none", "--test", files[1]), "not found")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}")
    assert_user_error(
        cli("babi", "eval", "--checkpoint", tmp_path / "other", "--test", files[1]), "not a bAbI checkpoint"
    )
    result = cli("babi", "eval", "--checkpoint", tmp_path / "other")
    assert_user_error(result, "missing option '--test'")


@pytest.mark.slow
def test_hmem_learns_generated_task_1_through_the_command_line(cli, tmp_path):
    record = only_json(
        cli("babi", "train", "--model", "hmem", "--task", 1, "--size", "1k", "--quiet", "--out", tmp_path / "run")
    )
    assert record["epochs"] == 100
    assert record["test_accuracy"] >= 0.95, record
