import json

import pytest
import torch

from synaptorch.errors import CheckpointError, ConfigError, DataError
from synaptorch.local.memory import PeakTensorMemory
from synaptorch.local.training import evaluate_checkpoint, load_checkpoint, load_splits, train_rule

MIB = 2**20


def test_peak_memory_counts_what_is_alive_at_once():
    with PeakTensorMemory() as memory:
        a = torch.zeros(256, 1024)  # 1 MiB
        b = a + 1  # 2 MiB alive
        del a
        c = b * 2  # still 2 MiB: a is gone
        c.add_(1)  # in place: nothing new
        del b, c
    assert memory.peak_bytes == 2 * MIB
    assert memory.current_bytes == 0


def test_peak_memory_counts_the_backward_pass():
    x = torch.randn(256, 1024, requires_grad=True)  # before the block: not counted
    with PeakTensorMemory() as memory:
        y = x * 3
        y.sum().backward()
        del y
    assert memory.current_bytes == MIB, "the gradient of x stays"
    assert memory.peak_bytes >= 2 * MIB, "x * 3 and the gradient of x"


@pytest.mark.parametrize("rule", ["ff", "df", "bp"])
def test_train_save_load_and_eval(idx_folder, tmp_path, rule):
    out = tmp_path / "run"
    overrides = {"layers": [64, 64], "epochs": 3, "batch_size": 50}
    model, result = train_rule(rule, idx_folder, out, overrides=overrides, progress=False)
    assert result["test_accuracy"] > 0.5  # chance is 1/3
    assert result["train_images"] == 600 and result["epochs"] == 3
    assert 0 < result["working_memory_mib"] < result["peak_memory_mib"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    loaded, meta = load_checkpoint(out)
    assert meta["rule"] == rule and meta["config"]["layers"] == [64, 64]
    x = load_splits(idx_folder).test_x
    assert torch.equal(loaded.predict(x), model.predict(x))
    assert evaluate_checkpoint(out, idx_folder)["test_accuracy"] == result["test_accuracy"]


def test_local_rules_keep_less_working_memory_than_backpropagation(idx_folder):
    splits = load_splits(idx_folder)
    memory = {}
    for rule in ("ff", "df", "bp"):
        # wide layers and a small batch: the weight gradients, not the activations, dominate
        overrides = {"layers": [512] * 4, "epochs": 1, "batch_size": 20}
        memory[rule] = train_rule(rule, splits, overrides=overrides, progress=False)[1]["working_memory_mib"]
    assert memory["ff"] < 0.6 * memory["bp"] and memory["df"] < 0.6 * memory["bp"], memory


def test_the_same_seed_gives_the_same_run(idx_folder):
    overrides = {"layers": [8], "epochs": 1, "batch_size": 100}
    first = train_rule("ff", idx_folder, overrides=overrides, progress=False)[0]
    second = train_rule("ff", idx_folder, overrides=overrides, progress=False)[0]
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_bad_requests_are_refused_before_any_work(idx_folder, tmp_path):
    with pytest.raises(ConfigError, match="unknown rule"):
        train_rule("hebb", idx_folder, tmp_path / "a")
    with pytest.raises(ConfigError, match="unknown ff config setting"):
        train_rule("ff", idx_folder, tmp_path / "b", overrides={"width": 3})
    with pytest.raises(DataError, match="neither a data set name"):
        train_rule("ff", tmp_path / "missing", tmp_path / "c")
    with pytest.raises(DataError, match="not an MNIST-style folder"):
        train_rule("ff", tmp_path, tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_a_checkpoint_is_not_overwritten(idx_folder, tmp_path):
    overrides = {"layers": [8], "epochs": 1}
    train_rule("bp", idx_folder, tmp_path / "run", overrides=overrides, progress=False)
    before = (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train_rule("bp", idx_folder, tmp_path / "run", overrides=overrides, progress=False)
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes() == before


def test_damaged_checkpoints_are_refused(idx_folder, tmp_path):
    train_rule("bp", idx_folder, tmp_path / "run", overrides={"layers": [8], "epochs": 1}, progress=False)
    config = tmp_path / "run" / "checkpoint" / "config.json"
    meta = json.loads(config.read_text())
    config.write_text(json.dumps({**meta, "config": {**meta["config"], "layers": [9]}}))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "run")
    config.write_text(json.dumps({**meta, "rule": "hebb"}))
    with pytest.raises(CheckpointError, match="unknown rule"):
        load_checkpoint(tmp_path / "run")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")


def test_cli_train_and_eval(cli, idx_folder, tmp_path, assert_user_error):
    out = tmp_path / "run"
    args = ["local", "train", "--rule", "df", "--data", str(idx_folder), "--layers", "16,16"]
    result = cli(*args, "--epochs", "1", "--set", "margin=0.2", "--quiet", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"test_accuracy", "train_seconds", "peak_memory_mib"} <= set(record)
    assert json.loads((out / "checkpoint" / "config.json").read_text())["config"]["margin"] == 0.2
    scored = cli("local", "eval", "--checkpoint", out, "--data", idx_folder)
    assert json.loads(scored.stdout)["test_accuracy"] == record["test_accuracy"]
    assert_user_error(cli(*args, "--layers", "16,x", "--out", tmp_path / "x"), "--layers")
    assert_user_error(cli(*args, "--set", "margin", "--out", tmp_path / "y"), "NAME=VALUE")
    assert_user_error(cli("local", "eval", "--checkpoint", tmp_path / "none"), "checkpoint not found")
