import json
from pathlib import Path

import pytest
import torch

from synaptorch.data.babi import encode_samples, read_babi_file, task_file_name
from synaptorch.data.babi_generator import generate_babi
from synaptorch.errors import CheckpointError, ConfigError, DataError
from synaptorch.memory import MODELS, BDHReader, BDHReaderConfig, HMemTrainConfig, MemN2NTrainConfig, training
from synaptorch.memory.training import (
    evaluate,
    generated_folder,
    load_checkpoint,
    reference_training,
    task_files,
    train_babi,
)

SMALL_HMEM = {"m": 40, "d": 40}  # a quarter of the paper's memory: fast enough for the default suite


def write_task(folder: Path, task: int, n_train: int, n_test: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    train = folder / task_file_name(task, "train")
    test = folder / task_file_name(task, "test")
    train.write_text(generate_babi(task, n_train))
    test.write_text(generate_babi(task, n_test, split="test"))
    return train, test


def records(run_folder: Path) -> list[dict]:
    return [json.loads(line) for line in (run_folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def task1(tmp_path_factory) -> tuple[Path, Path]:
    """500 training and 200 test questions of generated task 1."""
    return write_task(tmp_path_factory.mktemp("babi"), 1, 500, 200)


@pytest.fixture(scope="module")
def tiny1(tmp_path_factory) -> tuple[Path, Path]:
    """80 training and 40 test questions of generated task 1, for runs of one epoch."""
    return write_task(tmp_path_factory.mktemp("tiny"), 1, 80, 40)


@pytest.fixture(scope="module")
def hmem_run(task1, tmp_path_factory) -> training.BabiRun:
    """A small H-Mem trained for 25 epochs, about 2 s; shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs") / "hmem"
    return train_babi("hmem", *task1, out, epochs=25, progress=False, model_overrides=SMALL_HMEM)


def test_small_hmem_beats_chance_clearly(hmem_run):
    # Six locations: a guess is right one time in six.
    assert hmem_run.test.accuracy > 0.5
    assert hmem_run.val_accuracy > 0.5


def test_metrics_record_every_epoch_and_the_best_is_kept(hmem_run):
    epochs = records(hmem_run.checkpoint.parent)
    assert [r["epoch"] for r in epochs] == list(range(1, 26))
    assert {"lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"} <= set(epochs[0])
    best = max(epochs, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert hmem_run.best_epoch == best["epoch"] and hmem_run.val_accuracy == best["val_accuracy"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[0]["lr"] == HMemTrainConfig().lr


def test_checkpoint_holds_what_the_run_was(hmem_run, task1):
    meta = json.loads((hmem_run.checkpoint / "config.json").read_text())
    assert sorted(p.name for p in hmem_run.checkpoint.iterdir()) == ["config.json", "model.safetensors"]
    assert meta["model_kind"] == "hmem" and meta["model"]["m"] == 40 and meta["model"]["time_word"] is True
    assert meta["vocabulary"][:2] == ["<pad>", "<unk>"] and "bathroom" in meta["vocabulary"]
    assert meta["layout"]["time_words"] is True
    assert meta["training"]["epochs"] == 25 and meta["training"]["batch_size"] == 128
    assert meta["training"]["best_epoch"] == hmem_run.best_epoch
    assert meta["tasks"] == [1]
    assert meta["data"]["train"][0]["path"] == str(task1[0].resolve())
    assert meta["data"]["train"][0]["questions"] == 500 and meta["data"]["test"][0]["questions"] == 200


def test_evaluate_reproduces_the_run(hmem_run, task1):
    loaded = load_checkpoint(hmem_run.checkpoint.parent)  # the run folder stands for its checkpoint
    result = evaluate(loaded, task1[1])
    assert result.accuracy == hmem_run.test.accuracy and result.loss == hmem_run.test.loss
    assert result.questions == 200 and result.per_task == {1: result.accuracy}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_checkpoint_round_trip_gives_the_same_predictions(kind, tiny1, tmp_path):
    run = train_babi(kind, *tiny1, tmp_path / "run", epochs=1, progress=False)
    loaded = load_checkpoint(run.checkpoint)
    data = loaded.encode(read_babi_file(tiny1[1]))
    with torch.no_grad():
        expected = run.model(data.stories, data.questions)
        got = loaded.model(data.stories, data.questions)
    assert type(loaded.model) is type(run.model) and loaded.model.config == run.model.config
    assert torch.equal(got, expected)
    assert evaluate(loaded, tiny1[1]).accuracy == run.test.accuracy
    if kind == "bdh":  # its padding row takes no gradient: padding stays the zero vector
        assert run.model.bdh.embed.weight[0].abs().sum() == 0 and loaded.model.bdh.embed.padding_idx == 0


def test_a_seed_gives_the_same_run(tiny1, tmp_path):
    runs = [train_babi("memn2n", *tiny1, tmp_path / name, epochs=2, seed=3, progress=False) for name in "ab"]
    first, second = ([{k: v for k, v in r.items() if k != "seconds"} for r in records(tmp_path / n)] for n in "ab")
    assert first == second
    a, b = (run.model.state_dict() for run in runs)
    assert all(torch.equal(a[name], b[name]) for name in a)
    other = train_babi("memn2n", *tiny1, tmp_path / "c", epochs=2, seed=4, progress=False)
    assert not torch.equal(other.model.state_dict()["embeddings.0.weight"], a["embeddings.0.weight"])


def test_unknown_test_words_are_counted_not_fatal(hmem_run, tmp_path):
    strange = tmp_path / "strange.txt"
    strange.write_text("1 Zelda went to the attic.\n2 Mary went to the kitchen.\n3 Where is Zelda?\tattic\t1\n")
    result = evaluate(hmem_run.checkpoint, strange)
    assert result.unknown_words == {"zelda": 2, "attic": 2}
    assert result.summary()["unknown_test_words"] == 4
    assert result.accuracy == 0.0  # the answer is unknown to the vocabulary: never right


def test_several_tasks_are_scored_one_by_one(tmp_path):
    write_task(tmp_path / "data", 1, 200, 100)
    write_task(tmp_path / "data", 6, 200, 100)
    run = train_babi("lstm", tmp_path / "data", tmp_path / "data", tmp_path / "run", epochs=1, progress=False)
    assert set(run.test.per_task) == {1, 6} and run.test.questions == 200
    mean = sum(run.test.per_task.values()) / 2  # equal shares of questions
    assert run.test.accuracy == pytest.approx(mean)
    assert set(run.summary()["per_task"]) == {"1", "6"}
    assert json.loads((run.checkpoint / "config.json").read_text())["tasks"] == [1, 6]


def test_a_single_example_left_over_joins_the_batch_before(tmp_path):
    # 144 questions: 129 train (128 + 1) and 15 validate; batch normalisation cannot take a batch of one.
    train, test = write_task(tmp_path / "data", 1, 144, 20)
    run = train_babi("hmem", train, test, tmp_path / "run", epochs=1, progress=False, model_overrides=SMALL_HMEM)
    assert run.epochs == 1


def test_memn2n_linear_start_ends_when_the_validation_loss_stops_falling(tiny1, tmp_path, monkeypatch):
    losses = iter([3.0, 2.0, 2.5, 1.0, 0.5])
    real_score = training.score

    def scripted(model, data, device="cpu"):
        found = real_score(model, data, device)
        return training.BabiScore(found.accuracy, next(losses), found.questions, found.per_task, found.unknown_words)

    monkeypatch.setattr(training, "score", scripted)
    run = train_babi(
        "memn2n", tiny1[0], None, tmp_path / "run", epochs=5, progress=False, model_overrides={"linear_start": True}
    )
    epochs = records(tmp_path / "run")
    assert [r.get("linear_start", False) for r in epochs] == [True, True, True, False, False]
    assert [r.get("linear_start_ends", False) for r in epochs] == [False, False, True, False, False]
    assert {r["lr"] for r in epochs} == {MemN2NTrainConfig().linear_start_lr}
    assert run.model.linear is False and run.test is None
    assert json.loads((run.checkpoint / "config.json").read_text())["training"]["linear_start_ended"] == 3


def test_reference_training_of_each_model():
    assert reference_training("hmem", 16).epochs == 100 and reference_training("hmem").lr_decay == 0.85
    assert reference_training("hmem-rbw", 16).epochs == 250 and reference_training("hmem-rbw", 1).epochs == 100
    assert reference_training("hmem-rbw").schedule == "exponential"
    assert isinstance(reference_training("memn2n"), MemN2NTrainConfig)
    assert reference_training("lstm", epochs=7).epochs == 7
    for bad in (0, -3, 1.5):
        with pytest.raises(ConfigError, match="epochs"):
            reference_training("bdh", epochs=bad)
    with pytest.raises(ConfigError, match="unknown model"):
        reference_training("gpt")


def test_task_files_are_generated_once_into_the_cache(cache_dir):
    train, test = task_files(1, "1k")
    assert train[0].parent == generated_folder("1k")
    assert generated_folder("1k").parent.name.startswith("generated-")
    assert len(read_babi_file(train[0])) == 1000 and len(read_babi_file(test[0])) == 1000
    written = train[0].stat().st_mtime_ns
    assert task_files(1, "1k") == (train, test) and train[0].stat().st_mtime_ns == written
    assert task_files(1, "10k")[0][0].parent.name == "en-10k"
    with pytest.raises(ConfigError, match="not one the generator makes"):
        task_files(4)
    with pytest.raises(ConfigError, match="unknown bAbI task"):
        task_files(21)
    with pytest.raises(DataError, match="no bAbI train file of task 2"):
        task_files(2, data=train[0].parent)


def test_a_folder_with_a_checkpoint_is_refused_untouched(hmem_run, task1, snapshot):
    run_folder = hmem_run.checkpoint.parent
    before = snapshot(run_folder)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train_babi("hmem", *task1, run_folder, epochs=1, progress=False)
    assert snapshot(run_folder) == before


def test_damaged_checkpoints_are_checkpoint_errors(hmem_run, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"architecture": "bdh", "model": {}}')
    with pytest.raises(CheckpointError, match="not a bAbI checkpoint"):
        load_checkpoint(foreign)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_bytes((hmem_run.checkpoint / "config.json").read_bytes())
    (truncated / "model.safetensors").write_bytes((hmem_run.checkpoint / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)


# The BDH reader


def bdh_reader(vocab_size: int = 12) -> BDHReader:
    torch.manual_seed(0)
    model = BDHReader(BDHReaderConfig(vocab_size=vocab_size, n_layer=2, n_embd=16, n_head=2, n_neuron=32)).eval()
    with torch.no_grad():  # weights off their small initial values, the padding row kept at zero
        for param in model.parameters():
            param.mul_(20)
    return model


def test_bdh_reader_answers_each_sample_whatever_its_batch():
    model = bdh_reader()
    stories = torch.tensor([[[2, 3, 0], [4, 5, 6]], [[0, 0, 0], [7, 3, 0]]])
    questions = torch.tensor([[8, 9, 0], [10, 0, 0]])
    together = model(stories, questions)
    alone = torch.cat([model(stories[i : i + 1], questions[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone)
    assert together.shape == (2, 12) and not torch.allclose(together[0], together[1])


def test_bdh_reader_reads_the_story_then_the_question_through_the_synapse_state():
    model = bdh_reader()
    stories = torch.tensor([[[2, 3, 0], [4, 5, 6]]])
    questions = torch.tensor([[8, 9, 0]])
    assert model.story_tokens(stories).tolist() == [[2, 3, 12, 4, 5, 6, 12]]
    tokens, ends = model.question_tokens(questions)
    assert tokens.tolist() == [[8, 9, 13]] and ends.tolist() == [2]
    # One pass over the whole sequence gives the logits of the story's state followed by the question.
    sequence = torch.tensor([[2, 3, 12, 4, 5, 6, 12, 8, 9, 13]])
    with torch.no_grad():
        whole, _ = model.bdh.forward_recurrent(sequence)
    torch.testing.assert_close(model(stories, questions), whole[:, -1, :12])
    # A different story changes the answer only through that state.
    other = model(torch.tensor([[[4, 5, 0], [2, 3, 6]]]), questions)
    assert not torch.allclose(other, model(stories, questions))


def test_only_hmem_reads_time_words(hmem_run, tiny1, tmp_path):
    run = train_babi("lstm", *tiny1, tmp_path / "run", epochs=1, progress=False)
    loaded = load_checkpoint(run.checkpoint)
    assert loaded.layout.time_words is False and load_checkpoint(hmem_run.checkpoint).layout.time_words is True
    data = encode_samples(read_babi_file(tiny1[1]), loaded.vocabulary, loaded.layout)
    assert int(data.stories.max()) < len(loaded.vocabulary)
